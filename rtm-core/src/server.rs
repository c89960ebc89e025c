//! The whole server as one state machine, for tests and single-threaded hosts.
//!
//! [`ServerCore`] puts the two halves of the protocol together — a
//! [`Connection`] per socket and the [`Router`] they share — behind one
//! `&mut self` API with connection ids: what a deterministic test or a
//! single-threaded embedder wants. (A multi-core adapter such as
//! `rtm-driver` runs each [`Connection`] on its own task and shares the
//! [`Router`] instead.) It does no IO and reads no clock. Drive it in this
//! order:
//!
//! 1. **inputs** (`handle_*`): a connection opened or closed, a text frame,
//!    the outcome of an auth / function / authorizer it was asked to run, a
//!    broker message, the time (`handle_timeout`);
//! 2. **commands**: [`ServerCore::emit`], [`ServerCore::publish`], [`ServerCore::push`], …;
//! 3. **outputs**: after every input or command, drain [`ServerCore::poll_output`]
//!    until it returns `None`, then wait until [`ServerCore::poll_timeout`] (or the
//!    next input) and call [`ServerCore::handle_timeout`].
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rtm_core::{ServerCore, ServerConfig, ServerOutput, ConnMeta};
//!
//! let now = Instant::now();
//! let mut server = ServerCore::new(ServerConfig::new("s1"));
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
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::config::ServerConfig;
use crate::connection::{AuthTicket, CallTicket, SubscribeTicket};
use crate::connection::{ConnOutput, Connection, Settled};
use crate::envelope::EnvelopeError;
use crate::error::{CloseCode, RtmError};
use crate::frame::Args;
use crate::functions::FunctionId;
use crate::functions::Functions;
use crate::functions::SharedLimits;
use crate::peer::{ConnId, ConnInfo, ConnMeta, Identity};
use crate::rate::RateLimit;
use crate::router::{BrokerPublish, RecentPushes, Router};
use crate::topic::Topic;

/// A broker operation the adapter must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerCommand {
    /// Start receiving this topic (a local connection needs it now). Report
    /// the outcome with [`ServerCore::handle_topic_subscribed`]: subscriptions
    /// that need the topic are acknowledged only then, and no other command
    /// for the topic is sent before.
    Subscribe(Topic),
    /// Stop receiving this topic (no local connection needs it any more).
    /// Report the answer with [`ServerCore::handle_topic_unsubscribed`]: no
    /// other command for the topic is sent before.
    Unsubscribe(Topic),
    /// Send this envelope to every server subscribed to `topic`.
    Publish {
        /// Where.
        topic: Topic,
        /// An encoded [`crate::Envelope`].
        payload: Bytes,
        /// `Some`: the event keeps history: append it to `topic`'s stream
        /// with these options and publish it with its position, in one step
        /// (what `rtm_broker::Broker::publish_to_stream` does). This server
        /// delivers it to its own connections when it comes back.
        stream: Option<crate::stream::StreamOptions>,
    },
    /// Read a stream for a subscribe that tracks it (what
    /// `rtm_broker::Broker::read_stream` does), then report it with
    /// [`ServerCore::handle_stream_read`].
    ReadStream(crate::sync::StreamReadRequest),
}

