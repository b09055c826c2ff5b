//! The limit on wrong access tokens, per client address, in bounded memory.
//!
//! Each client address has a bucket of [`FailureLimit::burst`] failures that gets one back
//! every [`FailureLimit::refill`]. A wrong token takes one; while the bucket is empty, every
//! request of that address that needs the token is answered 429 with `Retry-After`,
//! *whatever token it carries*: were a right token let through, a guesser would still learn
//! when it hit. So at the default of 10 a second, guessing a 16-character token is hopeless,
//! and a person who mistyped it waits a fraction of a second.
//!
//! Addresses are keyed as they are for IPv4; an IPv6 client is keyed by its /64 network,
//! since one host commonly holds a whole /64 and could otherwise use a fresh address per
//! guess. Only failures create entries (a client with the right token takes no room), and
//! there are at most [`MAX_TRACKED_CLIENTS`]; when the table is full, entries whose bucket
//! has refilled (which carry no information) are dropped, and if none has, the addresses
//! without an entry share one overflow bucket. Memory stays bounded whatever the number of
//! addresses a guesser uses, and many addresses buy no more guesses than one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One more wrong token is allowed every 100 ms: 10 per second, sustained.
pub const DEFAULT_FAILURE_REFILL: Duration = Duration::from_millis(100);

/// Wrong tokens one client address may send in a burst before the rate applies (10).
pub const DEFAULT_FAILURE_BURST: u32 = 10;

/// Most client addresses with a bucket of their own (4,096: about 200 KiB at most).
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// How many wrong tokens an address may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureLimit {
    /// Wrong tokens allowed at once, before the rate applies; at least 1.
    pub burst: u32,
    /// One more is allowed each time this passes: the sustained rate
    /// ([`DEFAULT_FAILURE_REFILL`]: 10 a second); at least 1 ms.
    pub refill: Duration,
}

impl Default for FailureLimit {
    fn default() -> Self {
        FailureLimit {
            burst: DEFAULT_FAILURE_BURST,
            refill: DEFAULT_FAILURE_REFILL,
        }
    }
}

/// A bucket: how many failures may still be sent, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    left: f64,
    at: Instant,
}

/// Per-address failure buckets (see the module documentation).
#[derive(Debug)]
pub struct FailureLimiter {
    limit: FailureLimit,
    max_clients: usize,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by the addresses that found the table full.
    overflow: Option<Bucket>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::new(FailureLimit::default())
    }
}

impl FailureLimiter {
    /// A limiter with `limit` (a burst below 1 counts as 1, a refill below 1 ms as 1 ms) and
    /// [`MAX_TRACKED_CLIENTS`].
    pub fn new(limit: FailureLimit) -> Self {
        Self::with_capacity(limit, MAX_TRACKED_CLIENTS)
    }

    /// A limiter tracking at most `max_clients` addresses (at least 1).
    pub fn with_capacity(limit: FailureLimit, max_clients: usize) -> Self {
        FailureLimiter {
            limit: FailureLimit {
                burst: limit.burst.max(1),
                refill: limit.refill.max(Duration::from_millis(1)),
            },
            max_clients: max_clients.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: None,
            }),
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> FailureLimit {
        self.limit
    }

    /// `Ok` when `ip` may have its token checked at `now`; else how long until it may.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = key(ip);
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match table.buckets.get(&key) {
            Some(b) => Some(*b),
            None if table.buckets.len() >= self.max_clients => table.overflow,
            None => None,
        };
        match bucket.map(|b| self.refilled(b, now)) {
            Some(left) if left < 1.0 => Err(self.time_to_one(left)),
            _ => Ok(()),
        }
    }

    /// Counts one wrong token from `ip` at `now`.
    pub fn fail(&self, ip: IpAddr, now: Instant) {
        let key = key(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.buckets.contains_key(&key) && table.buckets.len() >= self.max_clients {
            let full = f64::from(self.limit.burst);
            table.buckets.retain(|_, b| self.refilled(*b, now) < full);
        }
        let slot = if table.buckets.contains_key(&key) || table.buckets.len() < self.max_clients {
            table.buckets.get(&key).copied()
        } else {
            table.overflow
        };
        let left = slot.map_or(f64::from(self.limit.burst), |b| self.refilled(b, now));
        let updated = Bucket {
            left: (left - 1.0).max(0.0),
            at: now,
        };
        if table.buckets.contains_key(&key) || table.buckets.len() < self.max_clients {
            table.buckets.insert(key, updated);
        } else {
            table.overflow = Some(updated);
        }
    }

    /// How many addresses have a bucket of their own now.
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.left + elapsed / self.limit.refill.as_secs_f64()).min(f64::from(self.limit.burst))
    }

    fn time_to_one(&self, left: f64) -> Duration {
        self.limit.refill.mul_f64((1.0 - left).clamp(0.0, 1.0))
    }
}

/// The bucket key of an address: itself for IPv4, its /64 network for IPv6.
fn key(ip: IpAddr) -> IpAddr {
    match crate::client::canonical(ip) {
        v6 @ IpAddr::V6(_) => crate::client::mask(v6, 64),
        v4 => v4,
    }
}

/// `Retry-After` in whole seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = FailureLimiter::default();
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check(a, t0).is_ok());
            limiter.fail(a, t0);
        }
        let wait = limiter.check(a, t0).expect_err("the 11th is refused");
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
        // Another address is not affected.
        assert!(limiter.check(ip("192.0.2.2"), t0).is_ok());
        // One more failure is allowed every 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check(a, t1).is_ok());
        limiter.fail(a, t1);
        assert!(limiter.check(a, t1).is_err());
        // Over a long run, about 10 per second get through.
        let mut allowed = 0;
        for ms in 0..10_000u64 {
            let t = t1 + Duration::from_millis(ms);
            if limiter.check(a, t).is_ok() {
                allowed += 1;
                limiter.fail(a, t);
            }
        }
        assert!((99..=101).contains(&allowed), "{allowed} in 10 s");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let limiter = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            limiter.fail(ip(&format!("2001:db8:1:2::{i:x}")), t0);
        }
        assert!(limiter.check(ip("2001:db8:1:2:ffff::1"), t0).is_err());
        assert!(limiter.check(ip("2001:db8:1:3::1"), t0).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn memory_is_bounded_and_many_addresses_buy_no_more_guesses() {
        let limiter = FailureLimiter::with_capacity(FailureLimit::default(), 100);
        let t0 = Instant::now();
        // 10,000 addresses, one guess each, all at once.
        let mut allowed = 0;
        for i in 0..10_000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            if limiter.check(a, t0).is_ok() {
                allowed += 1;
                limiter.fail(a, t0);
            }
        }
        assert_eq!(
            limiter.tracked(),
            100,
            "the table never grows past its bound"
        );
        assert_eq!(allowed, 100 + 10, "100 tracked, then one shared burst");
        // Once the tracked buckets have refilled, their room is given back.
        let later = t0 + Duration::from_secs(2);
        let fresh = ip("198.51.100.1");
        assert!(limiter.check(fresh, later).is_ok());
        limiter.fail(fresh, later);
        assert_eq!(limiter.tracked(), 1);
        assert!(
            limiter.check(fresh, later).is_ok(),
            "9 left in its own bucket"
        );
    }
}
