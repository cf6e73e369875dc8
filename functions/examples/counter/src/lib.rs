//! Counts calls per name in the function's own state and announces each count as an event.
//!
//! Input: `{"name": "alice"}` (optional, default `"anyone"`); output: `{"name", "count"}`.
//! The count lives under the key `count/<name>`; each new count is published on
//! `events.counter.<function>` as `{"name", "count"}`.

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Visit {
    name: Option<String>,
}

#[derive(Serialize)]
struct Count {
    name: String,
    count: u64,
}

fn count(ctx: &Context, visit: Option<Visit>) -> Result<Count, FnError> {
    let name = visit
        .and_then(|v| v.name)
        .unwrap_or_else(|| "anyone".to_string());
    let key = format!("count/{name}");
    let kv = ctx.kv();
    let count = kv.get_json::<u64>(&key)?.unwrap_or(0) + 1;
    kv.put_json(&key, &count)?;
    let event = serde_json::to_vec(&Count {
        name: name.clone(),
        count,
    })
    .map_err(|e| FnError::permanent(e.to_string()))?;
    ctx.publish(&format!("events.counter.{}", ctx.function()), &event)?;
    Ok(Count { name, count })
}

export_function!(count);
