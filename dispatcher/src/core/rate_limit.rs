//! Token buckets in this dispatcher's memory: the web rate limit per (client, function) and the
//! rate limit of each API key.
//!
//! Invariants: the map holds at most `MAX_BUCKETS` entries, so a flood of addresses cannot
//! grow it without bound; a bucket that has refilled completely is the same as no bucket, so
//! evicting it changes no answer. Each dispatcher limits on its own: the limit a client meets
//! is per dispatcher it reaches. An IPv6 client is one /64 (`client_key`): a host usually holds
//! a whole /64, so one bucket per address would give it 2^64 of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most buckets one limiter keeps.
pub const MAX_BUCKETS: usize = 100_000;

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_s: f64,
    /// The most tokens a bucket holds (at least 1).
    pub burst: f64,
}

impl Rate {
    /// `per_s` a second, a bucket holding one second's worth, and at least one.
    pub fn per_second(per_s: f64) -> Rate {
        Rate {
            per_s,
            burst: per_s.max(1.0),
        }
    }

    /// `per_s` a second with a bucket of `burst` (at least one).
    pub fn with_burst(per_s: f64, burst: u32) -> Rate {
        Rate {
            per_s,
            burst: f64::from(burst.max(1)),
        }
    }
}

/// The address a web client is limited by: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as the IPv4 one), an IPv6 address as its /64 prefix.
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// One client's tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The rate it was last taken from at (a redeploy or a new key may change it).
    rate: Rate,
}

impl Bucket {
    /// The tokens at `now`, refilled since `last` at `rate`.
    fn refilled(&self, now: Instant, rate: Rate) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate.per_s).min(rate.burst)
    }

    /// Whether it has refilled completely at its own rate, so dropping it changes nothing.
    fn is_full(&self, now: Instant) -> bool {
        self.refilled(now, self.rate) >= self.rate.burst
    }
}

/// Buckets by key: (client address, function) for web functions, a key's name for keys.
pub struct RateLimiter<K = (IpAddr, String)> {
    buckets: Mutex<HashMap<K, Bucket>>,
    max_buckets: usize,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter::with_capacity(MAX_BUCKETS)
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter that keeps at most `max_buckets` buckets.
    pub fn with_capacity(max_buckets: usize) -> RateLimiter<K> {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Takes one request of `key`, limited to `rate`, at `now`; past the limit, the time until
    /// the next request would be allowed.
    pub fn take(&self, key: K, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if !buckets.contains_key(&key) && buckets.len() >= self.max_buckets {
            evict(&mut buckets, now, self.max_buckets);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            last: now,
            rate,
        });
        let tokens = bucket.refilled(now, rate);
        bucket.last = now;
        bucket.rate = rate;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / rate.per_s))
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

/// The whole seconds a `Retry-After` says for `wait`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Makes room for one bucket: drops every bucket that has refilled; when none has, the one
/// idle longest (its client gets a fresh bucket back: lenient, never a refusal of strangers).
fn evict<K: Hash + Eq + Clone>(buckets: &mut HashMap<K, Bucket>, now: Instant, max_buckets: usize) {
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

    fn web(
        limiter: &RateLimiter,
        client: IpAddr,
        function: &str,
        per_s: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        limiter.take((client, function.to_string()), Rate::per_second(per_s), now)
    }

    #[test]
    fn a_bucket_holds_a_seconds_worth_then_refuses_until_it_refills() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(web(&limiter, A, "f", 3.0, t0), Ok(()));
        }
        let wait = web(&limiter, A, "f", 3.0, t0).unwrap_err();
        assert!(wait > Duration::from_millis(300) && wait <= Duration::from_millis(334));
        // A third of a second later, one more request fits.
        let later = t0 + Duration::from_millis(340);
        assert_eq!(web(&limiter, A, "f", 3.0, later), Ok(()));
        assert!(web(&limiter, A, "f", 3.0, later).is_err());
    }

    #[test]
    fn clients_and_functions_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(web(&limiter, A, "f", 1.0, now), Ok(()));
        assert!(web(&limiter, A, "f", 1.0, now).is_err());
        assert_eq!(web(&limiter, B, "f", 1.0, now), Ok(()));
        assert_eq!(web(&limiter, A, "g", 1.0, now), Ok(()));
    }

    #[test]
    fn a_slow_rate_still_allows_one_request_and_waits_long_after() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        assert_eq!(web(&limiter, A, "f", 0.1, now), Ok(()));
        let wait = web(&limiter, A, "f", 0.1, now).unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 10);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn a_burst_lets_that_many_through_at_once_then_the_rate_refills_it() {
        let limiter: RateLimiter<String> = RateLimiter::default();
        let t0 = Instant::now();
        let rate = Rate::with_burst(2.0, 5);
        for _ in 0..5 {
            assert_eq!(limiter.take("ci".into(), rate, t0), Ok(()));
        }
        let wait = limiter.take("ci".into(), rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.take("other".into(), rate, t0), Ok(()));
        assert_eq!(
            limiter.take("ci".into(), rate, t0 + Duration::from_millis(500)),
            Ok(())
        );
    }

    #[test]
    fn the_map_stays_bounded_and_drops_refilled_buckets_first() {
        let limiter = RateLimiter::with_capacity(2);
        let t0 = Instant::now();
        web(&limiter, A, "f", 1.0, t0).unwrap();
        web(&limiter, A, "g", 1.0, t0 + Duration::from_secs(5)).unwrap();
        // "f" has refilled by now and "g" has not: "f" goes.
        let t1 = t0 + Duration::from_millis(5500);
        web(&limiter, B, "f", 1.0, t1).unwrap();
        assert_eq!(limiter.len(), 2);
        assert!(web(&limiter, A, "g", 1.0, t1).is_err(), "g kept its bucket");
        // With every bucket busy, the one idle longest makes room.
        web(&limiter, B, "g", 1.0, t1).unwrap();
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn an_ipv6_client_is_its_64_prefix_and_a_mapped_ipv4_is_the_ipv4_address() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(client_key(ip("192.0.2.7")), client_key(ip("192.0.2.8")));
    }
}
