//! The server state machine.
//!
//! [`Server`] owns every piece of protocol state of one server: connections
//! and their phase, identities, in-flight counts, push subscriptions, the
//! routing indexes, broker topics and timers. It does no IO and reads no
//! clock. An adapter drives it in this order:
//!
//! 1. **inputs** (`handle_*`): a connection opened or closed, a text frame,
//!    the outcome of an auth / function / authorizer it was asked to run, a
//!    broker message, the time (`handle_timeout`);
//! 2. **commands**: [`Server::emit`], [`Server::publish`], [`Server::push`], …;
//! 3. **outputs**: after every input or command, drain [`Server::poll_output`]
//!    until it returns `None`, then wait until [`Server::poll_timeout`] (or the
//!    next input) and call [`Server::handle_timeout`].
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rtm_core::{Server, ServerConfig, ServerOutput, ConnMeta};
//!
//! let now = Instant::now();
//! let mut server = Server::new(ServerConfig::new("s1"));
//! let echo = server.register_function("echo");
//! let conn = server.handle_open(ConnMeta::default(), now).unwrap();
//! server.handle_text(conn, Bytes::from_static(br#"{"id":"1","type":"invoke","function":"echo","data":["hi"]}"#), now);
//! let Some(ServerOutput::Invoke { ticket, function, args, .. }) = server.poll_output() else { panic!() };
//! assert_eq!(function, echo);
//! let (text,): (String,) = args.deserialize().unwrap();
//! server.handle_call_result(ticket, Ok(&text));
//! let Some(ServerOutput::Transmit { frame, .. }) = server.poll_output() else { panic!() };
//! assert_eq!(&frame[..], br#"{"id":"1","data":"hi"}"#);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::config::ServerConfig;
use crate::conn::{ConnId, ConnInfo, ConnMeta, Identity};
use crate::envelope::{Envelope, EnvelopeError};
use crate::error::{CloseCode, ErrorCode, RtmError};
use crate::frame::{self, Args, PushSub, Request, RequestError, RequestId};
use crate::routing::{Change, Routing, Target};
use crate::topic::Topic;

/// A function registered with [`Server::register_function`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionId(pub u32);

/// Proof that a function was asked to run; hand it back with the result.
/// It cannot be cloned, so a call is answered at most once.
#[derive(Debug)]
pub struct CallTicket {
    conn: ConnId,
    id: RequestId,
}

impl CallTicket {
    /// The calling connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
    /// The request id being answered.
    pub fn request_id(&self) -> &RequestId {
        &self.id
    }
}

/// Proof that the authentication handler was asked; hand it back with its decision.
#[derive(Debug)]
pub struct AuthTicket {
    conn: ConnId,
    id: RequestId,
}

impl AuthTicket {
    /// The connection authenticating.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// Proof that the subscribe authorizer was asked; hand it back with its decision.
#[derive(Debug)]
pub struct SubscribeTicket {
    conn: ConnId,
    id: RequestId,
    sub: PushSub,
}

impl SubscribeTicket {
    /// The connection subscribing.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
    /// The event of the subscription asked for.
    pub fn event(&self) -> &str {
        &self.sub.event
    }
    /// The tags of the subscription asked for.
    pub fn tags(&self) -> &[String] {
        &self.sub.tags
    }
}

/// A broker operation the adapter must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerCommand {
    /// Start receiving this topic (a local connection needs it now).
    Subscribe(Topic),
    /// Stop receiving this topic (no local connection needs it any more).
    Unsubscribe(Topic),
    /// Send this envelope to every server subscribed to `topic`.
    Publish {
        /// Where.
        topic: Topic,
        /// An encoded [`Envelope`].
        payload: Bytes,
    },
}

