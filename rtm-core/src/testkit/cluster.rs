//! [`Cluster`]: several [`ServerCore`] cores, a [`QueuedBroker`] and in-memory
//! connections, driven by one test without sockets, threads or real time.
//!
//! Every operation (connect, send, disconnect, advance, a server command)
//! drains the outputs of the servers it touched at once: frames land in the
//! connection's [`Inbox`], broker commands go to the broker, and
//! authentication, functions and the subscribe authorizer run synchronously
//! through the cluster's [`App`]. Then, unless auto-settle is off, queued
//! broker messages are delivered in FIFO order until none is left. The same
//! inputs always give the same outputs.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::app::App;
use super::queued_broker::QueuedBroker;
use crate::config::ServerConfig;
use crate::error::{CloseCode, RtmError};
use crate::frame::Args;
use crate::peer::{ConnId, ConnMeta};
use crate::server::{BrokerCommand, OpenError, ServerCore, ServerOutput};
use crate::sync::StreamReadRequest;

/// What one in-memory connection received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbox {
    /// Text frames in arrival order (not yet taken with [`Cluster::take_frames`]).
    pub frames: Vec<Bytes>,
    /// How the connection closed: the server's close code and reason, or
    /// `(1000, "client closed")` after [`Cluster::disconnect`]. `None` while open.
    pub closed: Option<(CloseCode, &'static str)>,
}

impl Inbox {
    /// The frames as text, for printing and comparisons.
    pub fn texts(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap_or("<not utf-8>"))
            .collect()
    }
}

/// A simulated cluster: servers `0..n` sharing one in-memory broker.
///
/// ```
/// use std::time::Instant;
/// use rtm_core::testkit::{Cluster, TokenApp};
///
/// let app = TokenApp::new().with_token("t-alice", "alice");
/// let mut cluster = Cluster::new(2, app);
/// let now = Instant::now();
/// let a = cluster.connect(0, now).unwrap();
/// let b = cluster.connect(1, now).unwrap();
/// for (server, conn) in [(0, a), (1, b)] {
///     cluster.send(server, conn, r#"{"id":"1","type":"auth","data":["t-alice"]}"#);
/// }
/// cluster.take_frames(0, a);
/// cluster.take_frames(1, b);
///
/// let args = rtm_core::Args::encode(&["hi"]).unwrap();
/// cluster.publish(0, "alice", "news", &args).unwrap();
/// assert_eq!(cluster.take_frames(1, b), vec![r#"{"event":"news","data":["hi"]}"#]);
/// assert_eq!(cluster.take_frames(0, a).len(), 1);
/// ```
#[derive(Debug)]
pub struct Cluster<A: App = super::TokenApp> {
    servers: Vec<ServerCore>,
    broker: QueuedBroker,
    inboxes: BTreeMap<(usize, ConnId), Inbox>,
    app: A,
    now: Instant,
    auto_settle: bool,
    /// Subscribes the broker carried out and has not confirmed to their server yet.
    unconfirmed: std::collections::VecDeque<(usize, crate::topic::Topic)>,
    auto_confirm: bool,
    /// Subscribe and Unsubscribe commands in the order the servers sent
    /// them, while recording is on.
    topic_log: Option<Vec<(usize, BrokerCommand)>>,
    /// Unsubscribes the broker carried out and has not answered yet (with
    /// auto-answer off).
    unanswered_unsubscribes: std::collections::VecDeque<(usize, crate::topic::Topic)>,
    auto_answer_unsubscribes: bool,
    /// Stream reads the servers asked for and the broker has not answered.
    reads: std::collections::VecDeque<(usize, StreamReadRequest)>,
    /// Reads done ([`Cluster::read_now`]) whose answers are on their way.
    read_answers: std::collections::VecDeque<(
        usize,
        StreamReadRequest,
        (crate::stream::StreamPosition, Vec<Bytes>),
    )>,
    auto_read: bool,
    /// The cluster clock's start (for [`Cluster::unix_ms`]).
    start: Instant,
}

impl<A: App> Cluster<A> {
    /// `n` servers with authentication (10 s timeout), the default limits and
    /// heartbeat, namespace `"rtm"`. See [`Cluster::with_config`].
    pub fn new(n: usize, app: A) -> Self {
        let config = ServerConfig {
            auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
            ..ServerConfig::new("sim")
        };
        Self::with_config(n, config, app)
    }

