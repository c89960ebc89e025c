//! A synchronous driver for the server core: the fixture functions run inline,
//! `sleep(ms)` replies when virtual time passes `ms`, and every frame or close
//! is filed in the inbox of its connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtm_core::testkit::fixture::{self, Action};
use rtm_core::{AuthTicket, CallTicket, SubscribeTicket};
use rtm_core::{
    BrokerCommand, CloseCode, ConnId, ConnMeta, RtmError, ServerConfig, ServerCore, ServerOutput,
};
use serde_json::Value;

/// What a connection received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    /// A text frame.
    Frame(Bytes),
    /// The server closed it.
    Close {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: &'static str,
    },
}

impl Delivery {
    /// The frame as JSON; panics on a close or on text that is not JSON.
    pub(crate) fn json(&self) -> Value {
        match self {
            Delivery::Frame(frame) => serde_json::from_slice(frame).expect("frame is JSON"),
            Delivery::Close { code, .. } => panic!("expected a frame, got close {code}"),
        }
    }
}

/// The server core plus the fixture, driven synchronously.
pub(crate) struct Harness {
    /// The core under test.
    pub server: ServerCore,
    /// Virtual time.
    pub now: Instant,
    /// Keep invoke tickets in `held_calls` instead of running the functions.
    pub hold_calls: bool,
    /// Keep auth tickets in `held_auth` instead of running the fixture's handler.
    pub hold_auth: bool,
    /// Keep authorize tickets in `held_authorize` instead of running the fixture's authorizer.
    pub hold_authorize: bool,
    /// Keep broker subscribes unconfirmed in `held_topics` instead of
    /// confirming each as soon as it is output (as a broker that is up does).
    pub hold_topics: bool,
    /// Broker subscribes not yet confirmed (with `hold_topics`).
    pub held_topics: Vec<rtm_core::Topic>,
    /// Keep broker unsubscribes unanswered in `held_unsubscribes` instead of
    /// answering each as soon as it is output.
    pub hold_unsubscribes: bool,
    /// Broker unsubscribes not yet answered (with `hold_unsubscribes`).
    pub held_unsubscribes: Vec<rtm_core::Topic>,
    /// Invokes not run (with `hold_calls`), with their function names.
    pub held_calls: Vec<(CallTicket, String)>,
    /// Auth requests not decided (with `hold_auth`).
    pub held_auth: Vec<AuthTicket>,
    /// Subscribe authorizations not decided (with `hold_authorize`).
    pub held_authorize: Vec<SubscribeTicket>,
    /// Every output that is not a frame or a close for a connection, in order.
    pub notices: Vec<ServerOutput>,
    /// How many fixture functions ran.
    pub functions_run: usize,
    inbox: HashMap<ConnId, VecDeque<Delivery>>,
    sleepers: Vec<(Instant, CallTicket, u64)>,
}

impl Harness {
    /// A core with this configuration and every fixture function registered.
    pub(crate) fn new(config: ServerConfig) -> Self {
        let mut server = ServerCore::new(config);
        fixture::register(&mut server);
        Harness {
            server,
            now: Instant::now(),
            hold_calls: false,
            hold_auth: false,
            hold_authorize: false,
            hold_topics: false,
            held_topics: Vec::new(),
            hold_unsubscribes: false,
            held_unsubscribes: Vec::new(),
            held_calls: Vec::new(),
            held_auth: Vec::new(),
            held_authorize: Vec::new(),
            notices: Vec::new(),
            functions_run: 0,
            inbox: HashMap::new(),
            sleepers: Vec::new(),
        }
    }

    /// The fixture server's configuration: subscriptions go through the
    /// fixture's authorizer; no heartbeat, so time jumps close no one.
    pub(crate) fn fixture_config() -> ServerConfig {
        ServerConfig {
            heartbeat: None,
            authorize_subscriptions: true,
            ..ServerConfig::new("s1")
        }
    }

    /// A fixture server without auth.
    pub(crate) fn plain() -> Self {
        Self::new(Self::fixture_config())
    }

