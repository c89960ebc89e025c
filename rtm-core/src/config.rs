//! Limits and server options, shared by every adapter.

use std::time::Duration;

/// Every bound the server enforces. Each has a default; each is configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest text frame accepted, in bytes (default 1 MiB); larger closes 1009.
    pub max_frame_bytes: usize,
    /// Invokes (and subscribe authorizations) in flight per connection (default 256);
    /// more get `rtm/too-many-requests`.
    pub max_in_flight: u32,
    /// Frames queued for one connection (beyond the one being written) before it is
    /// closed as a slow consumer (default 1024).
    /// Enforced by the adapter's outbound queue.
    pub outbound_queue: usize,
    /// Connections a server holds at once (default 100,000); more are refused with 1013.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_in_flight: 256,
            outbound_queue: 1024,
            max_connections: 100_000,
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
    /// Bounds.
    pub limits: Limits,
    /// Ping schedule and silence deadline; `None` disables both.
    pub heartbeat: Option<Heartbeat>,
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
            limits: Limits::default(),
            heartbeat: Some(Heartbeat::default()),
        }
    }

    /// The default auth timeout, 10 s.
    pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

    /// Whether connections must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.auth_timeout.is_some()
    }
}
