//! What the seeded simulations share: a tiny RNG that is the same on every
//! platform, the seeds to run (`RTM_SIM_SEED` replays one), and the
//! [`check!`] macro that starts every failure with the seed to replay.

use std::ops::RangeInclusive;

use rtm_core::testkit::{App, Cluster};

/// xorshift64*: tiny, good enough, and the same on every platform.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // A zero state would stay zero; mix the seed so nearby seeds diverge at once.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `true` `p` times in 100.
    pub(crate) fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    /// One of `items`, `None` when there is none.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }

    /// One of the `N` (> 0) items of an array.
    pub(crate) fn choose<T: Copy, const N: usize>(&mut self, items: &[T; N]) -> T {
        items[self.below(N)]
    }
}

/// `RTM_SIM_SEED`'s seed alone when it is set, else `default`.
///
/// # Panics
/// When `RTM_SIM_SEED` is not a number.
pub(crate) fn seeds(default: RangeInclusive<u64>) -> Vec<u64> {
    match std::env::var("RTM_SIM_SEED") {
        Ok(seed) => vec![seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RTM_SIM_SEED must be a u64, got {seed:?}"))],
        Err(_) => default.collect(),
    }
}

/// Fails with the seed, step and operation (`$ctx`), so the failure can be replayed.
#[allow(unused_macros)] // not every test crate that has `common` simulates
macro_rules! check {
    ($ctx:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("RTM_SIM_SEED={} {}", $ctx, format!($($fmt)+));
        }
    };
}
#[allow(unused_imports)]
pub(crate) use check;

/// After everyone left: no server holds a connection, an index entry or a
/// topic it needs, and the broker holds no subscription.
#[allow(dead_code)] // not every test crate that has `common` simulates
pub(crate) fn check_empty<A: App>(ctx: &str, cluster: &Cluster<A>) {
    for s in 0..cluster.len() {
        let server = cluster.server(s);
        check!(
            ctx,
            server.connection_count() == 0,
            "server {s} still holds connections"
        );
        check!(
            ctx,
            server.index_sizes() == (0, 0),
            "server {s} index sizes {:?}",
            server.index_sizes()
        );
        let left: Vec<_> = server.broker_topics().collect();
        check!(ctx, left.is_empty(), "server {s} still needs {left:?}");
    }
    let broker = cluster.broker();
    check!(
        ctx,
        broker.subscription_count() == 0,
        "the broker still holds {} subscriptions",
        broker.subscription_count()
    );
}
