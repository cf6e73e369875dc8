//! How URL deliveries share a dispatcher: at most a few in flight per receiver (host and
//! port), one try per handling of a result, and the pause before the next try spent with the
//! result handed back to JetStream (a delayed nak) rather than holding a delivery slot. A dead
//! or slow receiver therefore holds at most its few slots for one try's timeout, and every
//! other receiver's deliveries go on.
//!
//! The decisions ([`after_try`], [`after_deferral`]) are pure; [`HostSlots`] is the one
//! piece of shared state.

use squall_broker::backoff::Doubling;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest pause between two tries of one delivery.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Hosts remembered before idle ones are forgotten.
const KEEP_HOSTS: usize = 64;

/// How long a delivery keeps trying, and the first pause between its tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub retry_for: Duration,
    pub first_backoff: Duration,
}

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryResult {
    Delivered,
    /// Trying again cannot help: a 4xx other than 408 and 429, or a refused address.
    Permanent(String),
    Retryable(String),
}

/// What becomes of a delivery after this handling of its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Delivered, or failed for good (with why).
    Ended(Result<(), String>),
    /// Tried again, or tried at all, after this pause.
    Again(Duration),
}

/// After try number `tries` of a delivery due since `since_ms`, ending at `now_ms`: the next
/// pause doubles from `first_backoff` up to [`MAX_PAUSE`], and a pause that would end past the
/// retry budget ends the delivery instead.
pub fn after_try(
    result: TryResult,
    tries: u32,
    since_ms: u64,
    now_ms: u64,
    config: Budget,
) -> Step {
    match result {
        TryResult::Delivered => Step::Ended(Ok(())),
        TryResult::Permanent(error) => Step::Ended(Err(error)),
        TryResult::Retryable(error) => {
            let pause = Doubling::new(config.first_backoff, MAX_PAUSE).pause_after(tries);
            let deadline = since_ms.saturating_add(config.retry_for.as_millis() as u64);
            match now_ms.saturating_add(pause.as_millis() as u64) >= deadline {
                true => Step::Ended(Err(error)),
                false => Step::Again(pause),
            }
        }
    }
}

/// A delivery not tried now because its host had all its slots in flight: it waits a short,
/// jittered pause (so the deferred ones do not all come back at once), until the retry budget
/// since it was due is spent; then it fails with its last error, or `busy` if it never got a
/// try.
pub fn after_deferral(
    since_ms: u64,
    now_ms: u64,
    last_error: Option<&str>,
    busy: &str,
    jitter: Duration,
    config: Budget,
) -> Step {
    let deadline = since_ms.saturating_add(config.retry_for.as_millis() as u64);
    if now_ms >= deadline {
        return Step::Ended(Err(last_error.unwrap_or(busy).to_string()));
    }
    Step::Again(config.first_backoff.min(MAX_PAUSE) + jitter.min(config.first_backoff))
}

/// A random pause below `max`, to spread deferred deliveries.
pub fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    let millis = max.as_millis().max(1) as u32;
    Duration::from_millis(u64::from(u32::from_le_bytes(bytes) % millis))
}

/// Slots per receiver (`host:port`): a delivery tries only while it holds one of its
/// receiver's slots.
pub struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One of a host's slots, given back when dropped.
pub struct HostSlot {
    _permit: OwnedSemaphorePermit,
}

impl HostSlots {
    pub fn new(per_host: usize) -> HostSlots {
        HostSlots {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// How many deliveries to one host may be in flight at once.
    pub fn per_host(&self) -> usize {
        self.per_host
    }

    /// A slot of `host` (lower case), or `None` when all of them are in flight.
    pub fn try_take(&self, host: &str) -> Option<HostSlot> {
        let mut hosts = self.hosts.lock().expect("host slots lock");
        if hosts.len() > KEEP_HOSTS {
            // A semaphore no permit points at is idle: forget its host.
            hosts.retain(|_, slots| Arc::strong_count(slots) > 1);
        }
        let slots = hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone();
        drop(hosts);
        let permit = slots.try_acquire_owned().ok()?;
        Some(HostSlot { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config(retry_for_ms: u64) -> Budget {
        Budget {
            retry_for: Duration::from_millis(retry_for_ms),
            first_backoff: 250 * MS,
        }
    }

    #[test]
    fn tries_are_spread_by_a_doubling_pause_within_the_budget() {
        let c = config(10_000);
        let failed = || TryResult::Retryable("down".into());
        assert_eq!(after_try(failed(), 1, 0, 0, c), Step::Again(250 * MS));
        assert_eq!(after_try(failed(), 2, 0, 300, c), Step::Again(500 * MS));
        assert_eq!(after_try(failed(), 9, 0, 4000, c), Step::Again(5000 * MS));
        // A pause that would end at or past the budget ends the delivery.
        assert_eq!(
            after_try(failed(), 9, 0, 5000, c),
            Step::Ended(Err("down".into()))
        );
        assert_eq!(
            after_try(TryResult::Permanent("410".into()), 1, 0, 0, c),
            Step::Ended(Err("410".into()))
        );
        assert_eq!(
            after_try(TryResult::Delivered, 3, 0, 9000, c),
            Step::Ended(Ok(()))
        );
    }

    #[test]
    fn a_deferred_delivery_waits_briefly_until_its_budget_is_spent() {
        let c = config(1000);
        assert_eq!(
            after_deferral(0, 10, None, "busy", 20 * MS, c),
            Step::Again(270 * MS)
        );
        assert_eq!(
            after_deferral(0, 1000, None, "busy", MS, c),
            Step::Ended(Err("busy".into()))
        );
        assert_eq!(
            after_deferral(0, 1000, Some("timed out"), "busy", MS, c),
            Step::Ended(Err("timed out".into()))
        );
    }

    #[test]
    fn a_host_has_at_most_its_slots_in_flight() {
        let slots = HostSlots::new(2);
        let a = slots.try_take("dead.example").unwrap();
        let _b = slots.try_take("dead.example").unwrap();
        assert!(slots.try_take("dead.example").is_none());
        // Another host is not held up.
        assert!(slots.try_take("alive.example").is_some());
        drop(a);
        assert!(slots.try_take("dead.example").is_some());
        assert!(jitter(100 * MS) < 100 * MS);
    }
}