    /// `n` servers built from `config`, each with `broker = true` and server id
    /// `"{config.server_id}-{index}"`; every function of [`App::functions`] is
    /// registered on each.
    ///
    /// The cluster clock starts at the real `Instant::now()` (an `Instant` has
    /// no fixed origin) and afterwards moves only when a later time is passed
    /// to [`Cluster::connect`] or [`Cluster::advance`].
    pub fn with_config(n: usize, config: ServerConfig, app: A) -> Self {
        let functions = app.functions();
        let servers = (0..n)
            .map(|index| {
                let mut server = ServerCore::new(ServerConfig {
                    server_id: format!("{}-{index}", config.server_id),
                    broker: true,
                    ..config.clone()
                });
                for name in &functions {
                    server.register_function(name);
                }
                server
            })
            .collect();
        Cluster {
            servers,
            broker: QueuedBroker::new(),
            inboxes: BTreeMap::new(),
            app,
            now: Instant::now(),
            auto_settle: true,
            unconfirmed: std::collections::VecDeque::new(),
            auto_confirm: true,
            topic_log: None,
            unanswered_unsubscribes: std::collections::VecDeque::new(),
            auto_answer_unsubscribes: true,
            reads: std::collections::VecDeque::new(),
            read_answers: std::collections::VecDeque::new(),
            auto_read: true,
            start: Instant::now(),
        }
    }

    // ----- getters -----

    /// ServerCore `index`.
    ///
    /// # Panics
    /// If there is no such server (a bug in the test).
    pub fn server(&self, index: usize) -> &ServerCore {
        &self.servers[index]
    }

    /// How many servers the cluster has.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the cluster has no server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The broker, to inspect its subscriptions and queue.
    pub fn broker(&self) -> &QueuedBroker {
        &self.broker
    }

    /// The broker, to read a stream or lose the streams.
    pub fn broker_mut(&mut self) -> &mut QueuedBroker {
        &mut self.broker
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application, mutably (to change its behaviour between steps).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// The cluster clock: the latest time passed in.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What a connection received so far; `None` for a connection this cluster never opened.
    pub fn inbox(&self, server: usize, conn: ConnId) -> Option<&Inbox> {
        self.inboxes.get(&(server, conn))
    }

    // ----- connections -----

    /// Opens a connection on `server` at `now`.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn connect(&mut self, server: usize, now: Instant) -> Result<ConnId, OpenError> {
        self.set_now(now);
        let conn = self.servers[server].handle_open(ConnMeta::default(), self.now)?;
        self.inboxes.insert((server, conn), Inbox::default());
        self.drain(server);
        Ok(conn)
    }

    /// The client sends text frame `text` on `conn` (at the cluster clock).
    /// A connection that is closed ignores it, as a socket would.
    pub fn send(&mut self, server: usize, conn: ConnId, text: impl Into<Bytes>) {
        let now = self.now;
        self.servers[server].handle_text(conn, text.into(), now);
        self.drain(server);
    }

    /// Takes the frames `conn` received since the last call (empty for an unknown connection).
    pub fn take_frames(&mut self, server: usize, conn: ConnId) -> Vec<Bytes> {
        self.inboxes
            .get_mut(&(server, conn))
            .map(|inbox| std::mem::take(&mut inbox.frames))
            .unwrap_or_default()
    }

    /// The client closes `conn`; its inbox records `(1000, "client closed")`
    /// unless the server closed it first.
    pub fn disconnect(&mut self, server: usize, conn: ConnId) {
        if let Some(inbox) = self.inboxes.get_mut(&(server, conn)) {
            inbox
                .closed
                .get_or_insert((CloseCode::NORMAL, "client closed"));
        }
        self.servers[server].handle_close(conn);
        self.drain(server);
    }

    // ----- time -----

    /// Moves the clock to `now` (never backwards) and fires every timer due on every server.
    /// The in-memory peers answer pings at once, so heartbeats never close them.
    pub fn advance(&mut self, now: Instant) {
        self.set_now(now);
        for server in 0..self.servers.len() {
            self.servers[server].handle_timeout(self.now);
            self.drain(server);
        }
    }

    // ----- server commands -----

    /// Runs `f` on server `index`, then handles what it produced. For commands
    /// the shortcuts below do not cover.
    pub fn with_server<T>(&mut self, index: usize, f: impl FnOnce(&mut ServerCore) -> T) -> T {
        let out = f(&mut self.servers[index]);
        self.drain(index);
        out
    }

    /// [`ServerCore::publish`] on server `index`.
    pub fn publish(
        &mut self,
        index: usize,
        user: &str,
        event: &str,
        args: &Args,
    ) -> Result<usize, RtmError> {
        self.with_server(index, |s| s.publish(user, event, args))
    }

