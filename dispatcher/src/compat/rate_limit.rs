//! The web rate limit: a token bucket per (client address, function), in this dispatcher's memory.
//!
//! Invariants: the map holds at most `MAX_BUCKETS` entries, so a flood of addresses cannot
//! grow it without bound; a bucket that has refilled completely is the same as no bucket, so
//! evicting it changes no answer. Each dispatcher limits on its own: the limit a client meets
//! is per dispatcher it reaches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most buckets one dispatcher keeps.
pub const MAX_BUCKETS: usize = 100_000;

/// One client's tokens for one function.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The rate it was last taken from at (a redeploy may change it).
    rate_per_s: f64,
}

/// A bucket holds one second's worth of requests, and at least one.
fn capacity(rate_per_s: f64) -> f64 {
    rate_per_s.max(1.0)
}

impl Bucket {
    /// The tokens at `now`, refilled since `last` at `rate_per_s`.
    fn refilled(&self, now: Instant, rate_per_s: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate_per_s).min(capacity(rate_per_s))
    }

    /// Whether it has refilled completely at its own rate, so dropping it changes nothing.
    fn is_full(&self, now: Instant) -> bool {
        self.refilled(now, self.rate_per_s) >= capacity(self.rate_per_s)
    }
}

/// Buckets by client address and function name.
pub struct RateLimiter {
    buckets: Mutex<HashMap<(IpAddr, String), Bucket>>,
    max_buckets: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::with_capacity(MAX_BUCKETS)
    }
}

impl RateLimiter {
    /// A limiter that keeps at most `max_buckets` buckets.
    pub fn with_capacity(max_buckets: usize) -> RateLimiter {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Takes one request of `client` to `function`, limited to `rate_per_s`, at `now`; past
    /// the limit, the time until the next request would be allowed.
    pub fn take(
        &self,
        client: IpAddr,
        function: &str,
        rate_per_s: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let key = (client, function.to_string());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_buckets {
            evict(&mut buckets, now, self.max_buckets);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity(rate_per_s),
            last: now,
            rate_per_s,
        });
        let tokens = bucket.refilled(now, rate_per_s);
        bucket.last = now;
        bucket.rate_per_s = rate_per_s;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / rate_per_s))
        }
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.buckets.lock().expect("rate limit lock").len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room for one bucket: drops every bucket that has refilled; when none has, the one
/// idle longest (its client gets a fresh bucket back: lenient, never a refusal of strangers).
fn evict(buckets: &mut HashMap<(IpAddr, String), Bucket>, now: Instant, max_buckets: usize) {
    buckets.retain(|_, bucket| !bucket.is_full(now));
    if buckets.len() >= max_buckets {
        if let Some(oldest) = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.last)
            .map(|(key, _)| key.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_bucket_holds_a_seconds_worth_then_refuses_until_it_refills() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(A, "f", 3.0, t0), Ok(()));
        }
        let wait = limiter.take(A, "f", 3.0, t0).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(334));
        // A third of a second later, one more request fits.
        let later = t0 + Duration::from_millis(340);
        assert_eq!(limiter.take(A, "f", 3.0, later), Ok(()));
        assert!(limiter.take(A, "f", 3.0, later).is_err());
    }

    #[test]
    fn clients_and_functions_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(limiter.take(A, "f", 1.0, now), Ok(()));
        assert!(limiter.take(A, "f", 1.0, now).is_err());
        assert_eq!(limiter.take(B, "f", 1.0, now), Ok(()));
        assert_eq!(limiter.take(A, "g", 1.0, now), Ok(()));
    }

    #[test]
    fn a_slow_rate_still_allows_one_request_and_waits_long_after() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(limiter.take(A, "f", 0.1, now), Ok(()));
        let wait = limiter.take(A, "f", 0.1, now).unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
    }

    #[test]
    fn the_map_stays_bounded_and_drops_refilled_buckets_first() {
        let limiter = RateLimiter::with_capacity(2);
        let t0 = Instant::now();
        limiter.take(A, "f", 1.0, t0).unwrap();
        limiter
            .take(A, "g", 1.0, t0 + Duration::from_secs(5))
            .unwrap();
        // "f" has refilled by now and "g" has not: "f" goes.
        let t1 = t0 + Duration::from_millis(5500);
        limiter.take(B, "f", 1.0, t1).unwrap();
        assert_eq!(limiter.len(), 2);
        assert!(limiter.take(A, "g", 1.0, t1).is_err(), "g kept its bucket");
        // With every bucket busy, the one idle longest makes room.
        limiter.take(B, "g", 1.0, t1).unwrap();
        assert_eq!(limiter.len(), 2);
    }
}