/// What the server core asks of its adapter. See the [module docs](self) for the loop.
#[derive(Debug)]
pub enum ServerOutput {
    /// Send this text frame to this connection.
    Transmit {
        /// The target.
        conn: ConnId,
        /// A complete text frame (shared by every target of an event).
        frame: Bytes,
    },
    /// Close this connection with this code. Its state is already gone.
    Close {
        /// The target.
        conn: ConnId,
        /// The WebSocket close code.
        code: CloseCode,
        /// The close reason.
        reason: &'static str,
    },
    /// Send a WebSocket ping to this connection.
    Ping {
        /// The target.
        conn: ConnId,
    },
    /// Run the authentication handler on `data`, then call [`Server::handle_auth_result`].
    Authenticate {
        /// Hand it back with the decision.
        ticket: AuthTicket,
        /// The connection.
        info: Arc<ConnInfo>,
        /// The `auth` request's `data` array.
        data: Args,
    },
    /// Run the function, then call [`Server::handle_call_result`].
    Invoke {
        /// Hand it back with the result.
        ticket: CallTicket,
        /// Which function.
        function: FunctionId,
        /// The calling connection.
        info: Arc<ConnInfo>,
        /// The arguments.
        args: Args,
    },
    /// Ask the subscribe authorizer, then call [`Server::handle_authorize_result`].
    Authorize {
        /// Holds the event and tags; hand it back with the decision.
        ticket: SubscribeTicket,
        /// The connection.
        info: Arc<ConnInfo>,
    },
    /// This connection did not authenticate in time (the seed's `onAuthTimeout`);
    /// a `Close` with 4008 precedes it.
    AuthTimedOut {
        /// The connection.
        info: Arc<ConnInfo>,
    },
    /// This connection was silent past the heartbeat deadline; a `Close` precedes it.
    PeerSilent {
        /// The connection.
        info: Arc<ConnInfo>,
    },
    /// This connection's state is gone (it closed, or the server closed it).
    Disconnected {
        /// The connection as it was.
        info: Arc<ConnInfo>,
    },
    /// A broker operation.
    Broker(BrokerCommand),
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `Limits::max_connections` reached: refuse with 1013.
    #[error("too many connections (limit {0})")]
    TooManyConnections(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unauthenticated,
    Authenticating,
    Open,
}

#[derive(Debug)]
struct Conn {
    info: Arc<ConnInfo>,
    phase: Phase,
    in_flight: u32,
    subs: Vec<(Arc<str>, Arc<str>)>,
    last_activity: Instant,
    /// Fan-out mark: equals the current push's mark once this connection got it.
    mark: u64,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    AuthDeadline,
    Heartbeat,
}

/// Recently seen multi-tag pushes, so a push that arrives on several tag topics is delivered once.
#[derive(Debug, Default)]
struct RecentPushes {
    order: VecDeque<(Arc<str>, u64)>,
    seen: HashSet<(Arc<str>, u64)>,
}

impl RecentPushes {
    const CAPACITY: usize = 4096;

    /// `true` the first time a key is seen.
    fn insert(&mut self, origin: &str, seq: u64) -> bool {
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

/// The server state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    functions: HashMap<Box<str>, FunctionId>,
    function_names: Vec<Box<str>>,
    routing: Routing,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    outputs: VecDeque<ServerOutput>,
    seq: u64,
    mark: u64,
    recent: RecentPushes,
    broker_up: bool,
}

impl Server {
    /// A server core with this configuration.
    pub fn new(config: ServerConfig) -> Self {
        Server {
            routing: Routing::new(&config.namespace),
            config,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            functions: HashMap::new(),
            function_names: Vec::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            seq: 0,
            mark: 0,
            recent: RecentPushes::default(),
            broker_up: true,
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// The info of a live connection.
    pub fn conn_info(&self, conn: ConnId) -> Option<&Arc<ConnInfo>> {
        self.conn(conn).map(|c| &c.info)
    }

    /// Whether a connection is live and past authentication (or on a server without it).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conn(conn).is_some_and(|c| c.phase == Phase::Open)
    }

    /// Invokes and authorizations in flight on a connection.
    pub fn in_flight(&self, conn: ConnId) -> u32 {
        self.conn(conn).map_or(0, |c| c.in_flight)
    }

    /// Invokes and authorizations in flight on all connections.
    pub fn total_in_flight(&self) -> u64 {
        self.live_conns().map(|c| u64::from(c.in_flight)).sum()
    }

    /// Every live connection.
    pub fn connections(&self) -> impl Iterator<Item = &Arc<ConnInfo>> + '_ {
        self.live_conns().map(|c| &c.info)
    }

