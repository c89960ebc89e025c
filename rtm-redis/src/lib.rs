//! The RTM broker over Redis pub/sub: [`RedisBroker`] implements
//! [`rtm_broker::Broker`] for tokio and for smol/async-std alike.
//!
//! # Runtimes
//!
//! Feature `tokio` (default) or `smol` (also for async-std, which shares
//! smol's async-io reactor) selects the `redis` crate's IO and provides a
//! [`Runtime`]: `TokioRuntime` or `SmolRuntime` (from `rtm-runtime`). The broker needs only
//! *spawn* and *sleep* from it; another executor is a ten-line [`Runtime`]
//! impl. With both features on, `redis` uses tokio IO when called on a
//! thread with a current tokio runtime and smol IO otherwise; the broker opens
//! its connections inside the task it spawned, so they follow the runtime you
//! passed. (An application that knows better can call
//! `redis::aio::prefer_tokio()` or `prefer_smol()` once at startup.)
//!
//! # Connections
//!
//! Two RESP3 connections per broker, both opened by one background task:
//! a multiplexed one for `PUBLISH` and a dedicated one for subscriptions,
//! whose messages arrive as push frames. With [`RedisBrokerConfig::sharded`]
//! the commands are `SPUBLISH`/`SSUBSCRIBE`/`SUNSUBSCRIBE` (Redis 7+). With
//! [`RedisBrokerConfig::cluster`] both connections are Redis Cluster
//! connections that send each command to the node owning the topic's slot;
//! publishes are pipelined per slot, and probes go to one topic per shard.
//!
//! # TLS (`rediss://`)
//!
//! The URL may be `rediss://` (a managed Redis, or one behind stunnel) on
//! either runtime: rustls on the ring provider,
//! trusting the system's root certificates, or only the certificate
//! authority given with [`RedisBrokerConfig::with_tls_root_cert`]. A
//! certificate the broker does not trust keeps it `Down`, its reason naming
//! the certificate error, and retrying.
//!
//! ```
//! use rtm_redis::RedisBrokerConfig;
//!
//! # let pem = "-----BEGIN CERTIFICATE-----\n…";
//! let config = RedisBrokerConfig::new("rediss://:s3cret@redis.internal:6380", "chat", "server-1")
//!     .with_tls_root_cert(pem);
//! assert!(config.tls_root_cert.is_some());
//! ```
//!
//! # Failure handling
//!
//! The broker keeps the set of topics the server wants. When the pub/sub
//! connection drops, a command on it fails, or a probe goes missing, the task
//! marks the broker `Down` (the sink gets `State(Down)`, publish returns
//! [`BrokerError::Unavailable`](rtm_broker::BrokerError::Unavailable)
//! at once and counts nothing as sent), drops both connections, and
//! reconnects with capped exponential backoff. After a reconnect it subscribes
//! every wanted topic again, verifies the new subscription with a probe, and
//! only then reports `State(Up)`. While down, subscribe/unsubscribe only
//! update the wanted set, and subscribe answers `Unavailable` (nothing is
//! confirmed, so a server must not promise delivery on it).
//!
//! # Probes
//!
//! A TCP connection can survive while its subscriptions do not (a Redis
//! restart behind a proxy, a failover), and then health checks stay green
//! while nothing arrives. So every [`RedisBrokerConfig::probe_interval`] the
//! broker publishes a unique token on its own control topic
//! ([`rtm_core::Topic::control`]), which it subscribes to itself, and expects
//! it back on the pub/sub connection within
//! [`RedisBrokerConfig::probe_timeout`]; if not, it reconnects as above.
//! Probes never reach the sink.
//!
//! # At most once
//!
//! Redis pub/sub does not store messages: what is published while a
//! subscription is down is lost. Nothing is delivered twice: only one pub/sub
//! connection is current at a time, and every connection carries a
//! generation number; pushes from a replaced connection are dropped.
//!
//! # Observability
//!
//! [`Broker::state`](rtm_broker::Broker::state), the `State` events, and
//! [`RedisBroker::stats`] (published, publish errors, received, reconnects,
//! probes sent and failed).

#![warn(missing_docs)]

mod broker;
mod config;
mod conn;
mod history;
mod metrics;
mod publisher;
mod shared;
mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("rtm-redis needs a runtime: enable feature `tokio` or `smol`");

pub use broker::{BrokerStats, RedisBroker};
pub use config::RedisBrokerConfig;
pub use rtm_runtime::Runtime;
#[cfg(feature = "smol")]
pub use rtm_runtime::SmolRuntime;
#[cfg(feature = "tokio")]
pub use rtm_runtime::TokioRuntime;
