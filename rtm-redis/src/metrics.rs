//! The broker's own metrics (feature `metrics`, on by default), recorded
//! through the [`metrics`](https://docs.rs/metrics) facade beside the
//! server's (`rtm_driver::metrics`), named with the same prefix
//! ([`RedisBrokerConfig::metrics_prefix`](crate::RedisBrokerConfig::metrics_prefix),
//! `rtm_` by default) then `redis_`:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `rtm_redis_published_total` | counter | |
//! | `rtm_redis_publish_duration_seconds` | histogram | |
//! | `rtm_redis_reconnects_total` | counter | |
//! | `rtm_redis_errors_total` | counter | `op`: `connect`, `subscribe`, `unsubscribe`, `publish`, `probe`, `connection`, `read` (a history read or reset) |
//!
//! The handles are registered when the broker is made: install the
//! recorder before. Without the feature every method does nothing.

use std::time::Duration;

/// What failed, for `redis_errors_total`'s `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Connecting, resubscribing after a reconnect, reading the topology.
    Connect,
    Subscribe,
    Unsubscribe,
    /// A publish refused (broker down) or failed at Redis.
    Publish,
    /// A probe not echoed in time (the subscription is deemed lost).
    Probe,
    /// A live connection was lost (it dropped, a probe failed, Redis
    /// dropped a shard subscription): the broker goes down and reconnects.
    Connection,
    /// A history read or reset failed.
    Read,
}

#[cfg(feature = "metrics")]
const OPS: [&str; 7] = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "probe",
    "connection",
    "read",
];

/// The broker's instruments; see the [module docs](self).
pub(crate) struct RedisMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

#[cfg(feature = "metrics")]
struct Handles {
    published: metrics::Counter,
    publish_seconds: metrics::Histogram,
    reconnects: metrics::Counter,
    errors: [metrics::Counter; 7],
}

impl RedisMetrics {
    /// Registered now, named `prefix` + `redis_` + name.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(prefix: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let name = |n: &str| format!("{prefix}redis_{n}");
            metrics::describe_counter!(
                name("published_total"),
                "Publishes Redis accepted (PUBLISH / SPUBLISH)."
            );
            metrics::describe_histogram!(
                name("publish_duration_seconds"),
                metrics::Unit::Seconds,
                "A pipeline of publishes, from its oldest publish queued to Redis' answer."
            );
            metrics::describe_counter!(
                name("reconnects_total"),
                "Times the broker connected again after losing Redis."
            );
            metrics::describe_counter!(name("errors_total"), "Failed Redis operations, by op.");
            let errors = name("errors_total");
            RedisMetrics {
                handles: Handles {
                    published: metrics::counter!(name("published_total")),
                    publish_seconds: metrics::histogram!(name("publish_duration_seconds")),
                    reconnects: metrics::counter!(name("reconnects_total")),
                    errors: OPS.map(|op| metrics::counter!(errors.clone(), "op" => op)),
                },
            }
        }
        #[cfg(not(feature = "metrics"))]
        RedisMetrics {}
    }

    /// `count` publishes of one pipeline were accepted, `took` after the
    /// oldest was queued.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn published(&self, count: u64, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            if count > 0 {
                self.handles.published.increment(count);
            }
            self.handles.publish_seconds.record(took.as_secs_f64());
        }
    }

    pub(crate) fn reconnected(&self) {
        #[cfg(feature = "metrics")]
        self.handles.reconnects.increment(1);
    }

    /// `count` operations of kind `op` failed.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn failed(&self, op: Op, count: u64) {
        #[cfg(feature = "metrics")]
        if count > 0 {
            self.handles.errors[op as usize].increment(count);
        }
    }
}