    /// The broker topics this server currently needs.
    pub fn broker_topics(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.routing.topics()
    }

    /// Users with at least one local connection, and (event, tag) pairs with at least one holder.
    pub fn index_sizes(&self) -> (usize, usize) {
        (self.routing.user_count(), self.routing.push_key_count())
    }

    /// The name a function was registered under.
    pub fn function_name(&self, id: FunctionId) -> Option<&str> {
        self.function_names.get(id.0 as usize).map(|n| &**n)
    }

    /// The id of a registered function.
    pub fn function_id(&self, name: &str) -> Option<FunctionId> {
        self.functions.get(name).copied()
    }

    // ----- commands -----

    /// Registers a function name; invokes of other names get `rtm/function-not-found`.
    /// Registering a name twice returns the same id.
    pub fn register_function(&mut self, name: &str) -> FunctionId {
        if let Some(id) = self.functions.get(name) {
            return *id;
        }
        let id = FunctionId(self.function_names.len() as u32);
        self.functions.insert(name.into(), id);
        self.function_names.push(name.into());
        id
    }

    /// Emit: sends `event` with `args` to every connection on this server that
    /// `filter` accepts (only authenticated ones on a server with auth).
    /// The frame is encoded once. Returns how many connections it was sent to.
    pub fn emit(
        &mut self,
        event: &str,
        mut filter: impl FnMut(&ConnInfo) -> bool,
        args: &Args,
    ) -> Result<usize, RtmError> {
        let frame = frame::encode_event(event, args)?;
        let mut sent = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(conn) = &slot.conn else { continue };
            if conn.phase == Phase::Open && filter(&conn.info) {
                self.outputs.push_back(ServerOutput::Transmit {
                    conn: ConnId::new(index as u32, slot.generation),
                    frame: frame.clone(),
                });
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Publish: sends `event` to every connection of `user` on every server of
    /// the cluster. Only on a server with authentication (`rtm/no-auth`
    /// otherwise); `rtm/broker-unavailable`, with nothing sent, while the
    /// broker is known to be down. Returns the number of local deliveries.
    pub fn publish(&mut self, user: &str, event: &str, args: &Args) -> Result<usize, RtmError> {
        if !self.config.requires_auth() {
            return Err(RtmError::new(
                ErrorCode::PublishWithoutAuth,
                "publish needs a server with authentication (user ids come from it)",
            ));
        }
        self.check_broker()?;
        let frame = frame::encode_event(event, args)?;
        let sent = self.deliver_user(user, &frame);
        if self.config.broker {
            self.seq += 1;
            let payload = Envelope::encode(&self.config.server_id, self.seq, None, &frame);
            self.outputs
                .push_back(ServerOutput::Broker(BrokerCommand::Publish {
                    topic: Topic::user(&self.config.namespace, user),
                    payload,
                }));
        }
        Ok(sent)
    }

    /// Push: sends `event` once to each connection, on every server, holding a
    /// push subscription for `event` with at least one of `tags`. Returns the
    /// number of local deliveries.
    pub fn push(&mut self, event: &str, tags: &[String], args: &Args) -> Result<usize, RtmError> {
        self.check_broker()?;
        let frame = frame::encode_event(event, args)?;
        let sent = self.deliver_push(event, tags, &frame);
        if self.config.broker && !tags.is_empty() {
            self.seq += 1;
            let listed = (tags.len() > 1).then_some(tags);
            let payload = Envelope::encode(&self.config.server_id, self.seq, listed, &frame);
            for tag in tags {
                self.outputs
                    .push_back(ServerOutput::Broker(BrokerCommand::Publish {
                        topic: Topic::push(&self.config.namespace, event, tag),
                        payload: payload.clone(),
                    }));
            }
        }
        Ok(sent)
    }

    /// Closes a connection from the application side.
    pub fn close_connection(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        self.close(conn, code, reason);
    }

    /// Closes every connection (shutdown: 1001).
    pub fn close_all(&mut self, code: CloseCode, reason: &'static str) {
        let ids: Vec<ConnId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| ConnId::new(i as u32, s.generation))
            .collect();
        for id in ids {
            self.close(id, code, reason);
        }
    }

    /// Re-announces every topic this server needs (after the broker reconnected).
    pub fn resubscribe_all(&mut self) {
        let topics: Vec<Topic> = self.routing.topics().cloned().collect();
        for topic in topics {
            self.outputs
                .push_back(ServerOutput::Broker(BrokerCommand::Subscribe(topic)));
        }
    }

    // ----- inputs -----

    /// A WebSocket connection opened.
    pub fn handle_open(&mut self, meta: ConnMeta, now: Instant) -> Result<ConnId, OpenError> {
        if self.live >= self.config.limits.max_connections {
            return Err(OpenError::TooManyConnections(
                self.config.limits.max_connections,
            ));
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = ConnId::new(index, slot.generation);
        let phase = if self.config.requires_auth() {
            Phase::Unauthenticated
        } else {
            Phase::Open
        };
        slot.conn = Some(Conn {
            info: Arc::new(ConnInfo {
                id,
                meta,
                identity: None,
            }),
            phase,
            in_flight: 0,
            subs: Vec::new(),
            last_activity: now,
            mark: 0,
        });
        self.live += 1;
        if let Some(timeout) = self.config.auth_timeout {
            self.timers
                .push(Reverse((now + timeout, id.0, TimerKind::AuthDeadline)));
        }
        if let Some(hb) = self.config.heartbeat {
            self.timers
                .push(Reverse((now + hb.interval, id.0, TimerKind::Heartbeat)));
        }
        Ok(id)
    }

    /// A text frame arrived on a connection.
    pub fn handle_text(&mut self, conn: ConnId, frame: Bytes, now: Instant) {
        let max = self.config.limits.max_frame_bytes;
        let requires_auth = self.config.requires_auth();
        let Some(c) = self.conn_mut(conn) else { return };
        c.last_activity = now;
        if frame.len() > max {
            self.close(conn, CloseCode::MESSAGE_TOO_BIG, "frame too large");
            return;
        }
        let request = match frame::parse_request(&frame) {
            Ok(request) => request,
            Err(RequestError::Malformed(_)) => {
                self.close(conn, CloseCode::INVALID_PAYLOAD, "invalid request");
                return;
            }
            Err(RequestError::BadRequest { id, message }) => {
                self.reply_error(conn, &id, RtmError::bad_request(message));
                return;
            }
        };
        let Some(c) = self.conn_mut(conn) else { return };
        let phase = c.phase;
        match request {
            Request::Auth { id, data } => match phase {
                Phase::Open if requires_auth => self.reply_error(
                    conn,
                    &id,
                    RtmError::new(ErrorCode::AlreadyAuthenticated, "already authenticated"),
                ),
                Phase::Open => self.transmit(conn, reply_true(&id)),
                Phase::Authenticating => self.reply_error(
                    conn,
                    &id,
                    RtmError::bad_request("authentication already in progress"),
                ),
                Phase::Unauthenticated => {
                    c.phase = Phase::Authenticating;
                    let info = c.info.clone();
                    self.outputs.push_back(ServerOutput::Authenticate {
                        ticket: AuthTicket { conn, id },
                        info,
                        data,
                    });
                }
            },
            Request::Invoke { id, function, args } => {
                if phase != Phase::Open {
                    return self.reply_unauthenticated(conn, &id);
                }
                let Some(&function) = self.functions.get(function.as_ref()) else {
                    let message = format!("no function named '{function}'");
                    return self.reply_error(
                        conn,
                        &id,
                        RtmError::new(ErrorCode::FunctionNotFound, message),
                    );
                };
                let Some(info) = self.take_slot(conn) else {
                    return self.reply_too_many(conn, &id);
                };
                self.outputs.push_back(ServerOutput::Invoke {
                    ticket: CallTicket { conn, id },
                    function,
                    info,
                    args,
                });
            }
            Request::Subscribe { id, sub } => {
                if phase != Phase::Open {
                    return self.reply_unauthenticated(conn, &id);
                }
                if let Err(err) = frame::check_event_name(&sub.event) {
                    return self.reply_error(conn, &id, err);
                }
                if !self.config.authorize_subscriptions {
                    self.add_subscription(conn, &sub);
                    return self.transmit(conn, reply_true(&id));
                }
                let Some(info) = self.take_slot(conn) else {
                    return self.reply_too_many(conn, &id);
                };
                self.outputs.push_back(ServerOutput::Authorize {
                    ticket: SubscribeTicket { conn, id, sub },
                    info,
                });
            }
            Request::Unsubscribe { id, sub } => {
                if phase != Phase::Open {
                    return self.reply_unauthenticated(conn, &id);
                }
                for tag in &sub.tags {
                    self.remove_subscription(conn, &sub.event, tag);
                }
                self.transmit(conn, reply_true(&id));
            }
        }
    }

    /// A binary frame arrived: close 1003.
    pub fn handle_binary(&mut self, conn: ConnId) {
        self.close(
            conn,
            CloseCode::UNSUPPORTED_DATA,
            "binary frames are not supported",
        );
    }

    /// The transport refused a frame over the size limit: close 1009.
    pub fn handle_oversized(&mut self, conn: ConnId) {
        self.close(conn, CloseCode::MESSAGE_TOO_BIG, "frame too large");
    }

    /// The connection's outbound queue overflowed: close 1013 `rtm/slow-consumer`.
    pub fn handle_slow_consumer(&mut self, conn: ConnId) {
        self.close(conn, CloseCode::TRY_AGAIN_LATER, "rtm/slow-consumer");
    }

    /// Something arrived from the peer (a pong, any frame): it is alive.
    pub fn handle_activity(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(conn) {
            c.last_activity = now;
        }
    }

    /// The connection is gone (closed by the peer or the transport failed).
    /// Its state is dropped; results still in flight for it are discarded.
    pub fn handle_close(&mut self, conn: ConnId) {
        self.drop_conn(conn);
    }

    /// The authentication handler decided.
    pub fn handle_auth_result(&mut self, ticket: AuthTicket, result: Result<Identity, RtmError>) {
        let AuthTicket { conn, id } = ticket;
        let Some(c) = self.conn_mut(conn) else { return };
        if c.phase != Phase::Authenticating {
            return;
        }
        match result {
            Ok(identity) => {
                let reply = match &identity.data {
                    // The JS client needs a truthy `data`: every JS-falsy value becomes `true`.
                    data if is_js_falsy(data) => reply_true(&id),
                    data => match frame::encode_reply(&id, data) {
                        Ok(frame) => frame,
                        Err(_) => reply_true(&id),
                    },
                };
                c.phase = Phase::Open;
                let user = identity.user_id.clone();
                let mut info = ConnInfo::clone(&c.info);
                info.identity = Some(identity);
                c.info = Arc::new(info);
                let change = self.routing.add_user(&user, conn);
                self.topic_change(change);
                self.transmit(conn, reply);
            }
            Err(err) => {
                self.transmit(conn, frame::encode_auth_rejected(&id, &err.message));
                self.close(conn, CloseCode::AUTH_REJECTED, "authentication rejected");
            }
        }
    }

    /// A function finished: its value becomes the reply's `data`, its error an error reply.
    /// A value that cannot be encoded as JSON becomes `rtm/internal`.
    pub fn handle_call_result<T: Serialize + ?Sized>(
        &mut self,
        ticket: CallTicket,
        result: Result<&T, RtmError>,
    ) {
        let CallTicket { conn, id } = ticket;
        let Some(c) = self.conn_mut(conn) else { return };
        c.in_flight = c.in_flight.saturating_sub(1);
        let frame = match result.and_then(|value| frame::encode_reply(&id, value)) {
            Ok(frame) => frame,
            Err(err) => frame::encode_error_reply(&id, &err),
        };
        self.transmit(conn, frame);
    }

    /// The subscribe authorizer decided: `Ok` allows, `Err` denies (`rtm/forbidden` unless
    /// the error carries another code).
    pub fn handle_authorize_result(
        &mut self,
        ticket: SubscribeTicket,
        result: Result<(), RtmError>,
    ) {
        let SubscribeTicket { conn, id, sub } = ticket;
        let Some(c) = self.conn_mut(conn) else { return };
        c.in_flight = c.in_flight.saturating_sub(1);
        match result {
            Ok(()) => {
                self.add_subscription(conn, &sub);
                self.transmit(conn, reply_true(&id));
            }
            Err(err) => self.reply_error(conn, &id, err),
        }
    }

    /// The broker came up (`true`) or went down (`false`). While it is down,
    /// Publish and Push fail with `rtm/broker-unavailable`. Coming back up
    /// re-announces every topic this server needs.
    pub fn handle_broker_state(&mut self, up: bool) {
        let was_up = self.broker_up;
        self.broker_up = up;
        if up && !was_up {
            self.resubscribe_all();
        }
    }

    /// Whether the broker is believed up.
    pub fn broker_up(&self) -> bool {
        self.broker_up
    }

    /// A message arrived from the broker on `topic`. Messages from this
    /// server itself are skipped (it delivered them locally). Returns the
    /// number of local deliveries.
    pub fn handle_broker_message(
        &mut self,
        topic: &str,
        payload: Bytes,
    ) -> Result<usize, EnvelopeError> {
        let envelope = Envelope::decode(payload)?;
        if envelope.origin == self.config.server_id {
            return Ok(0);
        }
        let Some(target) = self.routing.target(topic).cloned() else {
            return Ok(0);
        };
        Ok(match target {
            Target::User(user) => self.deliver_user(&user, &envelope.frame),
            Target::Push(event, tag) => match &envelope.tags {
                Some(tags) if tags.len() > 1 => {
                    if !self.recent.insert(&envelope.origin, envelope.seq) {
                        return Ok(0);
                    }
                    self.deliver_push(&event, tags, &envelope.frame)
                }
                _ => self.deliver_push(&event, std::slice::from_ref(&tag), &envelope.frame),
            },
        })
    }

    /// Time passed: auth deadlines and heartbeats due by `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, raw, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let conn = ConnId(raw);
            let Some(c) = self.conn(conn) else { continue };
            match kind {
                TimerKind::AuthDeadline => {
                    if c.phase != Phase::Open {
                        let info = c.info.clone();
                        self.close(conn, CloseCode::AUTH_TIMEOUT, "authentication timeout");
                        self.outputs.push_back(ServerOutput::AuthTimedOut { info });
                    }
                }
                TimerKind::Heartbeat => {
                    let Some(hb) = self.config.heartbeat else {
                        continue;
                    };
                    if now.saturating_duration_since(c.last_activity) >= hb.timeout {
                        let info = c.info.clone();
                        self.close(conn, CloseCode::GOING_AWAY, "heartbeat timeout");
                        self.outputs.push_back(ServerOutput::PeerSilent { info });
                    } else {
                        // Next: the next ping, or the silence deadline if that comes first,
                        // so a silent peer is closed at `timeout`, not up to an interval late.
                        let deadline = c.last_activity + hb.timeout;
                        self.outputs.push_back(ServerOutput::Ping { conn });
                        let next = (now + hb.interval).min(deadline);
                        self.timers.push(Reverse((next, raw, TimerKind::Heartbeat)));
                    }
                }
            }
        }
    }

