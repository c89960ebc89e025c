//! Limits and server options, shared by every adapter.

use std::time::Duration;

/// Every bound the server enforces. Each has a default; each is configurable.
///
/// | limit | default | past it |
/// |---|---|---|
/// | [`max_frame_bytes`](Self::max_frame_bytes) | 1 MiB | close 1009 |
/// | [`max_in_flight`](Self::max_in_flight) | 256 | `rtm/too-many-requests` |
/// | [`max_outbound_bytes`](Self::max_outbound_bytes) | 1 MiB | close 1013 `rtm/slow-consumer` once the peer stops reading |
/// | [`slow_consumer_timeout`](Self::slow_consumer_timeout) | 1 s | (how long a socket may take nothing) |
/// | [`max_outbound_burst_bytes`](Self::max_outbound_burst_bytes) | 16 MiB | close 1013 `rtm/slow-consumer` |
/// | [`max_connections`](Self::max_connections) | 100,000 | refused with 1013 |
/// | [`max_name_bytes`](Self::max_name_bytes) | 255 | `rtm/bad-request` |
/// | [`max_tags_per_request`](Self::max_tags_per_request) | 128 | `rtm/bad-request` |
/// | [`max_subscriptions`](Self::max_subscriptions) | 256 per connection | `rtm/too-many-subscriptions` |
/// | [`max_subscriptions_per_user`](Self::max_subscriptions_per_user) | 4,096 per user | `rtm/too-many-subscriptions` |
/// | [`max_subscriptions_per_ip`](Self::max_subscriptions_per_ip) | 16,384 per address | `rtm/too-many-subscriptions` |
/// | [`max_broker_topics`](Self::max_broker_topics) | 100,000 per server | `rtm/too-many-subscriptions` |
/// | [`max_auth_bytes`](Self::max_auth_bytes) | 16 KiB | `rtm/bad-request` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest text frame accepted, in bytes (default 1 MiB); larger closes 1009.
    pub max_frame_bytes: usize,
    /// Requests in flight per connection: invokes, and subscribes waiting for
    /// the authorizer or the broker (default 256); more get `rtm/too-many-requests`.
    pub max_in_flight: usize,
    /// Bytes of events (Emit, Publish, Push) that may wait for a connection
    /// whose peer does not read (default 1 MiB): past it, once its socket
    /// has accepted nothing for [`slow_consumer_timeout`](Self::slow_consumer_timeout),
    /// the connection is closed 1013 `rtm/slow-consumer`. A peer that reads
    /// is not closed when a burst takes it over this for a moment (see
    /// `rtm_core::outbound` for the whole rule). Replies are paced instead:
    /// while a quarter of this (at most 64 KiB) waits to be written, the
    /// connection is not read, so a client pipelining calls is slowed, not
    /// closed (replies close it only past 16× this). Enforced by the adapter.
    pub max_outbound_bytes: usize,
    /// How long a connection's socket may accept no byte, while more than
    /// `max_outbound_bytes` waits for it, before it is closed 1013
    /// `rtm/slow-consumer` (default 1 s). Long enough for a reading peer on
    /// a slow link (its socket accepts bytes at least once a round trip).
    pub slow_consumer_timeout: std::time::Duration,
    /// Bytes that may wait for one connection whatever it does (default 16
    /// MiB; at least `max_outbound_bytes`): the hard limit that bounds a
    /// burst for a peer not yet known to have stopped reading. Past it the
    /// connection is closed 1013 `rtm/slow-consumer`.
    pub max_outbound_burst_bytes: usize,
    /// Connections a server holds at once (default 100,000); more are refused with 1013.
    pub max_connections: usize,
    /// Longest event name, tag, function name and user id, in bytes (default
    /// 255, as Centrifugo's channel names): a request naming a longer one gets
    /// `rtm/bad-request` and nothing is kept for it; a user id over it from
    /// the auth handler rejects the authentication.
    pub max_name_bytes: usize,
    /// Tags in one `subscribe` or `unsubscribe` (default 128); more: `rtm/bad-request`.
    pub max_tags_per_request: usize,
    /// Push subscriptions ((event, tag) pairs) one connection may hold (default
    /// 256); a subscribe that would pass it gets `rtm/too-many-subscriptions`
    /// and adds none of its tags.
    pub max_subscriptions: usize,
    /// Push subscriptions all the connections of one user may hold on this
    /// server together (default 4,096; `None`: no limit of its own). Keeps
    /// one user from taking every one of the server's `max_broker_topics`
    /// (and the memory behind them) however many connections it opens; a
    /// subscribe that would pass it gets `rtm/too-many-subscriptions` and
    /// adds none of its tags.
    pub max_subscriptions_per_user: Option<usize>,
    /// Push subscriptions all the connections from one peer address may
    /// hold on this server together (default 16,384; `None`: no limit of its
    /// own), as `max_subscriptions_per_user` but for connections with or
    /// without a user. Behind a reverse proxy every peer has the proxy's
    /// address: raise it or set `None` there, and rely on the per-user limit.
    pub max_subscriptions_per_ip: Option<usize>,
    /// Broker topics (users and (event, tag) pairs with a local holder) one
    /// server may need at once (default 100,000); a subscribe that would pass
    /// it gets `rtm/too-many-subscriptions`. Applies only with a broker.
    pub max_broker_topics: usize,
    /// Largest `data` of an `auth` request, in bytes (default 16 KiB):
    /// larger gets `rtm/bad-request` without reaching the auth handler.
    /// Before authentication the adapters also hold frames to this + 1 KiB
    /// (close 1009), so an unauthenticated peer cannot make the server
    /// buffer `max_frame_bytes`.
    pub max_auth_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_in_flight: 256,
            max_outbound_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(1),
            max_outbound_burst_bytes: 16 * 1024 * 1024,
            max_connections: 100_000,
            max_name_bytes: 255,
            max_tags_per_request: 128,
            max_subscriptions: 256,
            max_subscriptions_per_user: Some(4096),
            max_subscriptions_per_ip: Some(16_384),
            max_broker_topics: 100_000,
            max_auth_bytes: 16 * 1024,
        }
    }
}

