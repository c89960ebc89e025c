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

#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use rtm_core::Topic;

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
}

/// An in-process broker: servers in one process that share a [`MemoryHub`] form a cluster.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use rtm_broker::{Broker, BrokerEvent, MemoryHub};
/// use rtm_core::Topic;
///
/// let hub = MemoryHub::new();
/// let (a, b) = (hub.broker(), hub.broker());
/// let got = Arc::new(Mutex::new(Vec::new()));
/// let sink = got.clone();
/// // The futures of MemoryBroker complete at once; poll them with any executor.
/// let block = |f| futures_lite_block_on(f);
/// # fn futures_lite_block_on<T>(f: rtm_broker::BoxFuture<'_, T>) -> T {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = f;
/// #     match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) { Poll::Ready(v) => v, Poll::Pending => unreachable!() }
/// # }
/// block(b.start(Arc::new(move |e| sink.lock().unwrap().push(e)))).unwrap();
/// block(b.subscribe(&Topic::user("rtm", "alice"))).unwrap();
/// block(a.publish(&Topic::user("rtm", "alice"), "x".into())).unwrap();
/// assert!(matches!(&got.lock().unwrap()[..], [BrokerEvent::State(_), BrokerEvent::Message { .. }]));
/// ```
#[derive(Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubInner>>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = self.inner.lock().map_or(0, |inner| inner.members.len());
        f.debug_struct("MemoryHub")
            .field("members", &members)
            .finish()
    }
}

#[derive(Default)]
struct HubInner {
    next: u64,
    members: HashMap<u64, Member>,
}

struct Member {
    sink: Option<BrokerSink>,
    topics: HashSet<Topic>,
}

impl MemoryHub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker for one more server of this hub's cluster.
    pub fn broker(&self) -> MemoryBroker {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next += 1;
        let id = inner.next;
        inner.members.insert(
            id,
            Member {
                sink: None,
                topics: HashSet::new(),
            },
        );
        MemoryBroker {
            id,
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// Every topic any member is subscribed to.
    pub fn topics(&self) -> HashSet<Topic> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }
}

/// One server's handle on a [`MemoryHub`]. Publishing delivers synchronously to the sinks.
pub struct MemoryBroker {
    id: u64,
    hub: Weak<Mutex<HubInner>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    fn with<T>(&self, f: impl FnOnce(&mut HubInner) -> T) -> Result<T, BrokerError> {
        let hub = self
            .hub
            .upgrade()
            .ok_or_else(|| BrokerError::unavailable("the hub is gone"))?;
        let mut inner = hub.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut inner))
    }
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        let _ = self.with(|inner| inner.members.remove(&self.id));
    }
}

impl Broker for MemoryBroker {
    fn start(&self, sink: BrokerSink) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.with(|inner| {
            if let Some(m) = inner.members.get_mut(&self.id) {
                m.sink = Some(sink.clone());
            }
        });
        if result.is_ok() {
            sink(BrokerEvent::State(BrokerState::Up));
        }
        Box::pin(std::future::ready(result))
    }

    fn publish(&self, topic: &Topic, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let sinks = self.with(|inner| {
            inner
                .members
                .values()
                .filter(|m| m.topics.contains(topic))
                .filter_map(|m| m.sink.clone())
                .collect::<Vec<_>>()
        });
        // Call sinks outside the lock: a sink may publish in turn.
        let result = sinks.map(|sinks| {
            for sink in sinks {
                sink(BrokerEvent::Message {
                    topic: topic.clone(),
                    payload: payload.clone(),
                });
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.with(|inner| {
            if let Some(m) = inner.members.get_mut(&self.id) {
                m.topics.insert(topic.clone());
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.with(|inner| {
            if let Some(m) = inner.members.get_mut(&self.id) {
                m.topics.remove(topic);
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn state(&self) -> BrokerState {
        if self.hub.upgrade().is_some() {
            BrokerState::Up
        } else {
            BrokerState::Down {
                reason: "the hub is gone".into(),
            }
        }
    }
}
