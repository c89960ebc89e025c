//! Client options: auth data, call timeout, offline queue bound, reconnect schedule.

use std::time::Duration;

use crate::config::Heartbeat;

/// How the client reconnects after a connection it did not close is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Never reconnect: a lost connection closes the client.
    Never,
    /// Wait this long before every attempt (the JS client's `reconnectDelayMs`).
    Fixed(Duration),
    /// Wait `initial * factor^(attempt - 1)`, capped at `max`, then apply `jitter`.
    Backoff {
        /// The delay before the first attempt.
        initial: Duration,
        /// The largest delay (before jitter).
        max: Duration,
        /// Growth per attempt (2 doubles it).
        factor: u32,
        /// Randomization of each delay, from the client's seeded PRNG.
        jitter: Jitter,
    },
}

/// Randomization of a backoff delay `d`, so that many clients dropped at once
/// do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
}

/// Options of a client core.
///
/// ```
/// use std::time::Duration;
/// use rtm_core::client::{ClientConfig, Jitter, Reconnect};
/// let config = ClientConfig {
///     auth_data: Some(serde_json::json!({"token": "secret"})),
///     reconnect: Reconnect::Backoff {
///         initial: Duration::from_millis(500),
///         max: Duration::from_secs(30),
///         factor: 2,
///         jitter: Jitter::Full,
///     },
///     ..ClientConfig::default()
/// };
/// assert_eq!(config.offline_queue, 1024);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Sent as `{"type":"auth","data":[auth_data]}` on every (re)open; `None`: no auth.
    pub auth_data: Option<serde_json::Value>,
    /// Deadline of every call awaiting a reply, counted from the call (also while
    /// queued); past it the call fails with `rtm/timeout`. `None`: no deadline.
    /// Default 30 s.
    pub call_timeout: Option<Duration>,
    /// Calls made while not open wait in a queue of this many (default 1024);
    /// beyond it a call fails at once with `rtm/queue-full`. Adapters also bound
    /// the frames waiting for a server that stopped reading by it: past it the
    /// connection counts as lost.
    pub offline_queue: usize,
    /// Reconnect schedule (default `Fixed(1 s)`).
    pub reconnect: Reconnect,
    /// Consecutive failed attempts after which the client gives up and closes;
    /// `None` (default): retry forever.
    pub max_reconnect_attempts: Option<u32>,
    /// Seed of the PRNG behind backoff jitter, so schedules are reproducible in tests.
    pub jitter_seed: u64,
    /// Liveness of the server: once nothing came from it for `interval`, a
    /// WebSocket ping asks for a sign (every RFC 6455 server answers with a
    /// pong); once nothing came for `timeout`, the connection counts as lost
    /// and the client reconnects. Catches a server or network that vanished
    /// without closing the socket. Default 25 s / 60 s; `None`: never.
    pub heartbeat: Option<Heartbeat>,
    /// Keep a position in the stream of every push subscription whose event
    /// keeps history on the server (ext; docs/protocol.md): subscribes
    /// carry `since`, so after a reconnect the server sends what was missed,
    /// in order, once, or says it cannot ([`ClientEvent::Resync`](super::ClientEvent::Resync));
    /// an event seen twice is dropped, and one missed makes the client
    /// subscribe again with its position. A server without history ignores
    /// `since`. Default `true`.
    pub track_positions: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            auth_data: None,
            call_timeout: Some(Duration::from_secs(30)),
            offline_queue: 1024,
            reconnect: Reconnect::Fixed(Duration::from_secs(1)),
            max_reconnect_attempts: None,
            jitter_seed: 0x5EED_7E57,
            heartbeat: Some(Heartbeat::default()),
            track_positions: true,
        }
    }
}