    // ----- outputs -----

    /// The next thing the adapter must do, or `None` when there is nothing.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    // ----- internals -----

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        let slot = self.slots.get(id.index())?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.conn.as_ref()
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.conn.as_mut()
    }

    fn live_conns(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.slots.iter().filter_map(|s| s.conn.as_ref())
    }

    fn check_broker(&self) -> Result<(), RtmError> {
        if self.config.broker && !self.broker_up {
            return Err(RtmError::new(
                ErrorCode::BrokerUnavailable,
                "the broker is down; nothing was sent",
            ));
        }
        Ok(())
    }

    /// Counts one more in-flight request, or `None` at the limit.
    fn take_slot(&mut self, conn: ConnId) -> Option<Arc<ConnInfo>> {
        let max = self.config.limits.max_in_flight;
        let c = self.conn_mut(conn)?;
        if c.in_flight >= max {
            return None;
        }
        c.in_flight += 1;
        Some(c.info.clone())
    }

    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        self.outputs
            .push_back(ServerOutput::Transmit { conn, frame });
    }

    fn reply_error(&mut self, conn: ConnId, id: &RequestId, err: RtmError) {
        self.transmit(conn, frame::encode_error_reply(id, &err));
    }

    fn reply_unauthenticated(&mut self, conn: ConnId, id: &RequestId) {
        self.reply_error(
            conn,
            id,
            RtmError::new(ErrorCode::Unauthenticated, "authenticate first"),
        );
    }

