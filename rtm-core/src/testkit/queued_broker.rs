//! [`QueuedBroker`]: a sans-IO broker for simulated clusters.
//!
//! It holds which server is subscribed to which topic and a FIFO queue of
//! published envelopes. Nothing moves until someone pops a [`Delivery`] and
//! hands it to the servers it names, so a test decides exactly when (and in
//! which interleaving) broker traffic happens.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::envelope::Envelope;
use crate::server::BrokerCommand;
use crate::stream::StreamPosition;
use crate::topic::Topic;

/// One published message on its way to the servers that were subscribed when it was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The topic it was published on.
    pub topic: Topic,
    /// The encoded [`crate::Envelope`].
    pub payload: Bytes,
    /// Indexes of the receiving servers, ascending (the publisher included
    /// when it is subscribed, as with Redis; the server skips its own envelopes).
    pub to: Vec<usize>,
}

/// An in-memory, step-by-step broker: topic → subscribed servers, plus a FIFO
/// queue of messages not yet delivered.
///
/// ```
/// use rtm_core::testkit::QueuedBroker;
/// use rtm_core::{BrokerCommand, Topic};
///
/// let mut broker = QueuedBroker::new();
/// let alice = Topic::user("rtm", "alice");
/// broker.apply(1, BrokerCommand::Subscribe(alice.clone()));
/// broker.apply(0, BrokerCommand::Publish { topic: alice.clone(), payload: "x".into(), stream: None });
/// let delivery = broker.pop().unwrap();
/// assert_eq!(delivery.to, vec![1]);
/// assert!(broker.pop().is_none());
/// ```
///
/// It keeps history too, as a store would: a publish with `stream` is
/// appended to its topic's stream under the next offset (the position
/// written into the envelope, as `Envelope::splice_position` does) and
/// published with it; epochs are `q<n>`, made in order (deterministic);
/// streams keep their `size` newest events and never expire (no clock).
#[derive(Debug, Default)]
pub struct QueuedBroker {
    subscriptions: BTreeMap<Topic, BTreeSet<usize>>,
    queue: VecDeque<Delivery>,
    streams: BTreeMap<Topic, Stream>,
    epochs: u64,
}

/// One topic's history.
#[derive(Debug)]
struct Stream {
    position: StreamPosition,
    events: VecDeque<(u64, Bytes)>,
}

