//! iot-rollup: the fleet's view of the devices' windows, summarised every minute.
//!
//! Two inputs. A window published by iot-ingest on `events.iot.window` (through a subject
//! trigger) is kept, newest count wins, under `window/<device>/<minute>` of this function's own
//! state (each function sees only its own keys, so the windows travel as events). A schedule's
//! `{"summarize": true}` folds the kept windows into one summary per minute (devices reporting,
//! readings, min, max, mean), stores them under `summary/<minute>` and answers them.

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError};
use std::collections::BTreeMap;

/// How many device-minutes the rollup keeps.
const KEPT_WINDOWS: usize = 20_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Summarize { summarize: bool },
    Window(Window),
}

/// A device's minute, as iot-ingest publishes it.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Window {
    device: String,
    minute_ms: u64,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

/// The fleet over one minute.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub minute_ms: u64,
    pub devices: u64,
    pub readings: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// The keys of the windows kept, oldest minute first.
#[derive(Serialize, Deserialize, Default)]
struct Index {
    windows: Vec<(u64, String)>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Kept {
        device: String,
        minute_ms: u64,
        count: u64,
    },
    Summaries {
        minutes: Vec<Summary>,
    },
}

/// One summary per minute of `windows` (pure).
fn summarize(windows: &[Window]) -> Vec<Summary> {
    let mut by_minute: BTreeMap<u64, (u64, u64, f64, f64, f64)> = BTreeMap::new();
    for w in windows {
        let entry =
            by_minute
                .entry(w.minute_ms)
                .or_insert((0, 0, f64::INFINITY, f64::NEG_INFINITY, 0.0));
        entry.0 += 1;
        entry.1 += w.count;
        entry.2 = entry.2.min(w.min);
        entry.3 = entry.3.max(w.max);
        entry.4 += w.sum;
    }
    by_minute
        .into_iter()
        .map(|(minute_ms, (devices, readings, min, max, sum))| Summary {
            minute_ms,
            devices,
            readings,
            min,
            max,
            mean: if readings > 0 {
                sum / readings as f64
            } else {
                0.0
            },
        })
        .collect()
}

fn valid_device(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn rollup(ctx: &Context, input: Input) -> Result<Output, FnError> {
    let kv = ctx.kv();
    let mut index: Index = kv.get_json("index")?.unwrap_or_default();
    match input {
        Input::Window(window) => {
            if !valid_device(&window.device) {
                return Err(FnError::permanent(format!(
                    "invalid device {:?}",
                    window.device
                )));
            }
            let key = format!("window/{}/{}", window.device, window.minute_ms);
            let kept: Option<Window> = kv.get_json(&key)?;
            // Events may arrive twice or late: a window only ever grows.
            if kept.as_ref().is_none_or(|k| window.count > k.count) {
                kv.put_json(&key, &window)?;
            }
            let entry = (window.minute_ms, window.device.clone());
            if !index.windows.contains(&entry) {
                index.windows.push(entry);
                index.windows.sort();
                let excess = index.windows.len().saturating_sub(KEPT_WINDOWS);
                for (minute, device) in index.windows.drain(..excess) {
                    kv.delete(&format!("window/{device}/{minute}"))?;
                }
                kv.put_json("index", &index)?;
            }
            Ok(Output::Kept {
                device: window.device,
                minute_ms: window.minute_ms,
                count: window.count.max(kept.map_or(0, |k| k.count)),
            })
        }
        Input::Summarize { summarize: false } => Ok(Output::Summaries {
            minutes: Vec::new(),
        }),
        Input::Summarize { summarize: true } => {
            let mut windows = Vec::with_capacity(index.windows.len());
            for (minute, device) in &index.windows {
                if let Some(window) = kv.get_json(&format!("window/{device}/{minute}"))? {
                    windows.push(window);
                }
            }
            let minutes = summarize(&windows);
            for summary in &minutes {
                kv.put_json(&format!("summary/{}", summary.minute_ms), summary)?;
            }
            ctx.info(&format!(
                "summarised {} windows into {} minutes",
                windows.len(),
                minutes.len()
            ));
            Ok(Output::Summaries { minutes })
        }
    }
}

export_function!(rollup);

#[cfg(test)]
mod tests {
    use super::*;

    fn window(device: &str, minute_ms: u64, values: &[f64]) -> Window {
        Window {
            device: device.into(),
            minute_ms,
            count: values.len() as u64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            sum: values.iter().sum(),
        }
    }

    #[test]
    fn a_summary_folds_every_device_of_a_minute() {
        let minutes = summarize(&[
            window("a", 60_000, &[1.0, 3.0]),
            window("b", 60_000, &[5.0]),
            window("a", 120_000, &[7.0]),
        ]);
        assert_eq!(minutes.len(), 2);
        assert_eq!(
            minutes[0],
            Summary {
                minute_ms: 60_000,
                devices: 2,
                readings: 3,
                min: 1.0,
                max: 5.0,
                mean: 3.0
            }
        );
        assert_eq!(minutes[1].devices, 1);
    }
}
