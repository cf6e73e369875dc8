//! The one pause schedule of every loop that tries again (a publish, a destination delivery, the
//! wait for the topology, a worker restart): a first pause doubling up to a cap, optionally
//! bounded by a deadline.
//!
//! Pure: the caller reads the clock and sleeps; this only decides how long.

use std::time::{Duration, Instant};

/// Pauses that start at `first` and double after every failure, never above `cap`; with a
/// deadline, a pause that would end at or past it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubling {
    first: Duration,
    cap: Duration,
    deadline: Option<Instant>,
    failures: u32,
}

impl Doubling {
    /// A schedule from `first` up to `cap`, with no deadline and no failure yet.
    pub const fn new(first: Duration, cap: Duration) -> Doubling {
        Doubling {
            first,
            cap,
            deadline: None,
            failures: 0,
        }
    }

    /// The same schedule, refusing pauses that would end at or past `deadline`.
    pub const fn until(self, deadline: Instant) -> Doubling {
        Doubling {
            deadline: Some(deadline),
            ..self
        }
    }

    /// The pause after failure number `failures` (1 for the first): `first`, then twice the
    /// previous one, at most `cap`.
    pub fn pause_after(&self, failures: u32) -> Duration {
        // 2^16 times any useful first pause is past any useful cap; the bound keeps the shift
        // and the multiplication from overflowing.
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }

    /// Counts a failure and returns the pause before the next try, whatever the deadline.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.pause_after(self.failures)
    }

    /// Counts a failure and returns the pause before the next try, or `None` when that pause,
    /// started at `now`, would not end before the deadline.
    pub fn fail_at(&mut self, now: Instant) -> Option<Duration> {
        let pause = self.fail();
        match self.deadline {
            Some(deadline) if now + pause >= deadline => None,
            _ => Some(pause),
        }
    }

    /// Forgets the failures: the next pause is `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The failures counted since the start or the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_double_from_the_first_up_to_the_cap() {
        let pauses = Doubling::new(50 * MS, 1000 * MS);
        let schedule: Vec<Duration> = (1..=7).map(|n| pauses.pause_after(n)).collect();
        assert_eq!(
            schedule,
            [50, 100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS)
        );
        assert_eq!(pauses.pause_after(0), 50 * MS);
        assert_eq!(pauses.pause_after(u32::MAX), 1000 * MS);
    }

    #[test]
    fn failures_advance_the_schedule_and_a_reset_starts_it_again() {
        let mut pauses = Doubling::new(100 * MS, 5000 * MS);
        assert_eq!(pauses.fail(), 100 * MS);
        assert_eq!(pauses.fail(), 200 * MS);
        assert_eq!(pauses.failures(), 2);
        pauses.reset();
        assert_eq!(pauses.fail(), 100 * MS);
    }

    #[test]
    fn a_pause_that_would_reach_the_deadline_is_refused() {
        let now = Instant::now();
        let mut pauses = Doubling::new(250 * MS, 4000 * MS).until(now + 700 * MS);
        assert_eq!(pauses.fail_at(now), Some(250 * MS));
        assert_eq!(pauses.fail_at(now + 250 * MS), None);
        // Without a deadline every pause is given.
        let mut open = Doubling::new(250 * MS, 4000 * MS);
        assert_eq!(
            open.fail_at(now + Duration::from_secs(3600)),
            Some(250 * MS)
        );
    }
}
