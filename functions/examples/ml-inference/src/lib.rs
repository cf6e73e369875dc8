//! A classifier served warm: weights embedded in the library are parsed once, in `squall_init`.
//!
//! Input: `{"height_cm": 20.1, "leaf_length_cm": 3.2, "leaf_width_cm": 1.4, "stem_mm": 3.1}`.
//! Output: `{"label": "alpine", "probabilities": {"alpine": 0.97, …}, "worker": {…}}`, where
//! `worker` says how often init ran in this process (once), how long it took and how many
//! predictions the process has served.

pub mod model;

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError, Host};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The weights, produced by `src/bin/train.rs`.
const WEIGHTS: &str = include_str!("../model/weights.json");

static MODEL: OnceLock<model::Model> = OnceLock::new();
static INIT_CALLS: AtomicU64 = AtomicU64::new(0);
static INIT_MICROS: AtomicU64 = AtomicU64::new(0);
static SERVED: AtomicU64 = AtomicU64::new(0);

/// One plant's measurements.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Features {
    height_cm: f64,
    leaf_length_cm: f64,
    leaf_width_cm: f64,
    stem_mm: f64,
}

#[derive(Serialize)]
struct Prediction {
    label: String,
    probabilities: BTreeMap<String, f64>,
    worker: Warmth,
}

/// What this process's copy of the library has done.
#[derive(Serialize)]
struct Warmth {
    init_calls: u64,
    init_us: u64,
    served: u64,
    pid: u32,
}

fn init(host: &Host) -> Result<(), String> {
    let started = Instant::now();
    INIT_CALLS.fetch_add(1, Ordering::SeqCst);
    let model = model::Model::from_file(WEIGHTS)?;
    host.info(&format!(
        "model loaded: {} labels, {} features",
        model.labels.len(),
        model.features.len()
    ));
    let _ = MODEL.set(model);
    INIT_MICROS.store(started.elapsed().as_micros() as u64, Ordering::SeqCst);
    Ok(())
}

fn classify(_ctx: &Context, input: Features) -> Result<Prediction, FnError> {
    let model = MODEL
        .get()
        .ok_or_else(|| FnError::permanent("the model was not loaded (squall_init did not run)"))?;
    let row = [
        input.height_cm,
        input.leaf_length_cm,
        input.leaf_width_cm,
        input.stem_mm,
    ];
    if row.iter().any(|v| !v.is_finite()) {
        return Err(FnError::permanent("every feature must be a finite number"));
    }
    let p = model.predict(&row);
    let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Prediction {
        label: model.labels[best].clone(),
        probabilities: model.labels.iter().cloned().zip(p).collect(),
        worker: Warmth {
            init_calls: INIT_CALLS.load(Ordering::SeqCst),
            init_us: INIT_MICROS.load(Ordering::SeqCst),
            served,
            pid: std::process::id(),
        },
    })
}

export_function!(classify, init = init);
