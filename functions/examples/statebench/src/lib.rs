//! Times the host's `kv_get` from inside a function, for the benchmark's state phase.
//!
//! Input: `{"prefix": "r1/", "keys": 5000, "rounds": 2}`. It reads the keys `<prefix>0` …
//! `<prefix><keys-1>` of its own namespace `rounds` times, timing each call, and answers
//! `{"rounds": [{"p50_us", "p99_us", "found"}, …]}`: the first round of keys nobody read yet
//! misses the worker's cache, the later ones hit it.

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError};
use std::time::Instant;

#[derive(Deserialize)]
struct Plan {
    prefix: String,
    keys: usize,
    rounds: usize,
}

#[derive(Serialize)]
struct Round {
    p50_us: f64,
    p99_us: f64,
    found: usize,
}

#[derive(Serialize)]
struct Timings {
    rounds: Vec<Round>,
}

fn time_gets(ctx: &Context, plan: Plan) -> Result<Timings, FnError> {
    let kv = ctx.kv();
    let keys: Vec<String> = (0..plan.keys)
        .map(|i| format!("{}{i}", plan.prefix))
        .collect();
    let mut rounds = Vec::with_capacity(plan.rounds);
    for _ in 0..plan.rounds {
        let mut micros = Vec::with_capacity(keys.len());
        let mut found = 0;
        for key in &keys {
            let started = Instant::now();
            let value = kv.get(key)?;
            micros.push(started.elapsed().as_secs_f64() * 1e6);
            found += usize::from(value.is_some());
        }
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len().max(1));
            micros.get(rank - 1).copied().unwrap_or(0.0)
        };
        rounds.push(Round {
            p50_us: at(0.50),
            p99_us: at(0.99),
            found,
        });
    }
    Ok(Timings { rounds })
}

export_function!(time_gets);