    /// A fixture server with auth (10 s timeout).
    pub(crate) fn with_auth() -> Self {
        Self::new(ServerConfig {
            auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
            ..Self::fixture_config()
        })
    }

    /// A fixture server with auth and a broker.
    pub(crate) fn with_broker() -> Self {
        Self::new(ServerConfig {
            auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
            broker: true,
            ..Self::fixture_config()
        })
    }

    /// Opens a connection from this peer address.
    pub(crate) fn open_from(&mut self, peer: std::net::SocketAddr) -> ConnId {
        let meta = ConnMeta {
            peer_addr: Some(peer),
            path: None,
        };
        let conn = self
            .server
            .handle_open(meta, self.now)
            .expect("under max_connections");
        self.pump();
        conn
    }

    /// Opens a connection.
    pub(crate) fn open(&mut self) -> ConnId {
        let conn = self
            .server
            .handle_open(ConnMeta::default(), self.now)
            .expect("connection accepted");
        self.pump();
        conn
    }

    /// Opens a connection and authenticates it as `user` (on a server with auth).
    pub(crate) fn open_as(&mut self, user: &str) -> ConnId {
        let conn = self.open();
        self.send(
            conn,
            format!(r#"{{"id":"auth","type":"auth","data":["user:{user}"]}}"#),
        );
        let reply = self.next(conn).expect("auth reply").json();
        assert_eq!(reply["data"]["user"], user, "auth accepted");
        conn
    }

    /// A text frame from the peer.
    pub(crate) fn send(&mut self, conn: ConnId, text: impl Into<Bytes>) {
        self.server.handle_text(conn, text.into(), self.now);
        self.pump();
    }

    /// A binary frame from the peer.
    pub(crate) fn send_binary(&mut self, conn: ConnId) {
        self.server.handle_binary(conn);
        self.pump();
    }

    /// The peer closed.
    pub(crate) fn close(&mut self, conn: ConnId) {
        self.server.handle_close(conn);
        self.pump();
    }

    /// Virtual time moves forward: sleeps finish and timers fire in deadline order.
    pub(crate) fn advance(&mut self, ms: u64) {
        let target = self.now + Duration::from_millis(ms);
        loop {
            let sleeper = self.sleepers.iter().map(|(at, _, _)| *at).min();
            let next = match (sleeper, self.server.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(at) => at,
                    None => break,
                },
            };
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            self.wake_sleepers();
            self.server.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
        self.server.handle_timeout(self.now);
        self.pump();
    }

    fn wake_sleepers(&mut self) {
        self.sleepers.sort_by_key(|(at, _, _)| *at);
        while self
            .sleepers
            .first()
            .is_some_and(|(at, _, _)| *at <= self.now)
        {
            let (_, ticket, ms) = self.sleepers.remove(0);
            let result = fixture::run_on(&mut self.server, Action::Sleep { ms });
            self.answer(ticket, result);
        }
    }

    /// Answers a call with a fixture result.
    pub(crate) fn answer(&mut self, ticket: CallTicket, result: Result<Value, RtmError>) {
        match result {
            Ok(value) => self.server.handle_call_result(ticket, Ok(&value)),
            Err(err) => self.server.handle_call_result::<Value>(ticket, Err(err)),
        }
        self.pump();
    }

    /// Drains the core's outputs, running handlers as the fixture server would.
    pub(crate) fn pump(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                ServerOutput::Transmit { conn, frame } => {
                    self.inbox
                        .entry(conn)
                        .or_default()
                        .push_back(Delivery::Frame(frame));
                }
                ServerOutput::Close { conn, code, reason } => {
                    self.inbox
                        .entry(conn)
                        .or_default()
                        .push_back(Delivery::Close { code, reason });
                }
                ServerOutput::Authenticate { ticket, data, .. } if !self.hold_auth => {
                    self.server
                        .handle_auth_result(ticket, fixture::authenticate(&data));
                }
                ServerOutput::Authenticate { ticket, .. } => self.held_auth.push(ticket),
                ServerOutput::Authorize { ticket, .. } if !self.hold_authorize => {
                    let decision = fixture::authorize(ticket.event(), ticket.tags());
                    self.server.handle_authorize_result(ticket, decision);
                }
                ServerOutput::Authorize { ticket, .. } => self.held_authorize.push(ticket),
                ServerOutput::Invoke {
                    ticket,
                    function,
                    info,
                    args,
                } => {
                    let name = self
                        .server
                        .function_name(function)
                        .unwrap_or_default()
                        .to_owned();
                    if self.hold_calls {
                        self.held_calls.push((ticket, name));
                        continue;
                    }
                    self.functions_run += 1;
                    match fixture::plan(&name, &info, &args) {
                        Action::Sleep { ms } => {
                            // A sleep past the end of representable time never wakes.
                            if let Some(at) = self.now.checked_add(Duration::from_millis(ms)) {
                                self.sleepers.push((at, ticket, ms));
                            }
                        }
                        action => {
                            let result = fixture::run_on(&mut self.server, action);
                            match result {
                                Ok(value) => self.server.handle_call_result(ticket, Ok(&value)),
                                Err(err) => {
                                    self.server.handle_call_result::<Value>(ticket, Err(err))
                                }
                            }
                        }
                    }
                }
                ServerOutput::Broker(BrokerCommand::Subscribe(topic)) => {
                    if self.hold_topics {
                        self.held_topics.push(topic.clone());
                    } else {
                        self.server.handle_topic_subscribed(&topic, true);
                    }
                    self.notices
                        .push(ServerOutput::Broker(BrokerCommand::Subscribe(topic)));
                }
                ServerOutput::Broker(BrokerCommand::Unsubscribe(topic)) => {
                    if self.hold_unsubscribes {
                        self.held_unsubscribes.push(topic.clone());
                    } else {
                        // Answered at once: the next command for it may go.
                        self.server.handle_topic_unsubscribed(&topic);
                    }
                    self.notices
                        .push(ServerOutput::Broker(BrokerCommand::Unsubscribe(topic)));
                }
                other => self.notices.push(other),
            }
        }
    }

    /// The next thing `conn` received, if any.
    pub(crate) fn next(&mut self, conn: ConnId) -> Option<Delivery> {
        self.inbox.get_mut(&conn)?.pop_front()
    }

    /// Everything `conn` received so far.
    pub(crate) fn take(&mut self, conn: ConnId) -> Vec<Delivery> {
        self.inbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Everything `conn` received so far, as JSON frames (panics on a close).
    pub(crate) fn frames(&mut self, conn: ConnId) -> Vec<Value> {
        self.take(conn).iter().map(Delivery::json).collect()
    }

    /// The one frame `conn` received, as JSON; panics unless there is exactly one.
    pub(crate) fn only_frame(&mut self, conn: ConnId) -> Value {
        let frames = self.frames(conn);
        assert_eq!(
            frames.len(),
            1,
            "exactly one frame expected, got {frames:?}"
        );
        frames.into_iter().next().unwrap_or_default()
    }

    /// Whether nothing is waiting for `conn`.
    pub(crate) fn nothing_for(&self, conn: ConnId) -> bool {
        self.inbox.get(&conn).is_none_or(VecDeque::is_empty)
    }

    /// Sleeping calls not yet answered.
    pub(crate) fn sleeping(&self) -> usize {
        self.sleepers.len()
    }

    /// Removes and returns the notices gathered so far.
    pub(crate) fn take_notices(&mut self) -> Vec<ServerOutput> {
        std::mem::take(&mut self.notices)
    }

    /// Removes the broker commands from the notices gathered so far and returns them.
    pub(crate) fn take_broker_commands(&mut self) -> Vec<BrokerCommand> {
        let mut commands = Vec::new();
        self.notices.retain(|notice| match notice {
            ServerOutput::Broker(command) => {
                commands.push(command.clone());
                false
            }
            _ => true,
        });
        commands
    }
}
