//! The retry delay decision: a pure function of the backoff policy and the attempt number.

use crate::spec::Backoff;
use std::time::Duration;

/// The delay before attempt `failed_attempt + 1`, after attempt `failed_attempt` (1-based) failed.
///
/// `hint_ms` is the function's own retry-after suggestion (0 = none), which wins over the policy
/// but is still capped by `max_ms`. `jitter_unit` in `[0, 1)` scales the delay into
/// `[delay/2, delay)` when jitter is on, so that a burst of failures does not retry in lockstep.
pub fn retry_delay(
    backoff: &Backoff,
    failed_attempt: u32,
    hint_ms: u64,
    jitter_unit: f64,
) -> Duration {
    if hint_ms > 0 {
        return Duration::from_millis(hint_ms.min(backoff.max_ms.max(1)));
    }
    let exponent = failed_attempt.saturating_sub(1).min(64) as i32;
    let raw = backoff.initial_ms as f64 * backoff.multiplier.powi(exponent);
    let capped = raw.min(backoff.max_ms as f64);
    let ms = if backoff.jitter {
        capped * (0.5 + 0.5 * jitter_unit.clamp(0.0, 1.0))
    } else {
        capped
    };
    Duration::from_millis(ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> Backoff {
        Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 1000,
            jitter: false,
        }
    }

    #[test]
    fn delay_grows_geometrically_up_to_the_cap() {
        let b = no_jitter();
        let delays: Vec<u64> = (1..=6)
            .map(|a| retry_delay(&b, a, 0, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let b = Backoff {
            jitter: true,
            ..no_jitter()
        };
        assert_eq!(retry_delay(&b, 2, 0, 0.0).as_millis(), 100);
        assert_eq!(retry_delay(&b, 2, 0, 0.999).as_millis(), 200);
    }

    #[test]
    fn function_hint_wins_but_is_capped() {
        let b = no_jitter();
        assert_eq!(retry_delay(&b, 1, 30, 0.0).as_millis(), 30);
        assert_eq!(retry_delay(&b, 1, 5000, 0.0).as_millis(), 1000);
    }
}
