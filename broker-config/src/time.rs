//! Wall-clock time as Squall writes it on the broker: Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch of `time`; 0 for a time before the epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current time in Unix milliseconds, as the timestamps in headers and records carry it.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_unix_milliseconds() {
        assert_eq!(
            unix_ms(UNIX_EPOCH + Duration::from_micros(1_500_999)),
            1_500
        );
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // 2025-01-01T00:00:00Z: the clock reads a plausible present.
        assert!(now_ms() > 1_735_689_600_000);
    }
}