    /// [`ServerCore::push`] on server `index`.
    pub fn push(
        &mut self,
        index: usize,
        event: &str,
        tags: &[String],
        args: &Args,
    ) -> Result<usize, RtmError> {
        self.with_server(index, |s| s.push(event, tags, args))
    }

    /// [`ServerCore::emit`] on server `index`.
    pub fn emit(
        &mut self,
        index: usize,
        event: &str,
        filter: impl FnMut(&crate::ConnInfo) -> bool,
        args: &Args,
    ) -> Result<usize, RtmError> {
        self.with_server(index, |s| s.emit(event, filter, args))
    }

    // ----- the broker -----

    /// `true` (the default): every operation delivers all queued broker
    /// messages before it returns. `false`: they wait for [`Cluster::step`] /
    /// [`Cluster::settle`], so a test can interleave them with other operations.
    pub fn set_auto_settle(&mut self, on: bool) {
        self.auto_settle = on;
    }

    /// Delivers the oldest queued broker message to the servers it names and
    /// handles what they produced. Returns `false` when the queue was empty.
    ///
    /// # Panics
    /// If a server rejects an envelope: servers only publish envelopes they
    /// encoded, so that is a bug the test must see.
    pub fn step(&mut self) -> bool {
        let Some(delivery) = self.broker.pop() else {
            return false;
        };
        for server in delivery.to {
            let result = self.servers[server]
                .handle_broker_message(delivery.topic.as_str(), delivery.payload.clone());
            if let Err(err) = result {
                panic!(
                    "server {server} rejected an envelope on {}: {err}",
                    delivery.topic
                );
            }
            self.drain_outputs(server);
        }
        true
    }

    /// Delivers queued broker messages until none is left.
    pub fn settle(&mut self) {
        while self.step() {}
    }

    // ----- internals -----

