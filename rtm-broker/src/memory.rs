//! [`MemoryHub`]: an in-process broker, with history: the servers of one
//! process that share a hub form a cluster (tests, a single server that
//! wants history without Redis).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtm_core::{Envelope, StreamOptions, StreamPosition, Topic};

use crate::outbox::{self, Outbox};
use crate::{BoxFuture, Broker, BrokerError, BrokerEvent, BrokerSink, BrokerState, StreamRead};

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
    /// The streams kept (history).
    streams: HashMap<Topic, Stream>,
    /// When each stream was last seen to expire, oldest first: a few are
    /// looked at on every use of a stream, so the expired ones are
    /// forgotten even if nobody asks for them again.
    expiry: VecDeque<(Instant, Topic)>,
    /// Messages on their way to sinks, in the order they were published
    /// (so a stream's events reach every sink in offset order).
    outbox: Outbox<(BrokerSink, BrokerEvent)>,
}

/// One stream's history.
struct Stream {
    epoch: String,
    top: u64,
    /// Kept envelopes (positions in them) by offset, oldest first.
    events: VecDeque<(u64, Bytes)>,
    /// When the stream and its position are forgotten.
    expires: Instant,
}

impl Stream {
    fn new(top: u64, ttl: Duration) -> Self {
        Stream {
            epoch: crate::new_epoch(),
            top,
            events: VecDeque::new(),
            expires: Instant::now() + ttl,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition::new(self.top, self.epoch.clone())
    }
}

impl HubInner {
    /// The stream of `topic`, made under a new epoch when the hub does
    /// not have it (or it expired).
    fn stream(&mut self, topic: &Topic, ttl: Duration) -> &mut Stream {
        let now = Instant::now();
        self.sweep(now, 2);
        if !self.streams.contains_key(topic) {
            self.expiry.push_back((now + ttl, topic.clone()));
        }
        let stream = self
            .streams
            .entry(topic.clone())
            .or_insert_with(|| Stream::new(0, ttl));
        if stream.expires <= now {
            *stream = Stream::new(0, ttl);
        }
        stream
    }

    /// Forgets up to `max` streams found expired at the front of `expiry`
    /// (one still alive goes to the back with its new time).
    fn sweep(&mut self, now: Instant, max: usize) {
        for _ in 0..max {
            match self.expiry.front() {
                Some((at, _)) if *at <= now => {}
                _ => return,
            }
            let Some((_, topic)) = self.expiry.pop_front() else {
                return;
            };
            match self.streams.get(&topic).map(|s| s.expires) {
                Some(expires) if expires <= now => {
                    self.streams.remove(&topic);
                }
                Some(expires) => self.expiry.push_back((expires, topic)),
                None => {}
            }
        }
    }

    /// Queues `payload` for every member subscribed to `topic`.
    fn queue(&mut self, topic: &Topic, payload: &Bytes) {
        for member in self.members.values() {
            if let (true, Some(sink)) = (member.topics.contains(topic), &member.sink) {
                self.outbox.push((
                    sink.clone(),
                    BrokerEvent::Message {
                        topic: topic.clone(),
                        payload: payload.clone(),
                    },
                ));
            }
        }
    }
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

    /// Streams kept in history, expired ones not yet forgotten included
    /// (each use of a stream forgets up to two that expired).
    pub fn stream_count(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.streams.len())
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

    /// Forgets every stream, as a store that lost its data would (a
    /// flushed or failed-over Redis): the next event of each starts a new
    /// epoch. For tests of recovery.
    pub fn lose_streams(&self) {
        lock(&self.inner).streams.clear();
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

/// One server's handle on a [`MemoryHub`]. Publishing delivers synchronously
/// to the sinks, unless another thread is delivering at that moment: it
/// then delivers these too, after its own (so every sink gets messages in
/// the order they were published).
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

fn lock(hub: &Mutex<HubInner>) -> MutexGuard<'_, HubInner> {
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBroker {
    fn with<T>(&self, f: impl FnOnce(&mut HubInner) -> T) -> Result<T, BrokerError> {
        let hub = self
            .hub
            .upgrade()
            .ok_or_else(|| BrokerError::unavailable("the hub is gone"))?;
        let mut inner = lock(&hub);
        Ok(f(&mut inner))
    }

    /// Runs `f` (which may queue messages), then hands the outbox to the
    /// sinks outside the lock, unless someone already is (they hand these
    /// over too): messages reach sinks in the order they were queued.
    fn send<T>(&self, f: impl FnOnce(&mut HubInner) -> T) -> Result<T, BrokerError> {
        let hub = self
            .hub
            .upgrade()
            .ok_or_else(|| BrokerError::unavailable("the hub is gone"))?;
        let (result, drains) = {
            let mut inner = lock(&hub);
            let result = f(&mut inner);
            (result, inner.outbox.claim())
        };
        if drains {
            outbox::drain(
                || lock(&hub).outbox.next(),
                |(sink, event)| sink(event),
                || lock(&hub).outbox.abandon(),
            );
        }
        Ok(result)
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
        let result = self.send(|inner| inner.queue(topic, &payload));
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

    fn has_history(&self) -> bool {
        true
    }

    fn publish_to_stream(
        &self,
        topic: &Topic,
        payload: Bytes,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let result = self.send(|inner| {
            let stream = inner.stream(topic, options.ttl);
            let position = StreamPosition::new(stream.top + 1, stream.epoch.clone());
            let kept = Envelope::splice_position(&payload, &position)
                .map_err(|e| BrokerError::failed(format!("not an envelope: {e}")))?;
            stream.top = position.offset;
            stream.events.push_back((position.offset, kept.clone()));
            while stream.events.len() > options.size {
                stream.events.pop_front();
            }
            stream.expires = Instant::now() + options.ttl;
            inner.queue(topic, &kept);
            Ok(position)
        });
        Box::pin(std::future::ready(result.and_then(|r| r)))
    }

    fn read_stream(
        &self,
        topic: &Topic,
        from: u64,
        limit: usize,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamRead, BrokerError>> {
        let result = self.with(|inner| {
            let stream = inner.stream(topic, options.ttl);
            StreamRead {
                top: stream.position(),
                envelopes: stream
                    .events
                    .iter()
                    .filter(|(offset, _)| *offset >= from)
                    .take(limit)
                    .map(|(_, kept)| kept.clone())
                    .collect(),
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn reset_stream(
        &self,
        topic: &Topic,
        options: StreamOptions,
    ) -> BoxFuture<'_, Result<StreamPosition, BrokerError>> {
        let result = self.with(|inner| {
            let stream = inner.stream(topic, options.ttl);
            *stream = Stream::new(stream.top, options.ttl);
            stream.position()
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
