//! What the connections of one server share: [`Router`].
//!
//! The router holds every connection's info and the indexes that address
//! them — user → connections, (event, tag) → connections, broker topic →
//! what it feeds — and does the fan-out of Emit, Publish and Push: each event
//! is encoded once and the same [`Bytes`] handed to every target. It does no
//! IO: a target is whatever handle `T` the adapter registered the connection
//! with (a queue, a channel, `()` in tests), given to a `deliver` callback.
//!
//! Fan-out takes `&self`, so an adapter can keep the router behind a
//! read-write lock and let Emits on several cores run at once; connections
//! joining, subscribing and leaving take `&mut self`.
//!
//! # Broker topics
//!
//! A topic is needed exactly while its set of local holders is non-empty,
//! so the sets are the reference counts: a method that creates a set returns
//! the topic to subscribe, one that empties a set returns the topic to
//! unsubscribe. A new topic starts *unconfirmed*: a subscription that
//! depends on it is acknowledged only once the broker confirms it
//! ([`Router::handle_topic_subscribed`]), so the first event after the
//! acknowledgement cannot be missed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{Limits, ServerConfig};
use crate::conn::{ConnId, ConnInfo};
use crate::envelope::{Envelope, EnvelopeError};
use crate::error::{ErrorCode, RtmError};
use crate::frame::{self, Args};
use crate::topic::Topic;

/// What an incoming broker topic delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    User(Arc<str>),
    Push(Arc<str>, Arc<str>),
}

#[derive(Debug)]
struct TopicEntry {
    target: Target,
    /// The broker confirmed the subscription.
    confirmed: bool,
}

#[derive(Debug)]
struct Entry<T> {
    info: Arc<ConnInfo>,
    handle: T,
    /// Emit reaches it (authenticated, or on a server without auth).
    open: bool,
    subs: HashSet<(Arc<str>, Arc<str>)>,
}

/// What [`Router::subscribe`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The tags this connection did not hold before (what undoing removes).
    pub added: Vec<String>,
    /// Topics that did not exist: subscribe them on the broker.
    pub new_topics: Vec<Topic>,
    /// Topics of this subscription the broker has not confirmed yet (the new
    /// ones, and those another connection's subscribe is waiting for):
    /// acknowledge once every one is confirmed.
    pub unconfirmed: Vec<Topic>,
}

/// The indexes and fan-out shared by a server's connections. See the
/// [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use rtm_core::{Args, ConnId, ConnInfo, ConnMeta, Router, ServerConfig};
///
/// let mut router: Router<&str> = Router::new(&ServerConfig::new("s1"));
/// for (n, name) in [(1, "tab-1"), (2, "tab-2")] {
///     let info = Arc::new(ConnInfo { id: ConnId::from_u64(n), meta: ConnMeta::default(), identity: None });
///     router.insert(info, name, true);
/// }
/// let mut got = Vec::new();
/// let args = Args::encode(&("Hello from server!",)).unwrap();
/// let sent = router.emit("alert", |_| true, &args, |_, target, frame| got.push((*target, frame.clone()))).unwrap();
/// assert_eq!(sent, 2);
/// assert_eq!(&got[0].1[..], br#"{"event":"alert","data":["Hello from server!"]}"#);
/// ```
#[derive(Debug)]
pub struct Router<T> {
    namespace: Box<str>,
    server_id: Box<str>,
    requires_auth: bool,
    broker: bool,
    limits: Limits,
    broker_up: bool,
    conns: HashMap<ConnId, Entry<T>>,
    users: HashMap<Arc<str>, HashSet<ConnId>>,
    push: HashMap<Arc<str>, HashMap<Arc<str>, HashSet<ConnId>>>,
    topics: HashMap<Topic, TopicEntry>,
    seq: AtomicU64,
}

