//! # rtm-broker
//!
//! The broker seam: how the servers of one cluster exchange Publish and
//! Push. A crate of its own, so that writing a broker (NATS, Postgres, …)
//! depends on this and `rtm-core`'s topic names, nothing else; `rtm-redis`
//! is one, `rtm-driver` the server that uses them.
//!
//! Defined once, runtime-neutral: its futures are plain `std` futures and
//! incoming messages are handed to a [`BrokerSink`] callback that the adapter
//! supplies (it forwards them into its own event loop, whatever the runtime).
//!
//! Delivery is **at most once**: a message published while a receiving
//! server's subscription is down is lost, never replayed or duplicated.
//! While the broker is known to be down, [`Broker::publish`] fails with
//! [`BrokerError::Unavailable`] instead of pretending.
//!
//! A broker may also keep **history** ([`Broker::has_history`]): streams
//! of events with positions ([`rtm_core::StreamPosition`]), appended and
//! published in one atomic step ([`Broker::publish_to_stream`]) and read
//! back from an offset ([`Broker::read_stream`]), from which a client that
//! was away recovers what it missed (`rtm_core::recovery`). [`MemoryHub`]
//! keeps them in memory; `rtm-redis` in Redis streams.

#![warn(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use rtm_core::{StreamOptions, StreamPosition, Topic};

mod memory;
mod outbox;

pub use memory::{MemoryBroker, MemoryHub};

/// A boxed `Send` future, as the broker trait returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The health of a broker connection, observable by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    /// Connected, subscriptions in place (and, where checked, verified).
    Up,
    /// Lost or failing; reconnecting. Sends fail until it is `Up` again.
    Down {
        /// Why, for logs and health endpoints.
        reason: String,
    },
}

/// What a broker hands to its server. Exhaustive on purpose: the server
/// matches every variant, so one added later is a compile error there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// A message arrived on a subscribed topic.
    Message {
        /// The topic it came on.
        topic: Topic,
        /// The encoded [`rtm_core::Envelope`].
        payload: Bytes,
    },
    /// The broker's state changed. After `Up` following `Down`, every
    /// topic the broker had is subscribed again.
    State(BrokerState),
}

/// Receives the broker's events; called from the broker's own task, so it must not block.
pub type BrokerSink = Arc<dyn Fn(BrokerEvent) + Send + Sync>;

/// What caused a [`BrokerError`] (the broker client's own error), shared:
/// one failure may answer several operations.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a broker operation failed: the kind, a reason for a person, and the
/// underlying error when there is one ([`std::error::Error::source`], so an
/// `anyhow` or `eyre` report shows the whole chain).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is known to be down; nothing was sent.
    #[error("broker unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<Cause>,
    },
    /// The operation itself failed.
    #[error("broker error: {reason}")]
    Failed {
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<Cause>,
    },
}