impl QueuedBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries out a command of server `from`. Subscribing twice is idempotent
    /// (servers re-announce topics after a reconnect). A publish with no
    /// subscriber is dropped, as a real broker would.
    pub fn apply(&mut self, from: usize, command: BrokerCommand) {
        match command {
            BrokerCommand::Subscribe(topic) => {
                self.subscriptions.entry(topic).or_default().insert(from);
            }
            BrokerCommand::Unsubscribe(topic) => {
                if let Some(servers) = self.subscriptions.get_mut(&topic) {
                    servers.remove(&from);
                    if servers.is_empty() {
                        self.subscriptions.remove(&topic);
                    }
                }
            }
            BrokerCommand::Publish {
                topic,
                payload,
                stream,
            } => {
                let payload = match stream {
                    None => payload,
                    Some(options) => match self.append(&topic, &payload, options.size) {
                        Some(kept) => kept,
                        // Not an envelope: a store refuses it, nothing is sent.
                        None => return,
                    },
                };
                // Receivers are fixed at publish time, as with Redis PUBLISH.
                let to: Vec<usize> = self
                    .subscriptions
                    .get(&topic)
                    .map(|servers| servers.iter().copied().collect())
                    .unwrap_or_default();
                if !to.is_empty() {
                    self.queue.push_back(Delivery { topic, payload, to });
                }
            }
            // A read is answered from `read_stream` by whoever holds the
            // request (the cluster), with the answer going back to the server.
            BrokerCommand::ReadStream(_) => {}
        }
    }

    /// Appends `payload` to `topic`'s stream (made under a new epoch if
    /// missing), keeping `size` events; the envelope with its position.
    fn append(&mut self, topic: &Topic, payload: &Bytes, size: usize) -> Option<Bytes> {
        let stream = match self.streams.get_mut(topic) {
            Some(stream) => stream,
            None => {
                self.epochs += 1;
                let fresh = Stream {
                    position: StreamPosition::new(0, format!("q{}", self.epochs)),
                    events: VecDeque::new(),
                };
                self.streams.entry(topic.clone()).or_insert(fresh)
            }
        };
        let next = StreamPosition::new(stream.position.offset + 1, stream.position.epoch.clone());
        let kept = Envelope::splice_position(payload, &next).ok()?;
        stream.position = next;
        stream
            .events
            .push_back((stream.position.offset, kept.clone()));
        while stream.events.len() > size.max(1) {
            stream.events.pop_front();
        }
        Some(kept)
    }

    /// `topic`'s stream: its position and its kept envelopes from offset
    /// `from` on, at most `limit` (a stream it does not have: offset 0
    /// under a new epoch, kept).
    pub fn read_stream(
        &mut self,
        topic: &Topic,
        from: u64,
        limit: usize,
    ) -> (StreamPosition, Vec<Bytes>) {
        if !self.streams.contains_key(topic) {
            self.epochs += 1;
            let fresh = Stream {
                position: StreamPosition::new(0, format!("q{}", self.epochs)),
                events: VecDeque::new(),
            };
            self.streams.insert(topic.clone(), fresh);
        }
        let stream = &self.streams[topic];
        let events = stream
            .events
            .iter()
            .filter(|(offset, _)| *offset >= from)
            .take(limit)
            .map(|(_, kept)| kept.clone())
            .collect();
        (stream.position.clone(), events)
    }

    /// Carries out a sync's stream operation: a read, or a reset (a new
    /// epoch, the offset kept, the events dropped; answered as the new
    /// position with no events).
    pub fn carry_out(
        &mut self,
        request: &crate::sync::StreamReadRequest,
    ) -> (StreamPosition, Vec<Bytes>) {
        match request.op {
            crate::sync::StreamOp::Read { from, limit } => {
                self.read_stream(&request.topic, from, limit)
            }
            crate::sync::StreamOp::Reset => {
                let top = self
                    .streams
                    .get(&request.topic)
                    .map_or(0, |s| s.position.offset);
                self.epochs += 1;
                let fresh = Stream {
                    position: StreamPosition::new(top, format!("q{}", self.epochs)),
                    events: VecDeque::new(),
                };
                let position = fresh.position.clone();
                self.streams.insert(request.topic.clone(), fresh);
                (position, Vec::new())
            }
        }
    }

    /// Loses the newest `n` events of `topic`'s stream, its epoch kept (a
    /// failover that lost acknowledged writes).
    pub fn lose_newest(&mut self, topic: &Topic, n: u64) {
        if let Some(stream) = self.streams.get_mut(topic) {
            for _ in 0..n {
                if stream.events.pop_back().is_some() {
                    stream.position.offset = stream.position.offset.saturating_sub(1);
                }
            }
        }
    }

    /// Forgets every stream, as a store that lost its data would.
    pub fn lose_streams(&mut self) {
        self.streams.clear();
    }

    /// The oldest message not yet delivered.
    pub fn pop(&mut self) -> Option<Delivery> {
        self.queue.pop_front()
    }

    /// How many messages wait in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The servers subscribed to `topic`, ascending.
    pub fn subscribers(&self, topic: &Topic) -> impl Iterator<Item = usize> + '_ {
        self.subscriptions.get(topic).into_iter().flatten().copied()
    }

    /// The topics server `server` is subscribed to, in order.
    pub fn topics_of(&self, server: usize) -> impl Iterator<Item = &Topic> + '_ {
        self.subscriptions
            .iter()
            .filter(move |(_, servers)| servers.contains(&server))
            .map(|(topic, _)| topic)
    }

    /// How many (topic, server) subscriptions exist in total.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribing_the_last_server_forgets_the_topic() {
        let mut broker = QueuedBroker::new();
        let t = Topic::push("rtm", "score", "m7");
        broker.apply(0, BrokerCommand::Subscribe(t.clone()));
        broker.apply(0, BrokerCommand::Subscribe(t.clone()));
        broker.apply(2, BrokerCommand::Subscribe(t.clone()));
        assert_eq!(broker.subscription_count(), 2);
        broker.apply(0, BrokerCommand::Unsubscribe(t.clone()));
        broker.apply(2, BrokerCommand::Unsubscribe(t.clone()));
        assert_eq!(broker.subscription_count(), 0);
        assert_eq!(broker.topics_of(0).count(), 0);
    }

    #[test]
    fn deliveries_leave_in_publish_order() {
        let mut broker = QueuedBroker::new();
        let t = Topic::user("rtm", "bob");
        broker.apply(1, BrokerCommand::Subscribe(t.clone()));
        for payload in ["1", "2", "3"] {
            broker.apply(
                0,
                BrokerCommand::Publish {
                    topic: t.clone(),
                    payload: payload.into(),
                    stream: None,
                },
            );
        }
        let order: Vec<Bytes> = std::iter::from_fn(|| broker.pop())
            .map(|d| d.payload)
            .collect();
        assert_eq!(order, vec!["1", "2", "3"]);
    }

    #[test]
    fn a_publish_without_subscribers_is_dropped() {
        let mut broker = QueuedBroker::new();
        broker.apply(
            0,
            BrokerCommand::Publish {
                topic: Topic::user("rtm", "nobody"),
                payload: "x".into(),
                stream: None,
            },
        );
        assert_eq!(broker.pending(), 0);
    }
}
