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
//! # Broker topics, and requests that wait for them
//!
//! A topic is needed exactly while its set of local holders is non-empty.
//! The router tells its broker (through [`Router::poll_topic_changes`]) and
//! holds back the answer to a request that needs a topic the broker has not
//! confirmed: an `auth` (its user's topic) or a `subscribe` (its (event,
//! tag) topics) is acknowledged only once every topic it needs is
//! confirmed, so the first event after the acknowledgement cannot be missed.
//! A subscribe whose topic fails (the broker refused it, went down, or did
//! not answer within [`ServerConfig::broker_confirm_timeout`]) is undone and
//! answered `rtm/broker-unavailable`; an auth goes on without its topic.
//! The topics themselves follow two rules: one command in flight per topic
//! (a subscribe and an unsubscribe of one topic are never both on their
//! way, so the broker's last answer is the truth), and a change is decided
//! when it is taken (a topic released and needed again before its
//! unsubscribe was taken — a page reload — sends nothing and stays
//! confirmed).
//!
//! Driving it, with a broker: after every `&mut` call, drain
//! [`Router::poll_settled`] (hand each to its connection's
//! [`Connection::handle_settled`](crate::Connection::handle_settled)) and
//! [`Router::poll_topic_changes`] (carry them out and report each answer);
//! call [`Router::handle_timeout`] at [`Router::poll_timeout`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::broker_topics::{BrokerTopics, TopicChanges, WaitId};
use crate::config::{Limits, ServerConfig};
use crate::connection::{JoinTicket, Settled, SubscribeTicket};
use crate::envelope::{Envelope, EnvelopeError};
use crate::error::{ErrorCode, RtmError};
use crate::frame::{self, Args};
use crate::peer::{ConnId, ConnInfo};
use crate::positions::encode_positioned;
use crate::recovery::{push_id, HistoryPage, StreamEvent};
use crate::stream::{HistoryConfig, StreamOptions, StreamPosition};
use crate::sync::{ReadId, StreamReadRequest, SyncFailed, SyncId, Trackers, Tracking, USER_EVENT};
use crate::topic::Topic;

/// What an incoming broker topic delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    User(Arc<str>),
    Push(Arc<str>, Arc<str>),
}

#[derive(Debug)]
struct Entry<T> {
    info: Arc<ConnInfo>,
    handle: T,
    /// Emit reaches it (authenticated, or on a server without auth).
    open: bool,
    subs: HashSet<(Arc<str>, Arc<str>)>,
    /// Its requests waiting for the broker (usually none).
    waits: Vec<WaitId>,
}

impl<T> Entry<T> {
    fn user(&self) -> Option<&Arc<str>> {
        self.info.identity.as_ref().map(|i| &i.user_id)
    }

    fn ip(&self) -> Option<IpAddr> {
        self.info.meta.peer_addr.map(|addr| addr.ip())
    }
}

/// A request waiting for the broker to confirm its topics.
#[derive(Debug)]
enum Pending {
    Join(JoinTicket),
    Subscribe {
        ticket: SubscribeTicket,
        /// The tags it added (what undoing removes).
        added: Vec<String>,
    },
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
///     let info = Arc::new(ConnInfo {
///         id: ConnId::from_u64(n),
///         meta: ConnMeta::default(),
///         identity: None,
///         opened_at: std::time::Instant::now(),
///     });
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
    /// Which events keep history (with a broker only).
    history: HistoryConfig,
    broker_up: bool,
    conns: HashMap<ConnId, Entry<T>>,
    users: HashMap<Arc<str>, HashSet<ConnId>>,
    push: HashMap<Arc<str>, HashMap<Arc<str>, HashSet<ConnId>>>,
    /// The topics needed now, and what each delivers to.
    topics: HashMap<Topic, Target>,
    broker_topics: BrokerTopics<Pending>,
    settled: VecDeque<Settled>,
    /// Push subscriptions held, per user and per peer address.
    held_by_user: HashMap<Arc<str>, usize>,
    held_by_ip: HashMap<IpAddr, usize>,
    /// Push subscriptions held by every connection.
    held: usize,
    seq: AtomicU64,
    /// The connections tracking streams, and their syncs under way.
    tracking: Tracking,
    /// The subscribes whose streams are being read, with the tags each added.
    syncing: HashMap<SyncId, (SubscribeTicket, Vec<String>)>,
    /// The auths whose user's stream is being read.
    syncing_joins: HashMap<SyncId, JoinTicket>,
    /// How long a subscribe may take to sync.
    sync_timeout: std::time::Duration,
}

