//! Rate limits on what a client can make the server do: [`Rate`],
//! [`RateLimit`] (per function: per connection and per user), and the
//! buckets that enforce them, [`Bucket`] and [`RateLimiter`].
//!
//! A rate is a token bucket: `burst` calls at once, then one more each
//! `every`. A call past it is answered `rtm/too-many-requests` (the message
//! says when the next one may come) and its function does not run. Time is
//! passed in, as everywhere in this crate.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rtm_core::rate::{Bucket, Rate};
//!
//! let rate = Rate::per_second(2).with_burst(3);
//! let mut bucket = Bucket::default();
//! let t0 = Instant::now();
//! for _ in 0..3 {
//!     assert!(bucket.try_take(rate, t0).is_ok());
//! }
//! let wait = bucket.try_take(rate, t0).unwrap_err();
//! assert_eq!(wait, Duration::from_millis(500));
//! assert!(bucket.try_take(rate, t0 + wait).is_ok());
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, RtmError};

/// `burst` at once, then one every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many may come at once (at least 1).
    pub burst: u32,
    /// How often one more may come.
    pub every: Duration,
}

impl Rate {
    /// `n` a second (at least 1), in a burst of up to `n`.
    pub fn per_second(n: u32) -> Rate {
        let n = n.max(1);
        Rate {
            burst: n,
            every: Duration::from_secs(1) / n,
        }
    }

    /// `n` a minute (at least 1), in a burst of up to `n`.
    pub fn per_minute(n: u32) -> Rate {
        let n = n.max(1);
        Rate {
            burst: n,
            every: Duration::from_secs(60) / n,
        }
    }

    /// The same rate, with this burst (at least 1).
    #[must_use]
    pub fn with_burst(self, burst: u32) -> Rate {
        Rate {
            burst: burst.max(1),
            ..self
        }
    }

    /// How long a full burst takes to come back.
    fn window(self) -> Duration {
        self.every.saturating_mul(self.burst.max(1))
    }
}

/// What one registered function may be called at. Each bound applies on
/// its own: a call must fit both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls of this function by one connection.
    pub per_connection: Option<Rate>,
    /// Calls of this function by all the connections of one user on this
    /// server (only on a server with authentication).
    pub per_user: Option<Rate>,
}

impl RateLimit {
    /// A limit per connection only.
    pub fn per_connection(rate: Rate) -> Self {
        RateLimit {
            per_connection: Some(rate),
            per_user: None,
        }
    }

    /// A limit per user only.
    pub fn per_user(rate: Rate) -> Self {
        RateLimit {
            per_connection: None,
            per_user: Some(rate),
        }
    }

    /// This limit, and also one per connection.
    #[must_use]
    pub fn and_per_connection(self, rate: Rate) -> Self {
        RateLimit {
            per_connection: Some(rate),
            ..self
        }
    }

    /// This limit, and also one per user.
    #[must_use]
    pub fn and_per_user(self, rate: Rate) -> Self {
        RateLimit {
            per_user: Some(rate),
            ..self
        }
    }
}

/// One token bucket (as GCRA: one instant, the time the bucket is full
/// again). 16 bytes; full when new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When the bucket holds `burst` tokens again; `None`: full.
    full_at: Option<Instant>,
}

impl Bucket {
    /// Takes one token at `now`: `Ok`, or `Err` with how long until one is
    /// there.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let full_at = self.full_at.filter(|at| *at > now).unwrap_or(now);
        let after = full_at + rate.every;
        let window = rate.window();
        // Taking would push "full again" further than a whole burst away.
        if after.saturating_duration_since(now) > window {
            return Err(after.saturating_duration_since(now) - window);
        }
        self.full_at = Some(after);
        Ok(())
    }

    /// Whether the bucket is full at `now` (it can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|at| at <= now)
    }
}

/// Buckets of one rate by key (a user, an address, …), forgetting those
/// that are full again, so it holds only the keys active within one window.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    /// Takes since the last pass over the buckets.
    takes: usize,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// Buckets of this rate.
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            rate,
            buckets: HashMap::new(),
            takes: 0,
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Keys with a bucket that is not full.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes one token for `key` at `now`: `Ok`, or `Err` with how long
    /// until one is there.
    pub fn try_take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        self.takes += 1;
        // Amortised O(1): a pass over the buckets every as many takes as
        // there are buckets drops those that are full again.
        if self.takes > self.buckets.len().max(64) {
            self.takes = 0;
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        self.buckets
            .entry(key)
            .or_default()
            .try_take(self.rate, now)
    }
}

/// The `rtm/too-many-requests` answer to a call past its rate.
pub fn too_many(what: &str, rate: Rate, retry_in: Duration) -> RtmError {
    RtmError::new(
        ErrorCode::TooManyRequests,
        format!(
            "{what}: more than {} in {} ms; retry in {} ms",
            rate.burst,
            rate.window().as_millis(),
            retry_in.as_millis().max(1)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_per_period() {
        let rate = Rate::per_second(10);
        let mut bucket = Bucket::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(bucket.try_take(rate, t0).is_ok());
        }
        assert_eq!(bucket.try_take(rate, t0), Err(Duration::from_millis(100)));
        assert!(bucket
            .try_take(rate, t0 + Duration::from_millis(99))
            .is_err());
        assert!(bucket
            .try_take(rate, t0 + Duration::from_millis(100))
            .is_ok());
        // After a whole window of quiet, the whole burst again.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..10 {
            assert!(bucket.try_take(rate, later).is_ok());
        }
        assert!(bucket.try_take(rate, later).is_err());
    }

    #[test]
    fn a_limiter_forgets_keys_whose_buckets_are_full_again() {
        let mut limiter = RateLimiter::new(Rate::per_second(1));
        let t0 = Instant::now();
        for key in 0..1000 {
            assert!(limiter.try_take(key, t0).is_ok());
        }
        assert_eq!(limiter.len(), 1000);
        let later = t0 + Duration::from_secs(5);
        for _ in 0..1100 {
            let _ = limiter.try_take(0, later);
        }
        assert!(limiter.len() <= 1, "{} buckets kept", limiter.len());
    }
}