/// Ping the peer every `interval`; close it when nothing came for `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often to ping.
    pub interval: Duration,
    /// How long a peer may stay silent.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Options of a server core.
///
/// ```
/// use std::time::Duration;
/// let config = rtm_core::ServerConfig {
///     auth_timeout: Some(Duration::from_secs(5)),
///     ..rtm_core::ServerConfig::new("server-1")
/// };
/// assert!(config.requires_auth());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This server's id in the cluster (the broker envelope's `origin`); unique per process.
    pub server_id: String,
    /// Prefix of every broker topic (default `"rtm"`).
    pub namespace: String,
    /// `Some(timeout)`: the server has an authentication handler and closes
    /// connections still unauthenticated after `timeout` (4008).
    /// `None`: no authentication, connections are open at once.
    pub auth_timeout: Option<Duration>,
    /// Ask the application about every subscribe (`ServerOutput::Authorize`);
    /// `false` allows all.
    pub authorize_subscriptions: bool,
    /// Whether a broker carries Publish and Push to other servers.
    pub broker: bool,
    /// Sign-ins (`auth` requests that reach the handler) one peer address
    /// may make (default `None`: no limit); past it the `auth` is rejected
    /// (4003) with `rtm/too-many-requests`'s message, before the handler
    /// runs. Keeps one address from signing in and out in a loop.
    pub sign_ins_per_ip: Option<crate::rate::Rate>,
    /// How long an `auth` or a `subscribe` waits for the broker to confirm
    /// the topics it needs (default 10 s). Past it a subscribe fails with
    /// `rtm/broker-unavailable` (undone) and an auth goes on without its
    /// user's topic.
    pub broker_confirm_timeout: Duration,
    /// Bounds.
    pub limits: Limits,
    /// Ping schedule and silence deadline; `None` disables both.
    pub heartbeat: Option<Heartbeat>,
    /// Which events keep history (default: none). Only with a broker that
    /// keeps it ([`crate::stream`]; `docs/history.md`): a Push or Publish of
    /// such an event is appended to its stream and published in one step,
    /// and every server, this one included, delivers it when the broker
    /// hands it back with its position.
    pub history: crate::stream::HistoryConfig,
}

impl ServerConfig {
    /// Defaults: no auth, no broker, no authorizer, default limits, default heartbeat.
    pub fn new(server_id: impl Into<String>) -> Self {
        ServerConfig {
            server_id: server_id.into(),
            namespace: "rtm".into(),
            auth_timeout: None,
            authorize_subscriptions: false,
            broker: false,
            broker_confirm_timeout: Self::DEFAULT_BROKER_CONFIRM_TIMEOUT,
            sign_ins_per_ip: None,
            limits: Limits::default(),
            heartbeat: Some(Heartbeat::default()),
            history: crate::stream::HistoryConfig::default(),
        }
    }

    /// The default auth timeout, 10 s.
    pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default [`ServerConfig::broker_confirm_timeout`], 10 s.
    pub const DEFAULT_BROKER_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

    /// Whether connections must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.auth_timeout.is_some()
    }
}
