//! When a connection is a slow consumer: [`Outbound`], the rule in one place.
//!
//! Events (Emit, Publish, Push) wait for a connection in two places: its
//! mailbox (left by whichever task sent them) and its write buffer (taken
//! by the connection's task, not yet accepted by the socket). Their sum is
//! what *waits* for the connection. The rule:
//!
//! - A connection is **stalled** when bytes wait to be written and its
//!   socket has accepted none of them for [`Limits::slow_consumer_timeout`]
//!   (default 1 s): its peer is not reading. Any byte written ends a stall.
//! - More than [`Limits::max_outbound_bytes`] (default 1 MiB) waiting for a
//!   **stalled** connection makes it a slow consumer: close 1013
//!   `rtm/slow-consumer`. A delivery that would pass the bound while the
//!   connection is stalled is refused at once, so a peer known not to read
//!   holds at most the bound.
//! - A connection whose socket takes bytes is never closed for a burst,
//!   however far over the bound it goes for a moment, up to
//!   [`Limits::max_outbound_burst_bytes`] (default 16 MiB), the hard limit
//!   on what may wait for one connection whatever it does (memory stays
//!   bounded even in the window before a stall is known).
//!
//! Replies to the connection's own requests are paced instead (the
//! connection is not read while they wait to be written); see
//! [`Limits::max_outbound_bytes`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rtm_core::{Limits, Outbound};
//!
//! let limits = Limits::default();
//! let t0 = Instant::now();
//! let mut outbound = Outbound::new();
//! // 3 MiB of a burst wait; the socket takes some of it: not slow.
//! outbound.handle_flush(3 << 20, (3 << 20) - 65_536, t0);
//! assert!(!outbound.is_slow((3 << 20) - 65_536, &limits));
//! // The peer stops reading: nothing is written for the timeout.
//! let later = t0 + limits.slow_consumer_timeout;
//! assert_eq!(outbound.poll_timeout(&limits), Some(later));
//! outbound.handle_timeout(later, &limits);
//! assert!(outbound.is_stalled() && outbound.is_slow(2 << 20, &limits));
//! assert!(!Outbound::admits(&limits, 2 << 20, true), "a stalled peer gets no more");
//! ```

use std::time::Instant;

use crate::config::Limits;

/// The two byte bounds of the rule, small enough to keep beside each
/// connection's mailbox: [`OutboundBounds::admits`] is what a delivering
/// task checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundBounds {
    /// [`Limits::max_outbound_bytes`].
    pub max_bytes: usize,
    /// [`Limits::max_outbound_burst_bytes`].
    pub burst_bytes: usize,
}

impl OutboundBounds {
    /// The bounds of these limits.
    pub fn of(limits: &Limits) -> Self {
        OutboundBounds {
            max_bytes: limits.max_outbound_bytes,
            burst_bytes: limits.max_outbound_burst_bytes,
        }
    }

    /// See [`Outbound::admits`].
    pub fn admits(self, waiting: usize, stalled: bool) -> bool {
        waiting <= self.burst_bytes && !(stalled && waiting > self.max_bytes)
    }
}

/// One connection's write progress, and the slow-consumer rule over it.
/// See the [module docs](self). It keeps only the progress (16 bytes: it
/// lives in every connection's task); the limits are passed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outbound(Progress);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Progress {
    /// Nothing waits to be written.
    #[default]
    Idle,
    /// Bytes wait; the socket last accepted one (or they started to wait) then.
    Since(Instant),
    /// Bytes wait and the socket accepted none for the timeout.
    Stalled,
}

impl Outbound {
    /// A connection with nothing waiting.
    pub fn new() -> Self {
        Outbound::default()
    }

    /// Whether a delivery may be queued when, with it, `waiting` bytes would
    /// wait for a connection that is `stalled` (or not). `false`: the
    /// connection is a slow consumer (close it 1013, drop what waits).
    pub fn admits(limits: &Limits, waiting: usize, stalled: bool) -> bool {
        OutboundBounds::of(limits).admits(waiting, stalled)
    }

    // ----- getters -----