    fn set_now(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Handles server `index`'s outputs, then settles the broker if auto-settle is on.
    fn drain(&mut self, index: usize) {
        self.drain_outputs(index);
        if self.auto_settle {
            self.settle();
        }
    }

    fn drain_outputs(&mut self, index: usize) {
        loop {
            self.drain_once(index);
            if self.auto_read && self.answer_read(0) {
                continue;
            }
            if !self.auto_confirm || !self.confirm_one() {
                return;
            }
        }
    }

    /// The cluster clock as milliseconds since the Unix epoch (from a fixed
    /// 2023 origin: the same run gives the same times).
    pub fn unix_ms(&self) -> u64 {
        1_700_000_000_000 + self.now.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Off: stream reads wait for [`Cluster::answer_read`] (on by default:
    /// answered as soon as they are asked), so a test can put broker
    /// messages between a subscribe's topic and its history read.
    pub fn set_auto_read(&mut self, on: bool) {
        self.auto_read = on;
    }

    /// Stream reads asked for and not answered yet.
    pub fn unanswered_reads(&self) -> usize {
        self.reads.len()
    }

    /// Answers the unanswered read at `index` (0 is the oldest) from the
    /// broker's streams as they are now. Returns `false` when there is none.
    pub fn answer_read(&mut self, index: usize) -> bool {
        let Some((server, read)) = self.reads.remove(index) else {
            return false;
        };
        let result = self.broker.carry_out(&read);
        let now_ms = self.unix_ms();
        self.servers[server].handle_stream_read(read.id, Ok(result), now_ms);
        self.drain_once(server);
        true
    }

    /// Reads the stream of the unanswered read at `index` now, and keeps
    /// the answer on its way: [`Cluster::deliver_read`] hands it to its
    /// server later (events appended meanwhile are not in it, as with a
    /// reply still travelling). Returns `false` when there is none.
    pub fn read_now(&mut self, index: usize) -> bool {
        let Some((server, read)) = self.reads.remove(index) else {
            return false;
        };
        let result = self.broker.carry_out(&read);
        self.read_answers.push_back((server, read, result));
        true
    }

    /// Hands the oldest answer [`Cluster::read_now`] kept to its server.
    /// Returns `false` when there is none.
    pub fn deliver_read(&mut self) -> bool {
        let Some((server, read, result)) = self.read_answers.pop_front() else {
            return false;
        };
        let now_ms = self.unix_ms();
        self.servers[server].handle_stream_read(read.id, Ok(result), now_ms);
        self.drain_once(server);
        true
    }

    /// Fails the unanswered read at `index`, as a broker that cannot be
    /// read. Returns `false` when there is none.
    pub fn fail_read(&mut self, index: usize) -> bool {
        let Some((server, read)) = self.reads.remove(index) else {
            return false;
        };
        let now_ms = self.unix_ms();
        self.servers[server].handle_stream_read(read.id, Err("the broker failed".into()), now_ms);
        self.drain_once(server);
        true
    }

    /// Confirms the oldest subscribe the broker carried out to its server
    /// (which may acknowledge subscriptions waiting for it). Returns `false`
    /// when none is waiting.
    pub fn confirm_one(&mut self) -> bool {
        self.answer_one(true)
    }

    /// Answers the oldest subscribe the broker carried out: confirmed
    /// (`true`) or failed (`false`: the broker then holds no subscription
    /// for it). Returns `false` when none is waiting.
    pub fn answer_one(&mut self, ok: bool) -> bool {
        self.answer(0, ok)
    }

    /// Answers the unanswered subscribe at `index` in
    /// [`Cluster::unanswered_subscribes`] (0 is the oldest), as
    /// [`Cluster::answer_one`] does the oldest: so a test can confirm or fail
    /// them in any order. Returns `false` when there is no such subscribe.
    pub fn answer(&mut self, index: usize, ok: bool) -> bool {
        let Some((server, topic)) = self.unconfirmed.remove(index) else {
            return false;
        };
        if !ok {
            self.broker
                .apply(server, BrokerCommand::Unsubscribe(topic.clone()));
        }
        self.servers[server].handle_topic_subscribed(&topic, ok);
        self.drain_once(server);
        true
    }

    /// Subscribes the broker carried out and has not answered yet.
    pub fn unanswered(&self) -> usize {
        self.unconfirmed.len()
    }

    /// The subscribes the broker carried out and has not answered yet, oldest
    /// first, as (server, topic): the indexes [`Cluster::answer`] takes. A
    /// subscribe made later is appended; answering one removes it.
    pub fn unanswered_subscribes(
        &self,
    ) -> impl ExactSizeIterator<Item = (usize, &crate::topic::Topic)> + '_ {
        self.unconfirmed
            .iter()
            .map(|(server, topic)| (*server, topic))
    }

    /// Off: unsubscribes take effect at the broker at once, but their answer
    /// reaches the server only through [`Cluster::answer_unsubscribe`] (on by
    /// default: answered as soon as they are made). Until then the server
    /// sends no other command for that topic.
    pub fn set_auto_answer_unsubscribes(&mut self, on: bool) {
        self.auto_answer_unsubscribes = on;
    }

    /// The unsubscribes the broker carried out and has not answered yet,
    /// oldest first, as (server, topic) (only with auto-answer off).
    pub fn unanswered_unsubscribes(
        &self,
    ) -> impl ExactSizeIterator<Item = (usize, &crate::topic::Topic)> + '_ {
        self.unanswered_unsubscribes
            .iter()
            .map(|(server, topic)| (*server, topic))
    }

    /// Answers the unanswered unsubscribe at `index` in
    /// [`Cluster::unanswered_unsubscribes`] (0 is the oldest). Returns
    /// `false` when there is no such unsubscribe.
    pub fn answer_unsubscribe(&mut self, index: usize) -> bool {
        let Some((server, topic)) = self.unanswered_unsubscribes.remove(index) else {
            return false;
        };
        self.servers[server].handle_topic_unsubscribed(&topic);
        self.drain_once(server);
        true
    }

    /// On: every Subscribe and Unsubscribe a server sends is also kept, in
    /// the order sent, for [`Cluster::take_topic_commands`] (off by default).
    pub fn record_topic_commands(&mut self, on: bool) {
        self.topic_log = on.then(Vec::new);
    }

    /// The Subscribe and Unsubscribe commands the servers sent since the last
    /// call, in order, as (server, command); empty unless recording is on.
    pub fn take_topic_commands(&mut self) -> Vec<(usize, BrokerCommand)> {
        self.topic_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Off: subscribes reach the broker at once but are confirmed to their
    /// server only by [`Cluster::confirm_one`] (on by default: confirmed as
    /// soon as they are made).
    pub fn set_auto_confirm(&mut self, on: bool) {
        self.auto_confirm = on;
    }

    fn drain_once(&mut self, index: usize) {
        let server = &mut self.servers[index];
        while let Some(output) = server.poll_output() {
            match output {
                ServerOutput::Transmit { conn, frame } => {
                    self.inboxes
                        .entry((index, conn))
                        .or_default()
                        .frames
                        .push(frame);
                }
                ServerOutput::Close { conn, code, reason } => {
                    let inbox = self.inboxes.entry((index, conn)).or_default();
                    inbox.closed.get_or_insert((code, reason));
                }
                ServerOutput::Ping { conn } => server.handle_activity(conn, self.now),
                ServerOutput::Authenticate { ticket, info, data } => {
                    let result = self.app.authenticate(&info, &data);
                    server.handle_auth_result(ticket, result);
                }
                ServerOutput::Invoke {
                    ticket,
                    function,
                    info,
                    args,
                } => {
                    let name = server
                        .function_name(function)
                        .unwrap_or_default()
                        .to_owned();
                    let result = self.app.invoke(server, &name, &info, &args);
                    server.handle_call_result(ticket, result.as_ref().map_err(Clone::clone));
                }
                ServerOutput::Authorize { ticket, info } => {
                    let result = self.app.authorize(&info, ticket.event(), ticket.tags());
                    server.handle_authorize_result(ticket, result);
                }
                ServerOutput::AuthTimedOut { info } => self.app.auth_timed_out(&info),
                ServerOutput::PeerSilent { .. } => {}
                ServerOutput::Disconnected { info } => self.app.disconnected(&info),
                ServerOutput::Broker(command) => {
                    if let Some(log) = self.topic_log.as_mut() {
                        if !matches!(
                            command,
                            BrokerCommand::Publish { .. } | BrokerCommand::ReadStream(_)
                        ) {
                            log.push((index, command.clone()));
                        }
                    }
                    let unsubscribed = match &command {
                        BrokerCommand::Subscribe(topic) => {
                            self.unconfirmed.push_back((index, topic.clone()));
                            None
                        }
                        BrokerCommand::Unsubscribe(topic) => Some(topic.clone()),
                        BrokerCommand::Publish { .. } => None,
                        BrokerCommand::ReadStream(read) => {
                            self.reads.push_back((index, read.clone()));
                            None
                        }
                    };
                    self.broker.apply(index, command);
                    // An unsubscribe is answered at once (the topic is gone
                    // from the broker as soon as it is applied), unless
                    // the test answers them.
                    if let Some(topic) = unsubscribed {
                        if self.auto_answer_unsubscribes {
                            server.handle_topic_unsubscribed(&topic);
                        } else {
                            self.unanswered_unsubscribes.push_back((index, topic));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testkit::TokenApp;

    fn authed(cluster: &mut Cluster, server: usize, token: &str) -> ConnId {
        let now = cluster.now();
        let conn = cluster.connect(server, now).unwrap();
        let auth = format!(r#"{{"id":"a","type":"auth","data":["{token}"]}}"#);
        cluster.send(server, conn, auth);
        cluster.take_frames(server, conn);
        conn
    }

    #[test]
    fn a_connection_that_never_authenticates_is_closed_4008() {
        let mut cluster = Cluster::new(1, TokenApp::new());
        let now = cluster.now();
        let conn = cluster.connect(0, now).unwrap();
        cluster.advance(now + Duration::from_secs(9));
        assert_eq!(cluster.inbox(0, conn).unwrap().closed, None);
        cluster.advance(now + Duration::from_secs(10));
        let closed = cluster.inbox(0, conn).unwrap().closed;
        assert_eq!(closed.map(|(code, _)| code), Some(CloseCode::AUTH_TIMEOUT));
        assert_eq!(cluster.server(0).connection_count(), 0);
    }

    #[test]
    fn functions_run_synchronously_and_reply_at_once() {
        let mut cluster = Cluster::new(1, TokenApp::new().with_token("t", "alice"));
        let conn = authed(&mut cluster, 0, "t");
        cluster.send(0, conn, r#"{"id":"1","type":"invoke","function":"whoami"}"#);
        assert_eq!(
            cluster.take_frames(0, conn),
            vec![r#"{"id":"1","data":"alice"}"#]
        );
    }

    #[test]
    fn without_auto_settle_broker_messages_wait_for_step() {
        let mut cluster = Cluster::new(2, TokenApp::new().with_token("t", "bob"));
        let bob = authed(&mut cluster, 1, "t");
        cluster.set_auto_settle(false);
        cluster.publish(0, "bob", "ping", &Args::empty()).unwrap();
        assert!(cluster.take_frames(1, bob).is_empty());
        assert_eq!(cluster.broker().pending(), 1);
        assert!(cluster.step());
        assert_eq!(
            cluster.take_frames(1, bob),
            vec![r#"{"event":"ping","data":[]}"#]
        );
        assert!(!cluster.step());
    }

    #[test]
    fn pings_are_answered_so_heartbeats_never_close_in_memory_peers() {
        let mut cluster = Cluster::new(1, TokenApp::new().with_token("t", "carol"));
        let conn = authed(&mut cluster, 0, "t");
        let start = cluster.now();
        for minute in 1..=10 {
            cluster.advance(start + Duration::from_secs(20 * minute));
        }
        assert_eq!(cluster.inbox(0, conn).unwrap().closed, None);
    }
}