impl From<BrokerPublish> for BrokerCommand {
    fn from(publish: BrokerPublish) -> Self {
        BrokerCommand::Publish {
            topic: publish.topic,
            payload: publish.payload,
            stream: publish.stream,
        }
    }
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
    /// Run the authentication handler on `data`, then call [`ServerCore::handle_auth_result`].
    Authenticate {
        /// Hand it back with the decision.
        ticket: AuthTicket,
        /// The connection.
        info: Arc<ConnInfo>,
        /// The `auth` request's `data` array.
        data: Args,
    },
    /// Run the function, then call [`ServerCore::handle_call_result`].
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
    /// Ask the subscribe authorizer, then call [`ServerCore::handle_authorize_result`].
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
#[non_exhaustive]
pub enum OpenError {
    /// `Limits::max_connections` reached: refuse with 1013.
    #[error("too many connections (limit {0})")]
    TooManyConnections(usize),
}

/// The server state machine. See the [module docs](self).
#[derive(Debug)]
pub struct ServerCore {
    config: Arc<ServerConfig>,
    functions: Arc<Functions>,
    limits: SharedLimits,
    router: Router<()>,
    conns: HashMap<ConnId, Connection>,
    next_conn: u64,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    scheduled: HashMap<ConnId, Instant>,
    /// The latest time an input passed in (for inputs that carry none).
    now: Option<Instant>,
    outputs: VecDeque<ServerOutput>,
    recent: RecentPushes,
}

impl ServerCore {
    /// A server core with this configuration.
    pub fn new(config: ServerConfig) -> Self {
        ServerCore {
            router: Router::new(&config),
            limits: SharedLimits::new(&Functions::default(), &config),
            config: Arc::new(config),
            functions: Arc::new(Functions::default()),
            conns: HashMap::new(),
            next_conn: 0,
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
            now: None,
            outputs: VecDeque::new(),
            recent: RecentPushes::default(),
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The info of a live connection.
    pub fn conn_info(&self, conn: ConnId) -> Option<&Arc<ConnInfo>> {
        self.conns.get(&conn).map(Connection::info)
    }

    /// Whether a connection is live and past authentication (or on a server without it).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(Connection::is_open)
    }

    /// Requests in flight on a connection (invokes, subscribes being
    /// authorized or confirmed, an authentication).
    pub fn in_flight(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, Connection::in_flight)
    }

    /// Requests in flight on all connections.
    pub fn total_in_flight(&self) -> usize {
        self.conns.values().map(Connection::in_flight).sum()
    }

    /// Every live connection.
    pub fn connections(&self) -> impl Iterator<Item = &Arc<ConnInfo>> + '_ {
        self.conns.values().map(Connection::info)
    }

    /// The broker topics this server currently needs.
    pub fn broker_topics(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.router.topics()
    }

    /// Users with at least one local connection, and (event, tag) pairs with at least one holder.
    pub fn index_sizes(&self) -> (usize, usize) {
        self.router.index_sizes()
    }

    /// The name a function was registered under.
    pub fn function_name(&self, id: FunctionId) -> Option<&str> {
        self.functions.name(id)
    }

    /// The id of a registered function.
    pub fn function_id(&self, name: &str) -> Option<FunctionId> {
        self.functions.id(name)
    }

    /// Subscribes whose streams are being synced (their history read).
    pub fn sync_count(&self) -> usize {
        self.router.sync_count()
    }

    /// Whether the broker is believed up.
    pub fn broker_up(&self) -> bool {
        self.router.broker_up()
    }

    // ----- commands -----

    /// Registers a function name; invokes of other names get `rtm/function-not-found`.
    /// Registering a name twice returns the same id. Register before the
    /// first connection opens: connections see the functions of their start.
    pub fn register_function(&mut self, name: &str) -> FunctionId {
        Arc::make_mut(&mut self.functions).register(name)
    }

    /// Limits how often a registered function may be called, per connection
    /// and per user (see [`RateLimit`]): a call past it gets
    /// `rtm/too-many-requests` and is not run. Set it before the first
    /// connection opens, as [`ServerCore::register_function`].
    pub fn set_rate_limit(&mut self, function: FunctionId, limit: RateLimit) {
        Arc::make_mut(&mut self.functions).set_rate_limit(function, limit);
        self.limits = SharedLimits::new(&self.functions, &self.config);
    }

    /// Emit: sends `event` with `args` to every connection on this server that
    /// `filter` accepts (only authenticated ones on a server with auth).
    /// The frame is encoded once. Returns how many connections it was sent to.
    pub fn emit(
        &mut self,
        event: &str,
        filter: impl FnMut(&ConnInfo) -> bool,
        args: &Args,
    ) -> Result<usize, RtmError> {
        let outputs = &mut self.outputs;
        self.router.emit(event, filter, args, |conn, _, frame| {
            outputs.push_back(ServerOutput::Transmit {
                conn,
                frame: frame.clone(),
            })
        })
    }