impl<T> Router<T> {
    /// An empty router for a server with this configuration.
    pub fn new(config: &ServerConfig) -> Self {
        Router {
            namespace: config.namespace.as_str().into(),
            server_id: config.server_id.as_str().into(),
            requires_auth: config.requires_auth(),
            broker: config.broker,
            limits: config.limits.clone(),
            broker_up: true,
            conns: HashMap::new(),
            users: HashMap::new(),
            push: HashMap::new(),
            topics: HashMap::new(),
            seq: AtomicU64::new(0),
        }
    }

    // ----- getters -----

    /// Connections held.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Every connection's info.
    pub fn connections(&self) -> impl Iterator<Item = &Arc<ConnInfo>> + '_ {
        self.conns.values().map(|e| &e.info)
    }

    /// One connection's info.
    pub fn conn_info(&self, conn: ConnId) -> Option<&Arc<ConnInfo>> {
        self.conns.get(&conn).map(|e| &e.info)
    }

    /// The handle a connection was registered with.
    pub fn handle(&self, conn: ConnId) -> Option<&T> {
        self.conns.get(&conn).map(|e| &e.handle)
    }

    /// The (event, tag) pairs a connection holds.
    pub fn subscription_count(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |e| e.subs.len())
    }

    /// The broker topics this server needs now.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.topics.keys()
    }

    /// Whether the broker confirmed this topic (`true` for a topic not held).
    pub fn is_confirmed(&self, topic: &Topic) -> bool {
        self.topics.get(topic).is_none_or(|t| t.confirmed)
    }

    /// Users with at least one connection here, and (event, tag) pairs with
    /// at least one holder.
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.users.len(), self.push.values().map(HashMap::len).sum())
    }

    /// Whether the broker is believed up.
    pub fn broker_up(&self) -> bool {
        self.broker_up
    }

    // ----- membership (&mut) -----

    /// Registers a connection with its delivery handle. `open`: Emit
    /// reaches it now (a server without auth); otherwise after [`Router::join`].
    pub fn insert(&mut self, info: Arc<ConnInfo>, handle: T, open: bool) {
        self.conns.insert(
            info.id,
            Entry {
                info,
                handle,
                open,
                subs: HashSet::new(),
            },
        );
    }

    /// An authenticated connection: its info now carries the identity, Emit
    /// reaches it, and Publish to its user does. Returns the user's topic when
    /// it is new (subscribe it on the broker; it is unconfirmed).
    pub fn join(&mut self, info: Arc<ConnInfo>) -> Option<Topic> {
        let conn = info.id;
        let user: Option<Arc<str>> = info.identity.as_ref().map(|i| i.user_id.clone());
        let entry = self.conns.get_mut(&conn)?;
        entry.info = info;
        entry.open = true;
        let user = user?;
        let set = self.users.entry(user.clone()).or_default();
        let first = set.is_empty();
        set.insert(conn);
        if !(first && self.broker) {
            return None;
        }
        let topic = Topic::user(&self.namespace, &user);
        self.topics.insert(
            topic.clone(),
            TopicEntry {
                target: Target::User(user),
                confirmed: false,
            },
        );
        Some(topic)
    }

    /// The topic of this user, if the server holds one of its connections.
    pub fn user_topic(&self, user: &str) -> Option<Topic> {
        let topic = Topic::user(&self.namespace, user);
        self.topics.contains_key(&topic).then_some(topic)
    }

    /// Removes a connection and everything it held; returns its handle and
    /// the topics no connection needs any more (unsubscribe them).
    pub fn remove(&mut self, conn: ConnId) -> Option<(T, Vec<Topic>)> {
        let entry = self.conns.remove(&conn)?;
        let mut gone = Vec::new();
        if let Some(user) = entry.info.user_id() {
            if let Some(set) = self.users.get_mut(user) {
                set.remove(&conn);
                if set.is_empty() {
                    self.users.remove(user);
                    let topic = Topic::user(&self.namespace, user);
                    if self.topics.remove(&topic).is_some() {
                        gone.push(topic);
                    }
                }
            }
        }
        for (event, tag) in &entry.subs {
            if let Some(topic) = self.unhold(event, tag, conn) {
                gone.push(topic);
            }
        }
        Some((entry.handle, gone))
    }

    /// Adds (event, tag) for each tag to this connection's subscriptions,
    /// all or nothing: past the connection's `max_subscriptions` or the
    /// server's `max_broker_topics` it adds none and fails with
    /// `rtm/too-many-subscriptions`. Costs O(tags).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        event: &str,
        tags: &[String],
    ) -> Result<Subscribed, RtmError> {
        let Some(entry) = self.conns.get(&conn) else {
            return Ok(Subscribed::default());
        };
        // Count first, change after: nothing half-made.
        let existing = self.push.get(event);
        let mut fresh: Vec<&str> = Vec::new();
        let mut new_keys = 0usize;
        let mut seen = HashSet::new();
        for tag in tags {
            if !seen.insert(tag.as_str()) {
                continue;
            }
            let holders = existing.and_then(|tags| tags.get(tag.as_str()));
            if holders.is_some_and(|h| h.contains(&conn)) {
                continue;
            }
            if holders.is_none() {
                new_keys += 1;
            }
            fresh.push(tag);
        }
        let held = entry.subs.len();
        let max = self.limits.max_subscriptions;
        if held + fresh.len() > max {
            return Err(RtmError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "{} more subscriptions would pass this connection's limit of {max} (it holds {held})",
                    fresh.len()
                ),
            ));
        }
        let max_topics = self.limits.max_broker_topics;
        if self.broker && self.topics.len() + new_keys > max_topics {
            return Err(RtmError::new(
                ErrorCode::TooManySubscriptions,
                format!("this server holds its limit of {max_topics} broker topics"),
            ));
        }
        let event_key: Arc<str> = match self.push.get_key_value(event) {
            Some((key, _)) => key.clone(),
            None => event.into(),
        };
        let mut result = Subscribed::default();
        for tag in fresh {
            let tags = self.push.entry(event_key.clone()).or_default();
            let tag_key: Arc<str> = match tags.get_key_value(tag) {
                Some((key, _)) => key.clone(),
                None => tag.into(),
            };
            let set = tags.entry(tag_key.clone()).or_default();
            let first = set.is_empty();
            set.insert(conn);
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.subs.insert((event_key.clone(), tag_key.clone()));
            }
            result.added.push(tag.to_owned());
            if first && self.broker {
                let topic = Topic::push(&self.namespace, event, tag);
                self.topics.insert(
                    topic.clone(),
                    TopicEntry {
                        target: Target::Push(event_key.clone(), tag_key),
                        confirmed: false,
                    },
                );
                result.new_topics.push(topic.clone());
                result.unconfirmed.push(topic);
            }
        }
        if self.broker {
            // Topics another connection created and the broker has yet to confirm.
            for tag in tags {
                let topic = Topic::push(&self.namespace, event, tag);
                if self.topics.get(&topic).is_some_and(|t| !t.confirmed)
                    && !result.unconfirmed.contains(&topic)
                {
                    result.unconfirmed.push(topic);
                }
            }
        }
        Ok(result)
    }

    /// Removes (event, tag) for each tag from this connection's
    /// subscriptions; returns the topics no connection needs any more.
    /// Costs O(tags).
    pub fn unsubscribe<S: AsRef<str>>(
        &mut self,
        conn: ConnId,
        event: &str,
        tags: &[S],
    ) -> Vec<Topic> {
        let mut gone = Vec::new();
        let Some(entry) = self.conns.get_mut(&conn) else {
            return gone;
        };
        let mut removed = Vec::new();
        for tag in tags {
            let key = (Arc::<str>::from(event), Arc::<str>::from(tag.as_ref()));
            if entry.subs.remove(&key) {
                removed.push(key);
            }
        }
        for (event, tag) in removed {
            if let Some(topic) = self.unhold(&event, &tag, conn) {
                gone.push(topic);
            }
        }
        gone
    }

    /// The broker answered a subscribe of `topic`: confirmed (`true`) or
    /// failed. A failed topic stays unconfirmed; the subscriptions waiting
    /// for it fail and undo themselves ([`Router::unsubscribe`]).
    pub fn handle_topic_subscribed(&mut self, topic: &Topic, ok: bool) {
        if let Some(entry) = self.topics.get_mut(topic) {
            entry.confirmed |= ok;
        }
    }

    /// The broker came up (`true`) or went down. While it is down, Publish
    /// and Push fail with `rtm/broker-unavailable`. Returns `true` when it
    /// came back up (re-announce [`Router::topics`] to a broker that does not
    /// resubscribe by itself).
    pub fn handle_broker_state(&mut self, up: bool) -> bool {
        let came_up = up && !self.broker_up;
        self.broker_up = up;
        came_up
    }

    // ----- fan-out (&self) -----

    /// Emit: hands the `event` frame to every open connection `filter`
    /// accepts. Returns how many.
    pub fn emit(
        &self,
        event: &str,
        mut filter: impl FnMut(&ConnInfo) -> bool,
        args: &Args,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<usize, RtmError> {
        self.check_name("event name", event)?;
        let frame = frame::encode_event(event, args)?;
        let mut sent = 0;
        for (id, entry) in &self.conns {
            if entry.open && filter(&entry.info) {
                deliver(*id, &entry.handle, &frame);
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Publish: hands the `event` frame to every local connection of `user`
    /// and returns, with that count, the broker command that carries it to
    /// the other servers (with a broker). Fails with `rtm/no-auth` on a
    /// server without authentication, `rtm/broker-unavailable` (nothing
    /// sent) while the broker is down, `rtm/bad-request` for a name over
    /// `max_name_bytes`.
    pub fn publish(
        &self,
        user: &str,
        event: &str,
        args: &Args,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<(usize, Option<BrokerPublish>), RtmError> {
        if !self.requires_auth {
            return Err(RtmError::new(
                ErrorCode::PublishWithoutAuth,
                "publish needs a server with authentication (user ids come from it)",
            ));
        }
        self.check_name("user id", user)?;
        self.check_name("event name", event)?;
        self.check_broker()?;
        let frame = frame::encode_event(event, args)?;
        let sent = self.deliver_user(user, &frame, &mut deliver);
        let command = self.broker.then(|| {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            BrokerPublish {
                topic: Topic::user(&self.namespace, user),
                payload: Envelope::encode(&self.server_id, seq, None, &frame),
            }
        });
        Ok((sent, command))
    }

    /// Push: hands the `event` frame once to every local connection holding
    /// (event, tag) for at least one of `tags`, and returns, with that
    /// count, one broker command per tag (with a broker). Fails as
    /// [`Router::publish`] does (but works without authentication).
    pub fn push(
        &self,
        event: &str,
        tags: &[String],
        args: &Args,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<(usize, Vec<BrokerPublish>), RtmError> {
        self.check_name("event name", event)?;
        tags.iter()
            .try_for_each(|tag| self.check_name("tag", tag))?;
        self.check_broker()?;
        let frame = frame::encode_event(event, args)?;
        let sent = self.deliver_push(event, tags, &frame, &mut deliver);
        let mut commands = Vec::new();
        if self.broker && !tags.is_empty() {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let listed = (tags.len() > 1).then_some(tags);
            let payload = Envelope::encode(&self.server_id, seq, listed, &frame);
            commands = tags
                .iter()
                .map(|tag| BrokerPublish {
                    topic: Topic::push(&self.namespace, event, tag),
                    payload: payload.clone(),
                })
                .collect();
        }
        Ok((sent, commands))
    }

    /// A message from the broker on `topic`: hands its frame to the local
    /// targets. Messages from this server itself are skipped (it delivered
    /// them already); a Push seen before on another of its tags is skipped
    /// (`recent` remembers them). Returns the number of local deliveries.
    pub fn handle_broker_message(
        &self,
        topic: &str,
        payload: Bytes,
        recent: &mut RecentPushes,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<usize, EnvelopeError> {
        let envelope = Envelope::decode(payload)?;
        if *envelope.origin == *self.server_id {
            return Ok(0);
        }
        let Some(entry) = self.topics.get(topic) else {
            return Ok(0);
        };
        Ok(match &entry.target {
            Target::User(user) => self.deliver_user(user, &envelope.frame, &mut deliver),
            Target::Push(event, tag) => match &envelope.tags {
                Some(tags) if tags.len() > 1 => {
                    if !recent.insert(&envelope.origin, envelope.seq) {
                        return Ok(0);
                    }
                    self.deliver_push(event, tags, &envelope.frame, &mut deliver)
                }
                _ => self.deliver_push(
                    event,
                    std::slice::from_ref(tag),
                    &envelope.frame,
                    &mut deliver,
                ),
            },
        })
    }

    // ----- internals -----

    fn check_name(&self, what: &str, name: &str) -> Result<(), RtmError> {
        let max = self.limits.max_name_bytes;
        if name.len() > max {
            return Err(RtmError::bad_request(format!(
                "the {what} is {} bytes, over the limit of {max}",
                name.len()
            )));
        }
        Ok(())
    }

    fn check_broker(&self) -> Result<(), RtmError> {
        if self.broker && !self.broker_up {
            return Err(RtmError::new(
                ErrorCode::BrokerUnavailable,
                "the broker is down; nothing was sent",
            ));
        }
        Ok(())
    }

    fn deliver_user(
        &self,
        user: &str,
        frame: &Bytes,
        deliver: &mut impl FnMut(ConnId, &T, &Bytes),
    ) -> usize {
        let mut sent = 0;
        for conn in self.users.get(user).into_iter().flatten() {
            if let Some(entry) = self.conns.get(conn) {
                deliver(*conn, &entry.handle, frame);
                sent += 1;
            }
        }
        sent
    }

    fn deliver_push<S: AsRef<str>>(
        &self,
        event: &str,
        tags: &[S],
        frame: &Bytes,
        deliver: &mut impl FnMut(ConnId, &T, &Bytes),
    ) -> usize {
        let Some(by_tag) = self.push.get(event) else {
            return 0;
        };
        // Several tags: a connection holding more than one of them gets it once.
        let mut reached = (tags.len() > 1).then(HashSet::new);
        let mut sent = 0;
        for tag in tags {
            for conn in by_tag.get(tag.as_ref()).into_iter().flatten() {
                if let Some(reached) = reached.as_mut() {
                    if !reached.insert(*conn) {
                        continue;
                    }
                }
                if let Some(entry) = self.conns.get(conn) {
                    deliver(*conn, &entry.handle, frame);
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Drops `conn` from (event, tag); the topic when that emptied it.
    fn unhold(&mut self, event: &str, tag: &str, conn: ConnId) -> Option<Topic> {
        let tags = self.push.get_mut(event)?;
        let set = tags.get_mut(tag)?;
        if !set.remove(&conn) || !set.is_empty() {
            return None;
        }
        tags.remove(tag);
        if tags.is_empty() {
            self.push.remove(event);
        }
        if !self.broker {
            return None;
        }
        let topic = Topic::push(&self.namespace, event, tag);
        self.topics.remove(&topic).map(|_| topic)
    }
}

/// A publish for the broker: the envelope and the topic it travels on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPublish {
    /// Where.
    pub topic: Topic,
    /// An encoded [`Envelope`].
    pub payload: Bytes,
}

/// Recently seen multi-tag pushes, so a push that arrives on several tag
/// topics is delivered once. Bounded: the oldest of 4,096 is forgotten.
#[derive(Debug, Default)]
pub struct RecentPushes {
    order: VecDeque<(Arc<str>, u64)>,
    seen: HashSet<(Arc<str>, u64)>,
}

impl RecentPushes {
    const CAPACITY: usize = 4096;

    /// `true` the first time a key is seen.
    pub fn insert(&mut self, origin: &str, seq: u64) -> bool {
        let key: (Arc<str>, u64) = (origin.into(), seq);
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}