    fn reply_too_many(&mut self, conn: ConnId, id: &RequestId) {
        let max = self.config.limits.max_in_flight;
        self.reply_error(
            conn,
            id,
            RtmError::new(
                ErrorCode::TooManyRequests,
                format!("more than {max} requests in flight"),
            ),
        );
    }

    fn topic_change(&mut self, change: Option<Change>) {
        if !self.config.broker {
            return;
        }
        let command = match change {
            Some(Change::Subscribe(topic)) => BrokerCommand::Subscribe(topic),
            Some(Change::Unsubscribe(topic)) => BrokerCommand::Unsubscribe(topic),
            None => return,
        };
        self.outputs.push_back(ServerOutput::Broker(command));
    }

    fn add_subscription(&mut self, conn: ConnId, sub: &PushSub) {
        for tag in &sub.tags {
            if let Some((event, tag, change)) = self.routing.add_push(&sub.event, tag, conn) {
                if let Some(c) = self.conn_mut(conn) {
                    c.subs.push((event, tag));
                }
                self.topic_change(change);
            }
        }
    }

    fn remove_subscription(&mut self, conn: ConnId, event: &str, tag: &str) {
        if let Some(change) = self.routing.remove_push(event, tag, conn) {
            if let Some(c) = self.conn_mut(conn) {
                c.subs.retain(|(e, t)| !(&**e == event && &**t == tag));
            }
            self.topic_change(change);
        }
    }