    /// The socket has accepted no byte for the timeout while bytes waited.
    pub fn is_stalled(&self) -> bool {
        self.0 == Progress::Stalled
    }

    /// Whether, with `waiting` bytes waiting for it, the connection is a
    /// slow consumer now: stalled, and more than `max_outbound_bytes` waits.
    pub fn is_slow(&self, waiting: usize, limits: &Limits) -> bool {
        self.is_stalled() && waiting > limits.max_outbound_bytes
    }

    // ----- inputs -----

    /// A write attempt ended: `before` bytes waited to be written, `after`
    /// still do.
    pub fn handle_flush(&mut self, before: usize, after: usize, now: Instant) {
        if after == 0 {
            self.0 = Progress::Idle;
        } else if after < before || self.0 == Progress::Idle {
            // Progress, or bytes just started to wait: the clock (re)starts.
            self.0 = Progress::Since(now);
        }
    }

    /// Time passed: a stall is noticed at its deadline.
    pub fn handle_timeout(&mut self, now: Instant, limits: &Limits) {
        if self.poll_timeout(limits).is_some_and(|at| at <= now) {
            self.0 = Progress::Stalled;
        }
    }

    // ----- outputs -----

    /// When a stall would be noticed, while bytes wait and none is yet.
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Instant> {
        match self.0 {
            Progress::Since(at) => Some(at + limits.slow_consumer_timeout),
            Progress::Idle | Progress::Stalled => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_outbound_bytes: 100,
            max_outbound_burst_bytes: 1_000,
            slow_consumer_timeout: Duration::from_secs(2),
            ..Limits::default()
        }
    }

    #[test]
    fn a_reader_that_takes_bytes_is_never_stalled_however_much_waits() {
        let t0 = Instant::now();
        let mut outbound = Outbound::new();
        let mut waiting = 900;
        for step in 0..100u32 {
            let now = t0 + Duration::from_millis(500) * step;
            outbound.handle_timeout(now, &limits());
            outbound.handle_flush(waiting, waiting - 1, now);
            waiting = 900;
            assert!(!outbound.is_slow(waiting, &limits()));
            assert!(Outbound::admits(&limits(), waiting, outbound.is_stalled()));
        }
    }

    #[test]
    fn a_socket_that_takes_nothing_for_the_timeout_is_stalled_at_its_edge() {
        let t0 = Instant::now();
        let mut outbound = Outbound::new();
        outbound.handle_flush(50, 50, t0);
        outbound.handle_timeout(t0 + Duration::from_millis(1_999), &limits());
        assert!(!outbound.is_stalled());
        outbound.handle_flush(50, 50, t0 + Duration::from_millis(1_999));
        outbound.handle_timeout(t0 + Duration::from_secs(2), &limits());
        assert!(outbound.is_stalled());
        assert!(
            !outbound.is_slow(100, &limits()),
            "at the bound, not past it"
        );
        assert!(outbound.is_slow(101, &limits()));
        // One byte written ends the stall.
        outbound.handle_flush(101, 100, t0 + Duration::from_secs(3));
        assert!(!outbound.is_stalled());
    }

    #[test]
    fn the_bound_refuses_only_a_stalled_connection_and_the_burst_limit_any() {
        let limits = limits();
        assert!(Outbound::admits(&limits, 100, true));
        assert!(!Outbound::admits(&limits, 101, true));
        assert!(Outbound::admits(&limits, 1_000, false));
        assert!(!Outbound::admits(&limits, 1_001, false));
    }

    #[test]
    fn nothing_waiting_means_no_stall_clock() {
        let t0 = Instant::now();
        let mut outbound = Outbound::new();
        outbound.handle_flush(10, 0, t0);
        assert_eq!(outbound.poll_timeout(&limits()), None);
        // Bytes start to wait later: the clock starts then, not at t0.
        let t1 = t0 + Duration::from_secs(60);
        outbound.handle_flush(10, 10, t1);
        assert_eq!(
            outbound.poll_timeout(&limits()),
            Some(t1 + Duration::from_secs(2))
        );
    }
}
