//! How a [`crate::RedisBroker`] connects, names its control topic, reconnects
//! and probes, and which pub/sub commands (plain or sharded) it sends.

use std::time::Duration;

use rtm_core::Topic;

/// Settings of a [`crate::RedisBroker`].
///
/// ```
/// use std::time::Duration;
/// use rtm_redis::RedisBrokerConfig;
///
/// let config = RedisBrokerConfig::new("redis://127.0.0.1:6379", "chat", "server-1")
///     .with_probe_interval(Duration::from_secs(1));
/// assert_eq!(config.probe_interval, Duration::from_secs(1));
/// assert!(!config.sharded);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBrokerConfig {
    /// The Redis URL (`redis://[user:pass@]host:port[/db]`). Unused when
    /// [`Self::cluster_nodes`] is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster (URLs as [`Self::url`]). When non-empty
    /// the broker talks to the cluster through slot-routed connections and
    /// needs [`Self::sharded`] (see [`Self::cluster`]).
    pub cluster_nodes: Vec<String>,
    /// The RTM namespace; the control topic is `{namespace}:ctl:{server_id}`.
    pub namespace: String,
    /// This server's id, unique in the cluster (names the control topic).
    pub server_id: String,
    /// Use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7+) instead of `PUBLISH`/`SUBSCRIBE`.
    pub sharded: bool,
    /// The first reconnect delay; doubled after each failed attempt.
    pub reconnect_initial: Duration,
    /// The longest reconnect delay.
    pub reconnect_max: Duration,
    /// How often the broker checks its own subscription with a probe message.
    pub probe_interval: Duration,
    /// How long a probe may take to come back before the subscription counts as lost.
    pub probe_timeout: Duration,
    /// Time limit for establishing one connection.
    pub connect_timeout: Duration,
    /// Time limit for one Redis command (publish, subscribe).
    pub command_timeout: Duration,
    /// For `rediss://` URLs: the certificate authority (PEM) that signed the
    /// Redis server's certificate, trusted instead of the system's roots
    /// (default `None`: the system's roots). Ignored for `redis://`.
    pub tls_root_cert: Option<Vec<u8>>,
    /// The prefix of the broker's metric names (feature `metrics`), followed
    /// by `redis_`: default `rtm_`, as the server's; set it to what the
    /// server's `ServerBuilder::metrics_prefix` is.
    pub metrics_prefix: String,
}

impl RedisBrokerConfig {
    /// Defaults: not sharded, backoff 100 ms doubling to 5 s, a probe every 2 s
    /// answered within 1 s, 1 s to connect and per command, metric names
    /// prefixed `rtm_`.
    pub fn new(
        url: impl Into<String>,
        namespace: impl Into<String>,
        server_id: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            cluster_nodes: Vec::new(),
            namespace: namespace.into(),
            server_id: server_id.into(),
            sharded: false,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            tls_root_cert: None,
            metrics_prefix: "rtm_".to_owned(),
        }
    }

    /// A broker on a Redis Cluster (Redis 7+) with sharded pub/sub:
    /// `SPUBLISH`/`SSUBSCRIBE` routed to the node that owns each topic's slot.
    /// `nodes` are seed URLs; the rest of the cluster is discovered from them.
    ///
    /// ```
    /// use rtm_redis::RedisBrokerConfig;
    ///
    /// let config = RedisBrokerConfig::cluster(
    ///     ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"],
    ///     "chat",
    ///     "server-1",
    /// );
    /// assert!(config.sharded);
    /// assert_eq!(config.cluster_nodes.len(), 2);
    /// ```
    pub fn cluster(
        nodes: impl IntoIterator<Item = impl Into<String>>,
        namespace: impl Into<String>,
        server_id: impl Into<String>,
    ) -> Self {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = Self::new(nodes.join(","), namespace, server_id);
        config.cluster_nodes = nodes;
        config.sharded = true;
        config
    }

    /// Whether this is a Redis Cluster configuration ([`Self::cluster_nodes`] set).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Sets [`Self::metrics_prefix`].
    #[must_use]
    pub fn with_metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Sets [`Self::sharded`].
    #[must_use]
    pub fn with_sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    /// Sets the reconnect backoff (first delay, longest delay).
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max.max(initial);
        self
    }

    /// Sets [`Self::probe_interval`].
    #[must_use]
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Sets [`Self::probe_timeout`].
    #[must_use]
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Sets [`Self::tls_root_cert`]: the PEM of the certificate authority
    /// that signed the Redis server's certificate (a managed Redis's CA, or
    /// your own).
    #[must_use]
    pub fn with_tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// Sets [`Self::connect_timeout`] and [`Self::command_timeout`].
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, command: Duration) -> Self {
        self.connect_timeout = connect;
        self.command_timeout = command;
        self
    }
}

// The pub/sub commands: `(UN)SUBSCRIBE`/`PUBLISH`, or their sharded
// `S`-forms with `sharded`.
impl RedisBrokerConfig {
    fn command(&self, plain: &'static str, sharded: &'static str) -> redis::Cmd {
        redis::cmd(if self.sharded { sharded } else { plain })
    }

    pub(crate) fn subscribe_cmd(&self, topic: &Topic) -> redis::Cmd {
        let mut cmd = self.command("SUBSCRIBE", "SSUBSCRIBE");
        cmd.arg(topic.as_str());
        cmd
    }

    pub(crate) fn unsubscribe_cmd(&self, topic: &Topic) -> redis::Cmd {
        let mut cmd = self.command("UNSUBSCRIBE", "SUNSUBSCRIBE");
        cmd.arg(topic.as_str());
        cmd
    }

    pub(crate) fn publish_cmd(&self, topic: &Topic, payload: &[u8]) -> redis::Cmd {
        let mut cmd = self.command("PUBLISH", "SPUBLISH");
        cmd.arg(topic.as_str()).arg(payload);
        cmd
    }
}

/// Capped exponential backoff: `initial`, `2 * initial`, ... up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `initial`, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