    fn deliver_user(&mut self, user: &str, frame: &Bytes) -> usize {
        let mut sent = 0;
        for conn in self.routing.user_conns(user) {
            self.outputs.push_back(ServerOutput::Transmit {
                conn,
                frame: frame.clone(),
            });
            sent += 1;
        }
        sent
    }

    fn deliver_push<S: AsRef<str>>(&mut self, event: &str, tags: &[S], frame: &Bytes) -> usize {
        self.mark += 1;
        let mark = self.mark;
        let mut sent = 0;
        for tag in tags {
            for conn in self.routing.push_holders(event, tag.as_ref()) {
                let Some(slot) = self.slots.get_mut(conn.index()) else {
                    continue;
                };
                let Some(c) = slot.conn.as_mut() else {
                    continue;
                };
                if c.mark == mark {
                    continue;
                }
                c.mark = mark;
                self.outputs.push_back(ServerOutput::Transmit {
                    conn,
                    frame: frame.clone(),
                });
                sent += 1;
            }
        }
        sent
    }

    fn close(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if self.conn(conn).is_none() {
            return;
        }
        self.outputs
            .push_back(ServerOutput::Close { conn, code, reason });
        self.drop_conn(conn);
    }

    fn drop_conn(&mut self, conn: ConnId) {
        let Some(slot) = self.slots.get_mut(conn.index()) else {
            return;
        };
        if slot.generation != conn.generation() {
            return;
        }
        let Some(c) = slot.conn.take() else { return };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(conn.index() as u32);
        self.live -= 1;
        if let Some(user) = c.info.user_id() {
            let change = self.routing.remove_user(user, conn);
            self.topic_change(change);
        }
        for (event, tag) in &c.subs {
            if let Some(change) = self.routing.remove_push(event, tag, conn) {
                self.topic_change(change);
            }
        }
        self.outputs
            .push_back(ServerOutput::Disconnected { info: c.info });
    }
}

/// Whether JavaScript reads this value as false (`null`, `false`, `0`, `""`).
fn is_js_falsy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null | serde_json::Value::Bool(false) => true,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn reply_true(id: &RequestId) -> Bytes {
    frame::encode_reply(id, &true).unwrap_or_default()
}