/// What [`Router::handle_broker_message`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Local connections it was handed to (0 for this server's own
    /// messages, a push seen on another of its tags, or a topic no longer
    /// needed).
    pub delivered: usize,
    /// This server sent it: skipped (it delivered it when it sent it),
    /// unless it carries a position (a stream's event, which every server
    /// delivers as the broker hands it back).
    pub from_here: bool,
    /// Its place in its stream, for an event that keeps history.
    pub position: Option<StreamPosition>,
    /// When its sender sent it, in milliseconds since the Unix epoch by the
    /// sender's clock, if the envelope says.
    pub sent_at: Option<u64>,
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
            history: config.history.clone(),
            broker_up: true,
            conns: HashMap::new(),
            users: HashMap::new(),
            push: HashMap::new(),
            topics: HashMap::new(),
            broker_topics: BrokerTopics::new(config.broker_confirm_timeout),
            settled: VecDeque::new(),
            held_by_user: HashMap::new(),
            held_by_ip: HashMap::new(),
            held: 0,
            seq: AtomicU64::new(0),
            tracking: Tracking::default(),
            syncing: HashMap::new(),
            syncing_joins: HashMap::new(),
            sync_timeout: config.broker_confirm_timeout.saturating_mul(2),
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

    /// The (event, tag) push subscriptions every connection holds, in all.
    pub fn push_subscription_total(&self) -> usize {
        self.held
    }

    /// How many broker topics this server needs now.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// The broker topics this server needs now.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.topics.keys()
    }

    /// Whether the broker confirmed this topic, which the server needs.
    pub fn is_confirmed(&self, topic: &Topic) -> bool {
        self.broker_topics.is_confirmed(topic)
    }

    /// Requests (auths and subscribes) waiting for the broker.
    pub fn waiting_count(&self) -> usize {
        self.broker_topics.wait_count()
    }

    /// Users with at least one connection here, and (event, tag) pairs with
    /// at least one holder.
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.users.len(), self.push.values().map(HashMap::len).sum())
    }

    /// Subscribes whose streams are being synced (history read, live
    /// events buffered).
    pub fn sync_count(&self) -> usize {
        self.tracking.sync_count()
    }

    /// Whether the broker is believed up.
    pub fn broker_up(&self) -> bool {
        self.broker_up
    }

    /// Push subscriptions held by the connections of `user`.
    pub fn held_by_user(&self, user: &str) -> usize {
        self.held_by_user.get(user).copied().unwrap_or(0)
    }

    /// Push subscriptions held by the connections from `ip`.
    pub fn held_by_ip(&self, ip: IpAddr) -> usize {
        self.held_by_ip.get(&ip).copied().unwrap_or(0)
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
                waits: Vec::new(),
            },
        );
    }

    /// An authenticated connection joins: its info now carries the identity
    /// and it counts among its user's connections. The `auth` reply waits
    /// while the broker is up and has not confirmed the user's topic: `None`
    /// then (it comes from [`Router::poll_settled`]), else the ticket back
    /// at once. Emit and Publish reach the connection once its reply may be
    /// sent (never an event before the auth reply).
    pub fn join(
        &mut self,
        info: Arc<ConnInfo>,
        mut ticket: JoinTicket,
        now: Instant,
    ) -> Option<Settled> {
        let conn = info.id;
        let user: Option<Arc<str>> = info.identity.as_ref().map(|i| i.user_id.clone());
        let Some(entry) = self.conns.get_mut(&conn) else {
            return Some(Settled::Joined(ticket));
        };
        entry.info = info;
        let Some(user) = user else {
            entry.open = true;
            return Some(Settled::Joined(ticket));
        };
        // The user's stream, when the client tracks it: its live events are
        // buffered for it from now on.
        ticket.sync = self.begin_user_sync(conn, &user, &ticket, now);
        // In the user's set at once: that keeps the user's topic wanted.
        let set = self.users.entry(user.clone()).or_default();
        let first = set.is_empty();
        set.insert(conn);
        let topic = self.broker.then(|| Topic::user(&self.namespace, &user));
        if let (Some(topic), true) = (&topic, first) {
            self.topics.insert(topic.clone(), Target::User(user));
            self.broker_topics.want(topic);
        }
        // While the broker is down, authentication goes on without the topic.
        match topic {
            Some(topic) if self.broker_up && !self.broker_topics.is_confirmed(&topic) => {
                self.wait(conn, &[topic], Pending::Join(ticket), now);
                None
            }
            _ => self.joined(ticket),
        }
    }

    /// Removes a connection and everything it held (its topics are released,
    /// its waiting requests dropped); returns its handle.
    pub fn remove(&mut self, conn: ConnId) -> Option<T> {
        let entry = self.conns.remove(&conn)?;
        for wait in &entry.waits {
            self.broker_topics.cancel(*wait);
        }
        if let Some(user) = entry.user() {
            if let Some(set) = self.users.get_mut(user) {
                set.remove(&conn);
                if set.is_empty() {
                    self.users.remove(user);
                    let topic = Topic::user(&self.namespace, user);
                    if self.topics.remove(&topic).is_some() {
                        self.broker_topics.unwant(&topic);
                    }
                }
            }
        }
        for (event, tag) in &entry.subs {
            self.unhold(event, tag, conn);
            self.tracking.untrack(conn, event, tag);
        }
        if let Some(user) = entry.user() {
            self.tracking.untrack(conn, USER_EVENT, user);
        }
        self.tracking.forget(conn);
        self.syncing.retain(|_, (ticket, _)| ticket.conn() != conn);
        self.syncing_joins.retain(|_, ticket| ticket.conn() != conn);
        self.count_held(entry.user(), entry.ip(), -(entry.subs.len() as isize));
        Some(entry.handle)
    }

    /// Adds the ticket's subscription — (event, tag) for each tag — to its
    /// connection, all or nothing: past the connection's
    /// `max_subscriptions`, its user's `max_subscriptions_per_user`, its
    /// address's `max_subscriptions_per_ip` or the server's
    /// `max_broker_topics` it adds none and fails with
    /// `rtm/too-many-subscriptions`. Costs O(tags).
    ///
    /// Returns the outcome now (`Some`), or `None` when it waits for the
    /// broker to confirm a topic (the outcome comes from
    /// [`Router::poll_settled`]; while the broker is down it fails at once
    /// with `rtm/broker-unavailable`, undone).
    pub fn subscribe(&mut self, mut ticket: SubscribeTicket, now: Instant) -> Option<Settled> {
        let conn = ticket.conn();
        if !self.conns.contains_key(&conn) {
            // Gone already: nothing to add, nobody to wait for.
            return Some(Settled::Subscribed(ticket, Ok(())));
        }
        let added = match self.add_subs(conn, ticket.event(), ticket.tags()) {
            Ok(added) => added,
            Err(err) => return Some(Settled::Subscribed(ticket, Err(err))),
        };
        // Tracked streams buffer their live events from now on.
        ticket.sync = self.begin_sync(&ticket, now);
        let mut unconfirmed = Vec::new();
        if self.broker {
            let mut seen = HashSet::new();
            for tag in ticket.tags() {
                if !seen.insert(tag.as_str()) {
                    continue;
                }
                let topic = Topic::push(&self.namespace, ticket.event(), tag);
                if !self.broker_topics.is_confirmed(&topic) {
                    unconfirmed.push(topic);
                }
            }
        }
        if unconfirmed.is_empty() {
            return self.subscribed(ticket, added, Ok(()));
        }
        if !self.broker_up {
            let err = RtmError::new(
                ErrorCode::BrokerUnavailable,
                "the broker is down: this subscription needs a new topic",
            );
            return self.subscribed(ticket, added, Err(err));
        }
        self.wait(
            conn,
            &unconfirmed,
            Pending::Subscribe { ticket, added },
            now,
        );
        None
    }

    /// Removes (event, tag) for each tag from this connection's
    /// subscriptions (topics no connection needs any more are released).
    /// Costs O(tags).
    pub fn unsubscribe<S: AsRef<str>>(&mut self, conn: ConnId, event: &str, tags: &[S]) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut removed = Vec::new();
        for tag in tags {
            let key = (Arc::<str>::from(event), Arc::<str>::from(tag.as_ref()));
            if entry.subs.remove(&key) {
                removed.push(key);
            }
        }
        let (user, ip) = (entry.user().cloned(), entry.ip());
        self.count_held(user.as_ref(), ip, -(removed.len() as isize));
        for (event, tag) in removed {
            self.unhold(&event, &tag, conn);
            self.tracking.untrack(conn, &event, &tag);
        }
    }

    // ----- broker inputs (&mut) -----

    /// The broker answered a subscribe of `topic` (one of
    /// [`TopicChanges::subscribe`]): confirmed (`true`) or failed. The
    /// requests waiting for it are settled (a failed subscribe is undone).
    pub fn handle_topic_subscribed(&mut self, topic: &Topic, ok: bool) {
        self.broker_topics.handle_subscribed(topic, ok);
        self.collect_ended();
    }

    /// The broker answered an unsubscribe of `topic` (one of
    /// [`TopicChanges::unsubscribe`]), whatever the outcome.
    pub fn handle_topic_unsubscribed(&mut self, topic: &Topic) {
        self.broker_topics.handle_unsubscribed(topic);
    }

    /// The broker came up (`true`) or went down. While it is down, Publish
    /// and Push fail with `rtm/broker-unavailable` and every request waiting
    /// for it is settled (subscribes fail, auths go on). Coming back up,
    /// every topic needed is subscribed again (for brokers that do not
    /// resubscribe by themselves). Returns `true` when it came back up.
    pub fn handle_broker_state(&mut self, up: bool) -> bool {
        self.broker_up = up;
        let came_up = self.broker_topics.handle_broker_state(up);
        self.collect_ended();
        if !up {
            let failed = self.tracking.fail_due(None);
            self.sync_failed(failed);
        }
        came_up
    }

    /// A stream read ([`Router::poll_stream_read`]) came back: the stream's
    /// position and its kept envelopes (`rtm_broker::StreamRead`), or why it
    /// failed. `now_ms`: the time in ms since the Unix epoch (for
    /// [`HistoryConfig::max_age`]). When it was its subscribe's last read,
    /// the subscribe is settled ([`Router::poll_settled`]): every missed
    /// event to send before the reply, or `rtm/broker-unavailable` (undone).
    pub fn handle_stream_read(
        &mut self,
        id: ReadId,
        result: Result<(StreamPosition, Vec<Bytes>), String>,
        now_ms: u64,
    ) {
        let page = result.and_then(|(top, envelopes)| {
            HistoryPage::decode(top, envelopes)
                .map_err(|err| format!("the history read is bad: {err}"))
        });
        let Some((sync, outcome)) = self.tracking.handle_read(id, page, &self.history, now_ms)
        else {
            return;
        };
        match outcome {
            Ok(synced) => {
                if let Some((mut ticket, _)) = self.syncing.remove(&sync) {
                    ticket.synced = Some(Box::new(synced));
                    self.settled.push_back(Settled::Subscribed(ticket, Ok(())));
                } else if let Some(mut ticket) = self.syncing_joins.remove(&sync) {
                    ticket.synced = Some(Box::new(synced));
                    self.open(ticket.conn());
                    self.settled.push_back(Settled::Joined(ticket));
                }
            }
            Err(failed) => self.sync_failed(vec![(sync, failed)]),
        }
    }

    /// Time passed: requests waiting for the broker past
    /// [`ServerConfig::broker_confirm_timeout`] are settled (subscribes fail,
    /// auths go on).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.broker_topics.handle_timeout(now);
        self.collect_ended();
        let failed = self.tracking.fail_due(Some(now));
        self.sync_failed(failed);
    }

    // ----- outputs (&mut) -----

    /// A request that waited for the broker, decided: hand it to its
    /// connection ([`Settled::conn`]).
    #[must_use]
    pub fn poll_settled(&mut self) -> Option<Settled> {
        self.settled.pop_front()
    }

    /// Up to `max` topic changes for the broker (`None` when there are none,
    /// or without a broker). Report each answer.
    #[must_use]
    pub fn poll_topic_changes(&mut self, max: usize) -> Option<TopicChanges> {
        if !self.broker || !self.broker_topics.has_changes() {
            return None;
        }
        let changes = self.broker_topics.poll_changes(max);
        (!changes.is_empty()).then_some(changes)
    }

    /// Whether topic changes wait for [`Router::poll_topic_changes`].
    pub fn has_topic_changes(&self) -> bool {
        self.broker && self.broker_topics.has_changes()
    }

    /// Whether a topic change was queued since the last call (which resets
    /// it): the signal to wake whoever carries changes out — once per
    /// change, so a task that looks while its batch travels is not woken
    /// again and again by changes it cannot take yet.
    pub fn take_topic_signal(&mut self) -> bool {
        self.broker_topics.take_queued() && self.broker
    }

    /// When [`Router::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (
            self.broker_topics.poll_timeout(),
            self.tracking.poll_timeout(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next stream read a subscribe's sync needs: carry it out and
    /// report it with [`Router::handle_stream_read`].
    #[must_use]
    pub fn poll_stream_read(&mut self) -> Option<StreamReadRequest> {
        self.tracking.poll_read()
    }

    /// Whether a stream read was queued since the last call (which resets
    /// it): the signal to wake whoever carries reads out.
    pub fn take_read_signal(&mut self) -> bool {
        self.tracking.take_read_signal()
    }

    // ----- membership internals -----

    /// Adds the fresh (event, tag) pairs of `tags` to `conn`, all or nothing
    /// (see [`Router::subscribe`]); returns the tags it added.
    fn add_subs(
        &mut self,
        conn: ConnId,
        event: &str,
        tags: &[String],
    ) -> Result<Vec<String>, RtmError> {
        let Some(entry) = self.conns.get(&conn) else {
            return Ok(Vec::new());
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
        let too_many =
            |message: String| Err(RtmError::new(ErrorCode::TooManySubscriptions, message));
        let held = entry.subs.len();
        let max = self.limits.max_subscriptions;
        if held + fresh.len() > max {
            return too_many(format!(
                "{} more subscriptions would pass this connection's limit of {max} (it holds {held})",
                fresh.len()
            ));
        }
        if let (Some(user), Some(max)) = (entry.user(), self.limits.max_subscriptions_per_user) {
            let held = self.held_by_user(user);
            if held + fresh.len() > max {
                return too_many(format!(
                    "{} more subscriptions would pass this user's limit of {max} (its connections hold {held})",
                    fresh.len()
                ));
            }
        }
        if let (Some(ip), Some(max)) = (entry.ip(), self.limits.max_subscriptions_per_ip) {
            let held = self.held_by_ip(ip);
            if held + fresh.len() > max {
                return too_many(format!(
                    "{} more subscriptions would pass this address's limit of {max} (its connections hold {held})",
                    fresh.len()
                ));
            }
        }
        let max_topics = self.limits.max_broker_topics;
        if self.broker && self.topics.len() + new_keys > max_topics {
            return too_many(format!(
                "this server holds its limit of {max_topics} broker topics"
            ));
        }
        let (user, ip) = (entry.user().cloned(), entry.ip());
        let event_key: Arc<str> = match self.push.get_key_value(event) {
            Some((key, _)) => key.clone(),
            None => event.into(),
        };
        let mut added = Vec::with_capacity(fresh.len());
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
            added.push(tag.to_owned());
            if first && self.broker {
                let topic = Topic::push(&self.namespace, event, tag);
                self.topics
                    .insert(topic.clone(), Target::Push(event_key.clone(), tag_key));
                self.broker_topics.want(&topic);
            }
        }
        self.count_held(user.as_ref(), ip, added.len() as isize);
        Ok(added)
    }

    /// Counts push subscriptions taken (`delta > 0`) or released by a
    /// connection of `user` from `ip`.
    fn count_held(&mut self, user: Option<&Arc<str>>, ip: Option<IpAddr>, delta: isize) {
        if delta == 0 {
            return;
        }
        self.held = self.held.saturating_add_signed(delta);
        fn apply<K: std::hash::Hash + Eq + Clone>(
            map: &mut HashMap<K, usize>,
            key: K,
            delta: isize,
        ) {
            let count = map.entry(key.clone()).or_insert(0);
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                map.remove(&key);
            }
        }
        if let Some(user) = user {
            apply(&mut self.held_by_user, user.clone(), delta);
        }
        if let Some(ip) = ip {
            apply(&mut self.held_by_ip, ip, delta);
        }
    }

    fn wait(&mut self, conn: ConnId, topics: &[Topic], pending: Pending, now: Instant) {
        let id = self.broker_topics.wait(topics, pending, now);
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.waits.push(id);
        }
        self.collect_ended();
    }

    /// Turns the waits that ended into settled requests: a failed subscribe
    /// is undone first, an auth goes on whatever happened.
    fn collect_ended(&mut self) {
        let ended: Vec<_> = self.broker_topics.take_ended().collect();
        for end in ended {
            let settled = match end.payload {
                Pending::Join(ticket) => {
                    self.forget_wait(ticket.conn(), end.id);
                    match self.joined(ticket) {
                        Some(settled) => settled,
                        None => continue,
                    }
                }
                Pending::Subscribe { ticket, added } => {
                    self.forget_wait(ticket.conn(), end.id);
                    match self.subscribed(ticket, added, end.result) {
                        Some(settled) => settled,
                        None => continue,
                    }
                }
            };
            self.settled.push_back(settled);
        }
    }

    /// Registers the streams a subscribe tracks (the tags of its `since`
    /// whose event keeps history here) as syncing: their live events are
    /// buffered for it from now on.
    fn begin_sync(&mut self, ticket: &SubscribeTicket, now: Instant) -> Option<SyncId> {
        let since = ticket.since()?;
        let options = self.stream_options(ticket.event())?;
        let mut seen = HashSet::new();
        let tags: Vec<(Arc<str>, Option<StreamPosition>)> = ticket
            .tags()
            .iter()
            .filter(|tag| seen.insert(tag.as_str()))
            .filter_map(|tag| Some((Arc::from(tag.as_str()), since.get(tag)?.clone())))
            .collect();
        if tags.is_empty() {
            return None;
        }
        let event: Arc<str> = ticket.event().into();
        Some(self.tracking.begin(
            ticket.conn(),
            &event,
            tags,
            options,
            now + self.sync_timeout,
        ))
    }

    /// Registers the user's stream as syncing for a client that asked to
    /// track it (`since` on its `auth`), when Publish keeps history here.
    fn begin_user_sync(
        &mut self,
        conn: ConnId,
        user: &Arc<str>,
        ticket: &JoinTicket,
        now: Instant,
    ) -> Option<SyncId> {
        let since = ticket.since.clone()?;
        let options = self.user_stream_options()?;
        let event: Arc<str> = USER_EVENT.into();
        Some(self.tracking.begin(
            conn,
            &event,
            vec![(user.clone(), since)],
            options,
            now + self.sync_timeout,
        ))
    }

    /// The options a user's stream is read with (the first history rule's),
    /// with a broker that keeps history.
    fn user_stream_options(&self) -> Option<StreamOptions> {
        if !self.broker {
            return None;
        }
        self.history.first_options().copied()
    }

    /// The user's topic is in place: the `auth` is answered now, unless its
    /// user's stream must be read first (`None`: answered when it is in).
    fn joined(&mut self, ticket: JoinTicket) -> Option<Settled> {
        let conn = ticket.conn();
        match ticket.sync {
            Some(sync) if self.conns.contains_key(&conn) => {
                self.tracking.start(sync, &self.namespace, &self.history);
                self.syncing_joins.insert(sync, ticket);
                None
            }
            _ => {
                self.open(conn);
                Some(Settled::Joined(ticket))
            }
        }
    }

    /// The subscription is in place (`Ok`) or failed: settled now, unless
    /// it tracks streams and must read them first (`None`: it is settled
    /// when the reads are in). A failure undoes what it added.
    fn subscribed(
        &mut self,
        ticket: SubscribeTicket,
        added: Vec<String>,
        result: Result<(), RtmError>,
    ) -> Option<Settled> {
        match (result, ticket.sync) {
            (Ok(()), Some(sync)) if self.conns.contains_key(&ticket.conn()) => {
                self.tracking.start(sync, &self.namespace, &self.history);
                self.syncing.insert(sync, (ticket, added));
                None
            }
            (Ok(()), _) => Some(Settled::Subscribed(ticket, Ok(()))),
            (Err(err), sync) => {
                if let Some(sync) = sync {
                    self.tracking.abandon(sync);
                }
                self.unsubscribe(ticket.conn(), ticket.event(), &added);
                Some(Settled::Subscribed(ticket, Err(err)))
            }
        }
    }

    /// Syncs that ended without their streams: their subscribes fail
    /// `rtm/broker-unavailable`, undone.
    fn sync_failed(&mut self, failed: Vec<(SyncId, SyncFailed)>) {
        for (sync, SyncFailed::Broker(why)) in failed {
            // An auth goes on without its user's stream (answered without
            // its state: the client keeps its position for next time).
            if let Some(ticket) = self.syncing_joins.remove(&sync) {
                self.open(ticket.conn());
                self.settled.push_back(Settled::Joined(ticket));
                continue;
            }
            if let Some((ticket, added)) = self.syncing.remove(&sync) {
                self.unsubscribe(ticket.conn(), ticket.event(), &added);
                let err = RtmError::new(
                    ErrorCode::BrokerUnavailable,
                    format!("the subscription's history could not be read: {why}"),
                );
                self.settled
                    .push_back(Settled::Subscribed(ticket, Err(err)));
            }
        }
    }

    /// Emit and Publish reach the connection from now on.
    fn open(&mut self, conn: ConnId) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.open = true;
        }
    }

    fn forget_wait(&mut self, conn: ConnId, id: WaitId) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.waits.retain(|w| *w != id);
        }
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
    /// the other servers (with a broker), stamped `sent_at` (milliseconds
    /// since the Unix epoch; `None`: unstamped). Fails with `rtm/no-auth` on a
    /// server without authentication, `rtm/broker-unavailable` (nothing
    /// sent) while the broker is down, `rtm/bad-request` for a name over
    /// `max_name_bytes`.
    pub fn publish(
        &self,
        user: &str,
        event: &str,
        args: &Args,
        sent_at: Option<u64>,
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
        let stream = self.stream_options(event);
        // An event with history reaches this server's connections too when
        // the broker hands it back with its position, not now.
        let sent = if stream.is_some() {
            0
        } else {
            self.deliver_user(user, &frame, &mut deliver)
        };
        let command = self.broker.then(|| {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            BrokerPublish {
                topic: Topic::user(&self.namespace, user),
                payload: Envelope::encode(&self.server_id, seq, None, sent_at, &frame),
                stream,
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
        sent_at: Option<u64>,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<(usize, Vec<BrokerPublish>), RtmError> {
        self.check_name("event name", event)?;
        tags.iter()
            .try_for_each(|tag| self.check_name("tag", tag))?;
        self.check_broker()?;
        let frame = frame::encode_event(event, args)?;
        let stream = self.stream_options(event);
        // With history, delivered here when the broker hands it back.
        let sent = if stream.is_some() {
            0
        } else {
            self.deliver_push(event, tags, &frame, false, &mut deliver)
        };
        let mut commands = Vec::new();
        if self.broker && !tags.is_empty() {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let listed = (tags.len() > 1).then_some(tags);
            let payload = Envelope::encode(&self.server_id, seq, listed, sent_at, &frame);
            commands = tags
                .iter()
                .map(|tag| BrokerPublish {
                    topic: Topic::push(&self.namespace, event, tag),
                    payload: payload.clone(),
                    stream,
                })
                .collect();
        }
        Ok((sent, commands))
    }

    /// A message from the broker on `topic`: hands its frame to the local
    /// targets. Messages from this server itself are skipped (it delivered
    /// them already); a Push seen before on another of its tags is skipped
    /// (`recent` remembers them). Returns the number of local deliveries
    /// and when the sender sent it.
    pub fn handle_broker_message(
        &self,
        topic: &str,
        payload: Bytes,
        recent: &mut RecentPushes,
        mut deliver: impl FnMut(ConnId, &T, &Bytes),
    ) -> Result<Received, EnvelopeError> {
        let envelope = Envelope::decode(payload)?;
        let from_here = *envelope.origin == *self.server_id;
        let received = |delivered| Received {
            delivered,
            from_here,
            position: envelope.position.clone(),
            sent_at: envelope.sent_at,
        };
        // This server's own message was delivered here when it was sent,
        // unless it is a stream's (history): those are delivered by every
        // server, this one too, as the broker hands them back in order.
        if from_here && envelope.position.is_none() {
            return Ok(received(0));
        }
        let Some(target) = self.topics.get(topic) else {
            return Ok(received(0));
        };
        Ok(received(match target {
            Target::User(user) => {
                let mut sent = 0;
                // Connections tracking the user's stream: the event with its
                // position (no tag), or into their sync's buffer.
                let tracked = envelope.position.as_ref().and_then(|position| {
                    Some((position, self.tracking.trackers(USER_EVENT, user)?))
                });
                if let Some((position, trackers)) = tracked {
                    sent += self.deliver_tracked(&envelope, position, trackers, None, &mut deliver);
                }
                let skip = tracked.map(|(_, trackers)| trackers);
                sent + self.deliver_user_except(user, &envelope.frame, skip, &mut deliver)
            }
            Target::Push(event, tag) => {
                let mut sent = 0;
                let multi = envelope.tags.as_ref().filter(|tags| tags.len() > 1);
                // Connections tracking this stream: the event with its
                // position, or into their sync's buffer.
                let tracked = envelope
                    .position
                    .as_ref()
                    .and_then(|position| Some((position, self.tracking.trackers(event, tag)?)));
                if let Some((position, trackers)) = tracked {
                    sent += self.deliver_tracked(
                        &envelope,
                        position,
                        trackers,
                        Some(tag),
                        &mut deliver,
                    );
                }
                let skip_trackers = envelope.position.is_some() && !self.tracking.is_empty();
                sent + match multi {
                    Some(tags) => {
                        if !recent.insert(&envelope.origin, envelope.seq) {
                            return Ok(received(sent));
                        }
                        self.deliver_push(event, tags, &envelope.frame, skip_trackers, &mut deliver)
                    }
                    None => self.deliver_push(
                        event,
                        std::slice::from_ref(tag),
                        &envelope.frame,
                        skip_trackers,
                        &mut deliver,
                    ),
                }
            }
        }))
    }

    // ----- internals -----

    /// A stream's event to the connections tracking the stream: with its
    /// position (`tag`: the Push stream's; `None` for a user's stream) to
    /// the live ones that have not had it, into the buffer of those
    /// syncing. Returns how many it was handed to.
    fn deliver_tracked(
        &self,
        envelope: &Envelope,
        position: &StreamPosition,
        trackers: &Trackers,
        tag: Option<&str>,
        deliver: &mut impl FnMut(ConnId, &T, &Bytes),
    ) -> usize {
        let push = push_id(envelope);
        let mut sent = 0;
        if !trackers.live.is_empty() {
            let framed = encode_positioned(&envelope.frame, tag, position, push.as_deref());
            for conn in trackers.live_for(position) {
                // A connection whose auth reply waits is not reached yet.
                if let Some(entry) = self.conns.get(conn).filter(|e| e.open) {
                    deliver(*conn, &entry.handle, &framed);
                    sent += 1;
                }
            }
        }
        let event = StreamEvent {
            offset: position.offset,
            sent_at: envelope.sent_at,
            frame: envelope.frame.clone(),
            push,
        };
        trackers.buffer(&position.epoch, &event, self.history.max_sync_buffer);
        sent
    }

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

    /// The history options of `event`'s streams, with a broker; `None`: no
    /// history (delivered here at once, and published at most once).
    fn stream_options(&self, event: &str) -> Option<StreamOptions> {
        if !self.broker {
            return None;
        }
        self.history.options_for(event).copied()
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
        self.deliver_user_except(user, frame, None, deliver)
    }

    /// [`Router::deliver_user`] but to the connections `skip` does not
    /// track (they get the event with its position).
    fn deliver_user_except(
        &self,
        user: &str,
        frame: &Bytes,
        skip: Option<&Trackers>,
        deliver: &mut impl FnMut(ConnId, &T, &Bytes),
    ) -> usize {
        let mut sent = 0;
        for conn in self.users.get(user).into_iter().flatten() {
            if skip.is_some_and(|t| t.holds(conn)) {
                continue;
            }
            // A connection whose auth reply waits for the broker is not reached yet.
            if let Some(entry) = self.conns.get(conn).filter(|e| e.open) {
                deliver(*conn, &entry.handle, frame);
                sent += 1;
            }
        }
        sent
    }

    /// `skip_trackers`: the connections tracking a tag's stream are not
    /// handed the plain frame on that tag (they get it with its position).
    fn deliver_push<S: AsRef<str>>(
        &self,
        event: &str,
        tags: &[S],
        frame: &Bytes,
        skip_trackers: bool,
        deliver: &mut impl FnMut(ConnId, &T, &Bytes),
    ) -> usize {
        let Some(by_tag) = self.push.get(event) else {
            return 0;
        };
        // Several tags: a connection holding more than one of them gets it once.
        let mut reached = (tags.len() > 1).then(HashSet::new);
        let mut sent = 0;
        for tag in tags {
            let trackers = skip_trackers
                .then(|| self.tracking.trackers(event, tag.as_ref()))
                .flatten();
            for conn in by_tag.get(tag.as_ref()).into_iter().flatten() {
                if trackers.is_some_and(|t| t.holds(conn)) {
                    continue;
                }
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

    /// Drops `conn` from (event, tag); releases the topic when that emptied it.
    fn unhold(&mut self, event: &str, tag: &str, conn: ConnId) {
        let Some(tags) = self.push.get_mut(event) else {
            return;
        };
        let Some(set) = tags.get_mut(tag) else {
            return;
        };
        if !set.remove(&conn) || !set.is_empty() {
            return;
        }
        tags.remove(tag);
        if tags.is_empty() {
            self.push.remove(event);
        }
        if !self.broker {
            return;
        }
        let topic = Topic::push(&self.namespace, event, tag);
        if self.topics.remove(&topic).is_some() {
            self.broker_topics.unwant(&topic);
        }
    }
}

/// A publish for the broker: the envelope and the topic it travels on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPublish {
    /// Where.
    pub topic: Topic,
    /// An encoded [`Envelope`].
    pub payload: Bytes,
    /// `Some`: the event keeps history: append it to `topic`'s stream with
    /// these options and publish it with its position, in one step
    /// (`rtm_broker::Broker::publish_to_stream`).
    pub stream: Option<StreamOptions>,
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