    /// Publish: sends `event` to every connection of `user` on every server of
    /// the cluster. Only on a server with authentication (`rtm/no-auth`
    /// otherwise); `rtm/broker-unavailable`, with nothing sent, while the
    /// broker is known to be down. Returns the number of local deliveries.
    pub fn publish(&mut self, user: &str, event: &str, args: &Args) -> Result<usize, RtmError> {
        let outputs = &mut self.outputs;
        // Unstamped: this core reads no clock, wall or other.
        let (sent, command) = self
            .router
            .publish(user, event, args, None, |conn, _, frame| {
                outputs.push_back(ServerOutput::Transmit {
                    conn,
                    frame: frame.clone(),
                })
            })?;
        if let Some(command) = command {
            self.outputs.push_back(ServerOutput::Broker(command.into()));
        }
        Ok(sent)
    }

    /// Push: sends `event` once to each connection, on every server, holding a
    /// push subscription for `event` with at least one of `tags`. Returns the
    /// number of local deliveries.
    pub fn push(&mut self, event: &str, tags: &[String], args: &Args) -> Result<usize, RtmError> {
        let outputs = &mut self.outputs;
        let (sent, commands) = self
            .router
            .push(event, tags, args, None, |conn, _, frame| {
                outputs.push_back(ServerOutput::Transmit {
                    conn,
                    frame: frame.clone(),
                })
            })?;
        for command in commands {
            self.outputs.push_back(ServerOutput::Broker(command.into()));
        }
        Ok(sent)
    }

    /// Closes a connection from the application side.
    pub fn close_connection(&mut self, conn: ConnId, code: CloseCode, reason: &'static str) {
        self.with_conn(conn, |c| c.close(code, reason));
    }

