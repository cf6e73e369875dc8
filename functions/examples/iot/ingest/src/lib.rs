//! iot-ingest: folds device telemetry into per-device, per-minute windows in the function's state.
//!
//! Invoked by a subject trigger on `devices.*.telemetry` (what nats-server's MQTT listener makes
//! of the MQTT topic `devices/{id}/telemetry`) with a device's reading as JSON:
//! `{"seq": 12, "value": 21.5, "ts_ms": 1700000000000}`. It keeps, per device and minute of
//! `ts_ms`, the min, max, mean and count, under `window/<device>/<minute>`, and publishes each
//! updated window on `events.iot.window` for iot-rollup.
//!
//! A redelivered message (after a worker died, or a retried attempt) is applied once: a window
//! remembers the sequence numbers it holds and is written in one put. Readings may be sent with
//! MQTT QoS 1, which delivers at least once.
//!
//! Asked `{"device": "d7"}` instead, it answers that device's windows, oldest first.

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError};
use std::collections::BTreeSet;

/// How many minutes of windows a device's index remembers.
const KEPT_MINUTES: usize = 60;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Reading(Reading),
    Query { device: String },
}

#[derive(Deserialize)]
struct Reading {
    seq: u64,
    value: f64,
    ts_ms: u64,
}

/// One device's minute.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Window {
    pub device: String,
    /// The minute's start, Unix ms.
    pub minute_ms: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub mean: f64,
    /// Sequence numbers applied, so a repeated message changes nothing.
    pub seqs: BTreeSet<u64>,
}

/// The minutes a device has windows for.
#[derive(Serialize, Deserialize, Default)]
struct DeviceIndex {
    minutes: Vec<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Applied {
        device: String,
        minute_ms: u64,
        count: u64,
        duplicate: bool,
    },
    Windows {
        device: String,
        windows: Vec<Window>,
    },
}

/// The device id of a `devices.<id>.telemetry` subject.
fn device_of(subject: &str) -> Option<&str> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
        (Some("devices"), Some(id), Some("telemetry"), None) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// A device id usable in a key.
fn valid_device(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Adds a reading to a window (pure).
fn apply(
    window: Option<Window>,
    device: &str,
    minute_ms: u64,
    reading: &Reading,
) -> (Window, bool) {
    let mut window = window.unwrap_or(Window {
        device: device.to_string(),
        minute_ms,
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sum: 0.0,
        mean: 0.0,
        seqs: BTreeSet::new(),
    });
    if !window.seqs.insert(reading.seq) {
        return (window, true);
    }
    window.count += 1;
    window.min = window.min.min(reading.value);
    window.max = window.max.max(reading.value);
    window.sum += reading.value;
    window.mean = window.sum / window.count as f64;
    (window, false)
}

fn ingest(ctx: &Context, input: Input) -> Result<Output, FnError> {
    let kv = ctx.kv();
    let reading = match input {
        Input::Query { device } => {
            if !valid_device(&device) {
                return Err(FnError::permanent(format!("invalid device id {device:?}")));
            }
            let index: DeviceIndex = kv
                .get_json(&format!("device/{device}"))?
                .unwrap_or_default();
            let mut windows = Vec::new();
            for minute in index.minutes {
                if let Some(window) = kv.get_json(&format!("window/{device}/{minute}"))? {
                    windows.push(window);
                }
            }
            return Ok(Output::Windows { device, windows });
        }
        Input::Reading(reading) => reading,
    };
    let subject = ctx.event()["subject"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let device = device_of(&subject)
        .filter(|id| valid_device(id))
        .ok_or_else(|| FnError::permanent(format!("not a device telemetry subject: {subject:?}")))?
        .to_string();
    if !reading.value.is_finite() {
        return Err(FnError::permanent("value must be a finite number"));
    }
    let minute_ms = reading.ts_ms - reading.ts_ms % 60_000;
    let key = format!("window/{device}/{minute_ms}");
    let (window, duplicate) = apply(kv.get_json(&key)?, &device, minute_ms, &reading);
    if !duplicate {
        kv.put_json(&key, &window)?;
        let index_key = format!("device/{device}");
        let mut index: DeviceIndex = kv.get_json(&index_key)?.unwrap_or_default();
        if !index.minutes.contains(&minute_ms) {
            index.minutes.push(minute_ms);
            index.minutes.sort_unstable();
            let excess = index.minutes.len().saturating_sub(KEPT_MINUTES);
            index.minutes.drain(..excess);
            kv.put_json(&index_key, &index)?;
        }
    }
    // Published even for a duplicate: the same event id, so the stream drops a repeat.
    let event = serde_json::to_vec(&window)?;
    ctx.publish("events.iot.window", &event)?;
    Ok(Output::Applied {
        device,
        minute_ms,
        count: window.count,
        duplicate,
    })
}

export_function!(ingest);

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, value: f64) -> Reading {
        Reading {
            seq,
            value,
            ts_ms: 120_000 + seq,
        }
    }

    #[test]
    fn a_window_keeps_min_max_mean_and_count() {
        let (w, _) = apply(None, "d1", 120_000, &reading(1, 20.0));
        let (w, _) = apply(Some(w), "d1", 120_000, &reading(2, 10.0));
        let (w, _) = apply(Some(w), "d1", 120_000, &reading(3, 30.0));
        assert_eq!((w.count, w.min, w.max, w.mean), (3, 10.0, 30.0, 20.0));
    }

    #[test]
    fn a_repeated_reading_changes_nothing() {
        let (w, _) = apply(None, "d1", 120_000, &reading(1, 20.0));
        let (again, duplicate) = apply(Some(w.clone()), "d1", 120_000, &reading(1, 20.0));
        assert!(duplicate);
        assert_eq!(again, w);
    }

    #[test]
    fn only_device_telemetry_subjects_name_a_device() {
        assert_eq!(device_of("devices.d7.telemetry"), Some("d7"));
        assert_eq!(device_of("devices.d7.status"), None);
        assert_eq!(device_of("devices.d7.telemetry.x"), None);
        assert!(!valid_device("a.b"));
    }
}