impl BrokerError {
    /// The broker is known to be down.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        BrokerError::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// The operation failed.
    pub fn failed(reason: impl Into<String>) -> Self {
        BrokerError::Failed {
            reason: reason.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    ///
    /// ```
    /// use std::error::Error;
    /// let io = std::io::Error::other("connection reset");
    /// let err = rtm_broker::BrokerError::unavailable("PUBLISH failed").caused_by(io);
    /// assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("connection reset"));
    /// ```
    #[must_use]
    pub fn caused_by(self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        let cause: Cause = Arc::new(cause);
        match self {
            BrokerError::Unavailable { reason, .. } => BrokerError::Unavailable {
                reason,
                source: Some(cause),
            },
            BrokerError::Failed { reason, .. } => BrokerError::Failed {
                reason,
                source: Some(cause),
            },
        }
    }

    /// What happened, without the kind's prefix (for a message to a person).
    ///
    /// ```
    /// let err = rtm_broker::BrokerError::failed("invalid Redis URL 'x': it has no scheme");
    /// assert_eq!(err.reason(), "invalid Redis URL 'x': it has no scheme");
    /// ```
    pub fn reason(&self) -> &str {
        match self {
            BrokerError::Unavailable { reason, .. } | BrokerError::Failed { reason, .. } => reason,
        }
    }

    /// Whether the broker was known to be down.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BrokerError::Unavailable { .. })
    }
}

/// A message bus between the servers of a cluster.
pub trait Broker: Send + Sync + 'static {
    /// Starts delivering messages (and state changes) to `sink`. Called once, before any other method.
    fn start(&self, sink: BrokerSink) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Sends `payload` to every server subscribed to `topic`.
    ///
    /// Order: callers start several publishes before awaiting them, so an
    /// implementation must take the message, in call order, when `publish`
    /// is called (not when its future is first polled).
    fn publish(&self, topic: &Topic, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Starts receiving `topic`. Kept across reconnects until unsubscribed.
    ///
    /// Resolves `Ok` only once the topic is subscribed (the broker confirmed
    /// it): a server acknowledges a client's subscription then, promising
    /// that the next event on it arrives. `Err` when that cannot be
    /// confirmed now (not connected, the command failed).
    fn subscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Stops receiving `topic`.
    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>>;
    /// Starts receiving each of `topics` (distinct), as [`Broker::subscribe`]
    /// does for one: one result per topic, in the same order.
    ///
    /// The server hands over the topics that waited together (up to 512),
    /// for instance when many users sign in at once after a restart. The
    /// default subscribes them one after another; a broker with a round
    /// trip per command should send them together (`RedisBroker` pipelines
    /// them, so a batch costs one round trip, not one per topic).
    fn subscribe_many<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for topic in topics {
                results.push(self.subscribe(topic).await);
            }
            results
        })
    }
    /// Stops receiving each of `topics` (distinct), as
    /// [`Broker::unsubscribe`] does for one: one result per topic, in
    /// order. The default unsubscribes them one after another.
    fn unsubscribe_many<'a>(
        &'a self,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Vec<Result<(), BrokerError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for topic in topics {
                results.push(self.unsubscribe(topic).await);
            }
            results
        })
    }
    /// The current state.
    fn state(&self) -> BrokerState;

    /// Whether this broker keeps history: [`Broker::publish_to_stream`],
    /// [`Broker::read_stream`] and [`Broker::reset_stream`] work. Default
    /// `false`.
    fn has_history(&self) -> bool {
        false
    }

    /// Appends `payload` (an encoded [`rtm_core::Envelope`]) to `topic`'s
    /// stream with the next offset written into it
    /// ([`rtm_core::Envelope::splice_position`]), and publishes that to
    /// `topic`, as one atomic step: every subscriber gets a stream's events
    /// in offset order, and what is kept is what was published. Returns
    /// the event's position. The stream keeps the newest `options.size`
    /// events, and it and its position live `options.ttl` after its last
    /// event; a stream the store no longer has starts again at offset 1
    /// under a new epoch.
    ///
    /// Taken in call order, as [`Broker::publish`]. The default fails:
    /// this broker keeps no history.
    fn publish_to_stream(
        &self,
        topic: &Topic,
        payload: Bytes,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let _ = (topic, payload, options);
        Box::pin(std::future::ready(Err(BrokerError::failed(
            "this broker keeps no history",
        ))))
    }

    /// Reads `topic`'s stream: its position now, and its kept events (the
    /// envelopes as published, positions in them) from offset `from` on,
    /// oldest first, at most `limit`. A stream the store does not have is
    /// made, empty, under a new epoch that lives `options.ttl` (so the
    /// position a reader is given holds until the stream's next event).
    /// The default fails: this broker keeps no history.
    fn read_stream(
        &self,
        topic: &Topic,
        from: u64,
        limit: usize,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamRead, BrokerError>> {
        let _ = (topic, from, limit, options);
        Box::pin(std::future::ready(Err(BrokerError::failed(
            "this broker keeps no history",
        ))))
    }

    /// Gives `topic`'s stream a new epoch, its events dropped, its offset
    /// kept: for a client found ahead of the stream (the store lost its
    /// newest events), so no offset names two events. Returns the new
    /// position. The default fails: this broker keeps no history.
    fn reset_stream(
        &self,
        topic: &Topic,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let _ = (topic, options);
        Box::pin(std::future::ready(Err(BrokerError::failed(
            "this broker keeps no history",
        ))))
    }
}

/// A fresh epoch for a stream a store makes or remakes: unique in this
/// process and unlikely to repeat across processes (the clock's
/// nanoseconds and a counter, in hex: a valid
/// [`StreamPosition::is_valid_epoch`]).
///
/// ```
/// let (a, b) = (rtm_broker::new_epoch(), rtm_broker::new_epoch());
/// assert_ne!(a, b);
/// assert!(rtm_core::StreamPosition::is_valid_epoch(&a));
/// ```
pub fn new_epoch() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{nanos:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What [`Broker::read_stream`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    /// The stream's epoch and newest offset when it was read.
    pub top: StreamPosition,
    /// Kept envelopes from the offset asked for, oldest first, each with
    /// its position in its header.
    pub envelopes: Vec<Bytes>,
}