    /// Closes every connection (shutdown: 1001).
    pub fn close_all(&mut self, code: CloseCode, reason: &'static str) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.close_connection(id, code, reason);
        }
    }

    // ----- inputs -----

    /// A WebSocket connection opened.
    pub fn handle_open(&mut self, meta: ConnMeta, now: Instant) -> Result<ConnId, OpenError> {
        self.set_now(now);
        let max = self.config.limits.max_connections;
        if self.conns.len() >= max {
            return Err(OpenError::TooManyConnections(max));
        }
        self.next_conn += 1;
        let id = ConnId::from_u64(self.next_conn);
        let conn = Connection::new(id, meta, self.config.clone(), self.functions.clone(), now);
        self.router
            .insert(conn.info().clone(), (), !self.config.requires_auth());
        self.conns.insert(id, conn);
        self.after(id);
        self.flush();
        Ok(id)
    }

    /// A text frame arrived on a connection.
    pub fn handle_text(&mut self, conn: ConnId, frame: Bytes, now: Instant) {
        self.set_now(now);
        self.with_conn(conn, |c| c.handle_text(frame, now));
    }

    /// A binary frame arrived: close 1003.
    pub fn handle_binary(&mut self, conn: ConnId) {
        self.with_conn(conn, Connection::handle_binary);
    }

    /// The transport refused a frame over the size limit: close 1009.
    pub fn handle_oversized(&mut self, conn: ConnId) {
        self.with_conn(conn, Connection::handle_oversized);
    }

    /// The connection's outbound bound was passed: close 1013 `rtm/slow-consumer`.
    pub fn handle_slow_consumer(&mut self, conn: ConnId) {
        self.with_conn(conn, Connection::handle_slow_consumer);
    }

    /// Something arrived from the peer (a pong, any frame): it is alive.
    pub fn handle_activity(&mut self, conn: ConnId, now: Instant) {
        self.set_now(now);
        self.with_conn(conn, |c| c.handle_activity(now));
    }

    /// The connection is gone (closed by the peer or the transport failed).
    /// Its state is dropped; results still in flight for it are discarded.
    pub fn handle_close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.forget(c);
        }
        self.flush();
    }

    /// The authentication handler decided.
    pub fn handle_auth_result(&mut self, ticket: AuthTicket, result: Result<Identity, RtmError>) {
        self.with_conn(ticket.conn(), |c| c.handle_auth_result(ticket, result));
    }

    /// A function finished: its value becomes the reply's `data`, its error an error reply.
    /// A value that cannot be encoded as JSON becomes `rtm/internal`.
    pub fn handle_call_result<T: Serialize + ?Sized>(
        &mut self,
        ticket: CallTicket,
        result: Result<&T, RtmError>,
    ) {
        self.with_conn(ticket.conn(), |c| c.handle_call_result(ticket, result));
    }

    /// The subscribe authorizer decided: `Ok` allows, `Err` denies (`rtm/forbidden` unless
    /// the error carries another code).
    pub fn handle_authorize_result(
        &mut self,
        ticket: SubscribeTicket,
        result: Result<(), RtmError>,
    ) {
        self.with_conn(ticket.conn(), |c| c.handle_authorize_result(ticket, result));
    }

    /// The broker answered a [`BrokerCommand::Subscribe`]: `true` when the
    /// topic is subscribed. The subscriptions waiting for it are acknowledged
    /// (once every topic they need is confirmed) or fail with
    /// `rtm/broker-unavailable`, leaving nothing behind.
    pub fn handle_topic_subscribed(&mut self, topic: &Topic, ok: bool) {
        self.router.handle_topic_subscribed(topic, ok);
        self.flush();
    }

    /// The broker answered a [`BrokerCommand::Unsubscribe`] (whatever the
    /// outcome): the next command for that topic may go.
    pub fn handle_topic_unsubscribed(&mut self, topic: &Topic) {
        self.router.handle_topic_unsubscribed(topic);
        self.flush();
    }

    /// The broker came up (`true`) or went down (`false`). While it is down,
    /// Publish and Push fail with `rtm/broker-unavailable`, and subscriptions
    /// waiting for a topic fail the same way. Coming back up re-announces
    /// every topic this server needs.
    pub fn handle_broker_state(&mut self, up: bool) {
        self.router.handle_broker_state(up);
        self.flush();
    }

    /// A [`BrokerCommand::ReadStream`] came back: the stream's position and
    /// its kept envelopes, or why the read failed. `now_ms`: the time in
    /// ms since the Unix epoch.
    pub fn handle_stream_read(
        &mut self,
        id: crate::sync::ReadId,
        result: Result<(crate::StreamPosition, Vec<Bytes>), String>,
        now_ms: u64,
    ) {
        self.router.handle_stream_read(id, result, now_ms);
        self.flush();
    }

    /// A message arrived from the broker on `topic`. Messages from this
    /// server itself are skipped (it delivered them locally). Returns the
    /// number of local deliveries.
    pub fn handle_broker_message(
        &mut self,
        topic: &str,
        payload: Bytes,
    ) -> Result<usize, EnvelopeError> {
        let outputs = &mut self.outputs;
        self.router
            .handle_broker_message(topic, payload, &mut self.recent, |conn, _, frame| {
                outputs.push_back(ServerOutput::Transmit {
                    conn,
                    frame: frame.clone(),
                })
            })
            .map(|received| received.delivered)
    }

    /// Time passed: auth deadlines, heartbeats and broker confirmations due
    /// by `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.set_now(now);
        while let Some(Reverse((at, conn))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.scheduled.get(&conn) != Some(&at) {
                continue;
            }
            self.scheduled.remove(&conn);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.handle_timeout(now);
                self.after(conn);
            }
        }
        self.router.handle_timeout(now);
        self.flush();
    }

    // ----- outputs -----

    /// The next thing the adapter must do, or `None` when there is nothing.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// When [`ServerCore::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.timers.peek().map(|Reverse((at, _))| *at);
        match (conns, self.router.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    fn set_now(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |was| was.max(now)));
    }

    /// Runs `input` on a live connection, then carries out what follows.
    fn with_conn(&mut self, conn: ConnId, input: impl FnOnce(&mut Connection)) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        input(c);
        self.after(conn);
        self.flush();
    }

    /// Carries out a connection's outputs (joining the router, subscribing,
    /// closing), then schedules its next timer.
    fn after(&mut self, id: ConnId) {
        let now = self.now.unwrap_or_else(Instant::now);
        let mut closed = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(output) = conn.poll_output() else {
                break;
            };
            let info = conn.info().clone();
            match output {
                ConnOutput::Transmit(frame) => self
                    .outputs
                    .push_back(ServerOutput::Transmit { conn: id, frame }),
                ConnOutput::Close { code, reason } => {
                    closed = true;
                    self.outputs.push_back(ServerOutput::Close {
                        conn: id,
                        code,
                        reason,
                    });
                }
                ConnOutput::Ping => self.outputs.push_back(ServerOutput::Ping { conn: id }),
                ConnOutput::Authenticate { ticket, data } => {
                    match self.limits.check_sign_in(&info, now) {
                        Ok(()) => self.outputs.push_back(ServerOutput::Authenticate {
                            ticket,
                            info,
                            data,
                        }),
                        Err(err) => conn.handle_auth_result(ticket, Err(err)),
                    }
                }
                ConnOutput::Invoke {
                    ticket,
                    function,
                    args,
                } => {
                    let name = self.functions.name(function).unwrap_or_default();
                    match self.limits.check_call(function, name, &info, now) {
                        Ok(()) => self.outputs.push_back(ServerOutput::Invoke {
                            ticket,
                            function,
                            info,
                            args,
                        }),
                        Err(err) => conn.handle_call_result::<()>(ticket, Err(err)),
                    }
                }
                ConnOutput::Authorize { ticket } => self
                    .outputs
                    .push_back(ServerOutput::Authorize { ticket, info }),
                ConnOutput::Join { ticket, info } => {
                    if let Some(settled) = self.router.join(info, ticket, now) {
                        self.settle(settled);
                    }
                }
                ConnOutput::Subscribe { ticket } => {
                    if let Some(settled) = self.router.subscribe(ticket, now) {
                        self.settle(settled);
                    }
                }
                ConnOutput::Unsubscribe(sub) => self.router.unsubscribe(id, &sub.event, &sub.tags),
                ConnOutput::AuthTimedOut => {
                    self.outputs.push_back(ServerOutput::AuthTimedOut { info })
                }
                ConnOutput::PeerSilent => self.outputs.push_back(ServerOutput::PeerSilent { info }),
                // For a driver's metrics: the reply already went.
                ConnOutput::CallRefused { .. } | ConnOutput::SubscribeAnswered { .. } => {}
            }
        }
        if closed {
            if let Some(c) = self.conns.remove(&id) {
                self.forget(c);
            }
            return;
        }
        let next = self.conns.get(&id).and_then(|c| c.poll_timeout());
        match next {
            Some((at, _)) if self.scheduled.get(&id) != Some(&at) => {
                self.scheduled.insert(id, at);
                self.timers.push(Reverse((at, id)));
            }
            Some(_) => {}
            None => {
                self.scheduled.remove(&id);
            }
        }
    }

    /// Hands a settled request to its connection (its outputs are carried
    /// out by the caller's loop).
    fn settle(&mut self, settled: Settled) {
        if let Some(c) = self.conns.get_mut(&settled.conn()) {
            c.handle_settled(settled);
        }
    }

    /// Carries out what the router decided: requests settled (and what their
    /// connections do next), topic changes for the broker.
    fn flush(&mut self) {
        loop {
            if let Some(settled) = self.router.poll_settled() {
                let conn = settled.conn();
                self.settle(settled);
                self.after(conn);
                continue;
            }
            if let Some(read) = self.router.poll_stream_read() {
                self.outputs
                    .push_back(ServerOutput::Broker(BrokerCommand::ReadStream(read)));
                continue;
            }
            let Some(mut changes) = self.router.poll_topic_changes(usize::MAX) else {
                return;
            };
            // In a stable order: the same inputs give the same outputs (the
            // order within a batch follows hash sets otherwise).
            changes.subscribe.sort();
            changes.unsubscribe.sort();
            for topic in changes.subscribe {
                self.outputs
                    .push_back(ServerOutput::Broker(BrokerCommand::Subscribe(topic)));
            }
            for topic in changes.unsubscribe {
                self.outputs
                    .push_back(ServerOutput::Broker(BrokerCommand::Unsubscribe(topic)));
            }
        }
    }

    /// A connection is gone: out of the router, its topics released.
    fn forget(&mut self, conn: Connection) {
        self.scheduled.remove(&conn.id());
        self.router.remove(conn.id());
        self.outputs.push_back(ServerOutput::Disconnected {
            info: conn.info().clone(),
        });
    }
}
