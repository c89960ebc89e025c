//! One connection's protocol state: [`Connection`].
//!
//! It owns what belongs to a single socket — the auth phase and its deadline,
//! the requests in flight and their limit, the heartbeat — and turns text
//! frames into replies and into work for the adapter ([`ConnOutput`]). What
//! several connections share (who holds which user and push subscription,
//! broker topics, Emit / Publish / Push) is the [`Router`](crate::Router)'s.
//! An adapter can therefore run each connection on its own task with no lock
//! on the call path.
//!
//! # Driving it
//!
//! Methods come in four groups, called in this order:
//!
//! 1. **inputs** (`handle_*`): a frame arrived, a handler finished, time passed;
//! 2. **commands**: [`Connection::close`];
//! 3. **outputs**: after every input or command, drain
//!    [`Connection::poll_output`] until `None`;
//! 4. **timer**: call [`Connection::handle_timeout`] at
//!    [`Connection::poll_timeout`] (or when the next input comes).
//!
//! Time is passed in and must not go backwards.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rtm_core::{ConnId, ConnMeta, ServerConfig};
//! use rtm_core::connection::{ConnOutput, Connection};
//! use rtm_core::Functions;
//!
//! let mut functions = Functions::default();
//! let echo = functions.register("echo");
//! let now = Instant::now();
//! let mut conn = Connection::new(
//!     ConnId::from_u64(1),
//!     ConnMeta::default(),
//!     Arc::new(ServerConfig::new("s1")),
//!     Arc::new(functions),
//!     now,
//! );
//! conn.handle_text(Bytes::from_static(br#"{"id":"1","type":"invoke","function":"echo","data":["hi"]}"#), now);
//! let Some(ConnOutput::Invoke { ticket, function, args }) = conn.poll_output() else { panic!() };
//! assert_eq!(function, echo);
//! let (text,): (String,) = args.deserialize().unwrap();
//! conn.handle_call_result(ticket, Ok(&text));
//! let Some(ConnOutput::Transmit(frame)) = conn.poll_output() else { panic!() };
//! assert_eq!(&frame[..], br#"{"id":"1","data":"hi"}"#);
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::config::ServerConfig;
use crate::error::{CloseCode, ErrorCode, RtmError};
use crate::frame::{self, Args, PushSub, Request, RequestError, RequestId};
use crate::functions::{FunctionId, Functions};
use crate::peer::{ConnId, ConnInfo, ConnMeta, Identity};
use crate::positions::{with_streams, Since};
use crate::rate::{self, Bucket};
use crate::stream::StreamPosition;
use crate::sub_queue::{Ready, SubQueue};
use crate::sync::{SyncId, Synced};

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
    /// The `auth`'s `since` (ext): the client's place in its user's stream.
    since: Option<Option<StreamPosition>>,
}

impl AuthTicket {
    /// The connection authenticating.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// An authenticated connection waiting to join its user's routes: hand it
/// back to [`Connection::handle_joined`] once the router holds it (and,
/// with a broker, the user's topic is subscribed).
#[derive(Debug)]
pub struct JoinTicket {
    conn: ConnId,
    reply: Bytes,
    /// The client's place in its user's stream, when it asked to track it.
    pub(crate) since: Option<Option<StreamPosition>>,
    /// Its switch from history to live on the user's stream.
    pub(crate) sync: Option<SyncId>,
    /// What the sync found: sent before the reply.
    pub(crate) synced: Option<Box<Synced>>,
    /// The reply (and what the sync found) went out already, through
    /// [`Settled::take_frames`].
    pub(crate) replied: bool,
}

impl JoinTicket {
    /// The connection joining.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

/// A push subscription on its way: asked of the authorizer, then added to
/// the router. Hand it back with the outcome.
#[derive(Debug)]
pub struct SubscribeTicket {
    conn: ConnId,
    id: RequestId,
    pub(crate) sub: PushSub,
    /// Its switch from history to live, when it tracks streams.
    pub(crate) sync: Option<SyncId>,
    /// What the sync found: sent before the reply.
    pub(crate) synced: Option<Box<Synced>>,
    /// Its reply (and what the sync found) went out already, through
    /// [`Settled::take_frames`].
    pub(crate) replied: bool,
}

impl SubscribeTicket {
    #[cfg(feature = "testkit")]
    pub(crate) fn new(conn: ConnId, id: RequestId, sub: PushSub) -> Self {
        SubscribeTicket {
            conn,
            id,
            sub,
            sync: None,
            synced: None,
            replied: false,
        }
    }

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
    /// The positions sent with it (`since`, ext), if any.
    pub fn since(&self) -> Option<&Since> {
        self.sub.since.as_ref()
    }
}

/// A request that waited for the broker to confirm its topics, now
/// decided by the [`Router`](crate::Router): hand it to
/// [`Connection::handle_settled`] on its connection ([`Settled::conn`]).
#[derive(Debug)]
pub enum Settled {
    /// The `auth` may be answered: the user's topic is confirmed (or the wait
    /// ended without it — the broker went down or was too slow — and
    /// authentication goes on without it).
    Joined(JoinTicket),
    /// The `subscribe` is decided: `Ok` (every topic confirmed), or `Err`
    /// (`rtm/broker-unavailable`, `rtm/too-many-subscriptions`; nothing of it
    /// is left in the router).
    Subscribed(SubscribeTicket, Result<(), RtmError>),
}

impl Settled {
    /// The connection whose request it is.
    pub fn conn(&self) -> ConnId {
        match self {
            Settled::Joined(ticket) => ticket.conn,
            Settled::Subscribed(ticket, _) => ticket.conn,
        }
    }

    /// For a subscribe that synced streams: the frames it sends, in order
    /// (the missed events with their positions, then the reply with the
    /// streams' state), taken out so the adapter can queue them exactly
    /// where the router settled it — after the events handed to the
    /// connection before, ahead of the streams' live events after. The
    /// connection then sends no reply of its own. `None` for anything else
    /// (the connection replies as usual).
    pub fn take_frames(&mut self) -> Option<Vec<Bytes>> {
        match self {
            Settled::Subscribed(ticket, Ok(())) => {
                let synced = ticket.synced.take()?;
                ticket.replied = true;
                Some(synced_frames(&reply_true(&ticket.id), *synced))
            }
            Settled::Joined(ticket) => {
                let synced = ticket.synced.take()?;
                ticket.replied = true;
                Some(synced_frames(&ticket.reply, *synced))
            }
            Settled::Subscribed(_, Err(_)) => None,
        }
    }
}

/// A synced request's frames: its missed events, then `reply` with the
/// streams' state.
fn synced_frames(reply: &Bytes, synced: Synced) -> Vec<Bytes> {
    let Synced { mut frames, states } = synced;
    frames.push(with_streams(reply, &states));
    frames
}

/// What a [`Connection`] asks of its adapter, in the order it must be done.
///
/// Exhaustive on purpose: an adapter matches every variant, so one added
/// later is a compile error where it must be carried out, not an output
/// silently dropped.
#[derive(Debug)]
pub enum ConnOutput {
    /// Send this text frame.
    Transmit(Bytes),
    /// Send a close frame with this code and reason; the connection is over
    /// (later inputs are ignored). Remove it from the router.
    Close {
        /// The WebSocket close code.
        code: CloseCode,
        /// The close reason.
        reason: &'static str,
    },
    /// Send a WebSocket ping.
    Ping,
    /// Run the authentication handler on `data`, then call
    /// [`Connection::handle_auth_result`].
    Authenticate {
        /// Hand it back with the decision.
        ticket: AuthTicket,
        /// The `auth` request's `data` array.
        data: Args,
    },
    /// Run the function, then call [`Connection::handle_call_result`].
    Invoke {
        /// Hand it back with the result.
        ticket: CallTicket,
        /// Which function.
        function: FunctionId,
        /// The arguments.
        args: Args,
    },
    /// Ask the subscribe authorizer, then call [`Connection::handle_authorize_result`].
    Authorize {
        /// Holds the event and tags; hand it back with the decision.
        ticket: SubscribeTicket,
    },
    /// Authenticated: put the connection (now carrying `info`) in the
    /// router's user index, then call [`Connection::handle_joined`].
    Join {
        /// Hand it back once joined.
        ticket: JoinTicket,
        /// The connection's info with its identity.
        info: Arc<ConnInfo>,
    },
    /// Add this subscription to the router (and, with a broker, wait for its
    /// new topics), then call [`Connection::handle_subscribe_result`].
    Subscribe {
        /// Holds the event and tags; hand it back with the outcome.
        ticket: SubscribeTicket,
    },
    /// Remove these (event, tag) pairs of this connection from the router.
    /// Its reply follows as a `Transmit`.
    Unsubscribe(PushSub),
    /// The connection did not authenticate in time (the seed's
    /// `onAuthTimeout`); a `Close` with 4008 precedes it.
    AuthTimedOut,
    /// The peer was silent past the heartbeat deadline; a `Close` precedes it.
    PeerSilent,
    /// A call the connection answered itself, without running it (its
    /// error reply precedes this): for the driver's metrics. `function` is
    /// `None` when no registered function has that name.
    CallRefused {
        /// The function asked for, when registered.
        function: Option<FunctionId>,
        /// The error it was answered with (`rtm/function-not-found`,
        /// `rtm/unauthenticated`, `rtm/too-many-requests`, `rtm/bad-request`).
        code: ErrorCode,
    },
    /// A `subscribe` was answered (its reply precedes this): for the
    /// driver's metrics. `Err` holds the code it was refused with
    /// (`rtm/forbidden` or the authorizer's own, `rtm/too-many-subscriptions`,
    /// `rtm/broker-unavailable`, `rtm/unauthenticated`, `rtm/bad-request`,
    /// `rtm/too-many-requests`).
    SubscribeAnswered {
        /// `Ok`: every tag is held now.
        result: Result<(), ErrorCode>,
    },
}

/// Where a connection stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for an `auth` request.
    Unauthenticated,
    /// The auth handler, or joining the router, is under way.
    Authenticating,
    /// Serving requests.
    Open,
    /// Closed; every input is ignored.
    Closed,
}

/// One connection's protocol state. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    info: Arc<ConnInfo>,
    config: Arc<ServerConfig>,
    functions: Arc<Functions>,
    phase: Phase,
    /// Ids of the requests in flight (auth, invokes, subscribes): unique per
    /// connection, and their count is bounded by `max_in_flight`.
    in_flight: HashSet<RequestId, BuildHasherDefault<IdHasher>>,
    /// Subscription requests in progress or waiting, rate-limit buckets:
    /// `None` nearly always (boxed: an idle connection pays one word for
    /// it; the task-size test holds the connection's task to 512 bytes).
    extras: Option<Box<Extras>>,
    last_activity: Instant,
    auth_deadline: Option<Instant>,
    next_heartbeat: Option<Instant>,
    outputs: VecDeque<ConnOutput>,
}

/// What a connection needs only while it uses it (boxed behind one word:
/// the connection's task size is every idle connection's memory): the
/// subscription requests in progress and waiting, the buckets of its
/// per-connection rate limits.
#[derive(Debug, Default)]
struct Extras {
    queue: SubQueue,
    call_buckets: HashMap<FunctionId, Bucket>,
}

impl Extras {
    /// Nothing waits and no bucket is counting (it can be dropped).
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.call_buckets.is_empty()
    }
}

impl Connection {
    /// A connection opened at `now`; on a server with authentication it must
    /// authenticate before `now + auth_timeout`.
    pub fn new(
        id: ConnId,
        meta: ConnMeta,
        config: Arc<ServerConfig>,
        functions: Arc<Functions>,
        now: Instant,
    ) -> Self {
        let phase = if config.requires_auth() {
            Phase::Unauthenticated
        } else {
            Phase::Open
        };
        Connection {
            info: Arc::new(ConnInfo {
                id,
                meta,
                identity: None,
                opened_at: now,
            }),
            auth_deadline: config.auth_timeout.map(|t| now + t),
            next_heartbeat: config.heartbeat.map(|hb| now + hb.interval),
            config,
            functions,
            phase,
            in_flight: HashSet::default(),
            extras: None,
            last_activity: now,
            outputs: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// Its id.
    pub fn id(&self) -> ConnId {
        self.info.id
    }

    /// What a function, an authorizer or an Emit filter may know about it.
    pub fn info(&self) -> &Arc<ConnInfo> {
        &self.info
    }

    /// Whether it serves requests (authenticated, or on a server without auth).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether it is closed (a `Close` was output).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Requests in flight: invokes, subscribes being authorized or
    /// confirmed, and an authentication.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    // ----- inputs -----

    /// A text frame arrived.
    pub fn handle_text(&mut self, frame: Bytes, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_activity = now;
        if frame.len() > self.config.limits.max_frame_bytes {
            return self.close(CloseCode::MESSAGE_TOO_BIG, "frame too large");
        }
        let request = match frame::parse_request(&frame) {
            Ok(request) => request,
            Err(RequestError::Malformed(_)) => {
                return self.close(CloseCode::INVALID_PAYLOAD, "invalid request")
            }
            Err(RequestError::BadRequest { id, message }) => {
                return self.reply_error(&id, RtmError::bad_request(message))
            }
        };
        match request {
            Request::Auth { id, data, since } => self.auth(id, data, since),
            Request::Invoke { id, function, args } => self.invoke(id, &function, args, now),
            Request::Subscribe { id, sub } => self.subscribe(id, sub),
            Request::Unsubscribe { id, sub } => self.unsubscribe(id, sub),
        }
    }

    /// A binary frame arrived: close 1003.
    pub fn handle_binary(&mut self) {
        self.close(
            CloseCode::UNSUPPORTED_DATA,
            "binary frames are not supported",
        );
    }

    /// The transport refused a message over the size limit: close 1009.
    pub fn handle_oversized(&mut self) {
        self.close(CloseCode::MESSAGE_TOO_BIG, "frame too large");
    }

    /// More than the outbound bound waits for the peer to read: close 1013
    /// `rtm/slow-consumer`.
    pub fn handle_slow_consumer(&mut self) {
        self.close(CloseCode::TRY_AGAIN_LATER, "rtm/slow-consumer");
    }

    /// Something arrived from the peer (a pong, any frame): it is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The authentication handler decided. A user id longer than
    /// `max_name_bytes` rejects the authentication.
    pub fn handle_auth_result(&mut self, ticket: AuthTicket, result: Result<Identity, RtmError>) {
        let AuthTicket { id, since, .. } = ticket;
        if !self.in_flight.remove(&id) || self.phase != Phase::Authenticating {
            return;
        }
        let max = self.config.limits.max_name_bytes;
        let result = result.and_then(|identity| match identity.user_id.len() {
            len if len > max => Err(RtmError::bad_request(format!(
                "the user id is {len} bytes, over the limit of {max}"
            ))),
            _ => Ok(identity),
        });
        match result {
            Ok(identity) => {
                let reply = match &identity.data {
                    // The JS client needs a truthy `data`: every JS-falsy value becomes `true`.
                    data if is_js_falsy(data) => reply_true(&id),
                    data => frame::encode_reply(&id, data).unwrap_or_else(|_| reply_true(&id)),
                };
                let mut info = ConnInfo::clone(&self.info);
                info.identity = Some(identity);
                self.info = Arc::new(info);
                // The peer authenticated in time: what is left (joining, which
                // may wait for the broker, bounded by its confirm timeout) is
                // the server's, and is not held against the auth deadline.
                self.auth_deadline = None;
                self.outputs.push_back(ConnOutput::Join {
                    ticket: JoinTicket {
                        conn: self.id(),
                        reply,
                        since,
                        sync: None,
                        synced: None,
                        replied: false,
                    },
                    info: self.info.clone(),
                });
            }
            Err(err) => {
                self.transmit(frame::encode_auth_rejected(&id, &err.message));
                self.close(CloseCode::AUTH_REJECTED, "authentication rejected");
            }
        }
    }

    /// The router settled a request that waited for the broker (or answered
    /// one at once): the `auth` or `subscribe` gets its reply.
    pub fn handle_settled(&mut self, settled: Settled) {
        match settled {
            Settled::Joined(ticket) => self.handle_joined(ticket),
            Settled::Subscribed(ticket, result) => self.handle_subscribe_result(ticket, result),
        }
    }

    /// The router holds the authenticated connection: it is open, and the
    /// `auth` request gets its reply.
    pub fn handle_joined(&mut self, ticket: JoinTicket) {
        if self.phase != Phase::Authenticating {
            return;
        }
        self.phase = Phase::Open;
        self.auth_deadline = None;
        match ticket.synced {
            // The adapter sent them (Settled::take_frames).
            _ if ticket.replied => {}
            // The user's stream's missed events, then the reply with its state.
            Some(synced) => {
                for frame in synced_frames(&ticket.reply, *synced) {
                    self.transmit(frame);
                }
            }
            None => self.transmit(ticket.reply),
        }
    }

    /// A function finished: its value becomes the reply's `data`, its error
    /// an error reply. A value that cannot be encoded as JSON becomes `rtm/internal`.
    pub fn handle_call_result<T: Serialize + ?Sized>(
        &mut self,
        ticket: CallTicket,
        result: Result<&T, RtmError>,
    ) {
        let CallTicket { id, .. } = ticket;
        if !self.in_flight.remove(&id) || self.phase == Phase::Closed {
            return;
        }
        let frame = match result.and_then(|value| frame::encode_reply(&id, value)) {
            Ok(frame) => frame,
            Err(err) => frame::encode_error_reply(&id, &err),
        };
        self.transmit(frame);
    }

    /// [`Connection::handle_call_result`] for a result already encoded as
    /// JSON text: copied into the reply once, never re-serialized.
    pub fn handle_call_result_raw(
        &mut self,
        ticket: CallTicket,
        result: Result<&serde_json::value::RawValue, RtmError>,
    ) {
        let CallTicket { id, .. } = ticket;
        if !self.in_flight.remove(&id) || self.phase == Phase::Closed {
            return;
        }
        let frame = match result {
            Ok(raw) => frame::encode_reply_raw(&id, raw),
            Err(err) => frame::encode_error_reply(&id, &err),
        };
        self.transmit(frame);
    }

    /// The subscribe authorizer decided: `Ok` goes on to the router
    /// ([`ConnOutput::Subscribe`]), `Err` denies (`rtm/forbidden` unless the
    /// error carries another code).
    pub fn handle_authorize_result(
        &mut self,
        ticket: SubscribeTicket,
        result: Result<(), RtmError>,
    ) {
        if self.phase == Phase::Closed || !self.in_flight.contains(&ticket.id) {
            return;
        }
        match result {
            Ok(()) => self.outputs.push_back(ConnOutput::Subscribe { ticket }),
            Err(err) => {
                self.in_flight.remove(&ticket.id);
                let code = err.code.clone();
                self.reply_error(&ticket.id, err);
                self.subscribe_answered(Err(code));
                self.subscribe_done(&ticket.id);
            }
        }
    }

    /// The router took the subscription (and the broker confirmed its new
    /// topics): reply `true`; or it could not (`rtm/too-many-subscriptions`,
    /// `rtm/broker-unavailable`): reply with that error.
    pub fn handle_subscribe_result(
        &mut self,
        ticket: SubscribeTicket,
        result: Result<(), RtmError>,
    ) {
        if !self.in_flight.remove(&ticket.id) || self.phase == Phase::Closed {
            return;
        }
        let answered = match result {
            Ok(()) => {
                match ticket.synced {
                    // The adapter sent them (Settled::take_frames).
                    _ if ticket.replied => {}
                    // The recovered events, then the reply with the streams' state.
                    Some(synced) => {
                        for frame in synced_frames(&reply_true(&ticket.id), *synced) {
                            self.transmit(frame);
                        }
                    }
                    None => self.transmit(reply_true(&ticket.id)),
                }
                Ok(())
            }
            Err(err) => {
                let code = err.code.clone();
                self.reply_error(&ticket.id, err);
                Err(code)
            }
        };
        self.subscribe_answered(answered);
        self.subscribe_done(&ticket.id);
    }

    /// Time passed: the auth deadline and the heartbeat, if due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.auth_deadline.is_some_and(|at| at <= now) && self.phase != Phase::Open {
            self.close(CloseCode::AUTH_TIMEOUT, "authentication timeout");
            self.outputs.push_back(ConnOutput::AuthTimedOut);
            return;
        }
        let (Some(at), Some(hb)) = (self.next_heartbeat, self.config.heartbeat) else {
            return;
        };
        if at > now {
            return;
        }
        if now.saturating_duration_since(self.last_activity) >= hb.timeout {
            self.close(CloseCode::GOING_AWAY, "heartbeat timeout");
            self.outputs.push_back(ConnOutput::PeerSilent);
            return;
        }
        // Next: the next ping, or the silence deadline if that comes first, so
        // a silent peer is closed at `timeout`, not up to an interval late.
        self.outputs.push_back(ConnOutput::Ping);
        self.next_heartbeat = Some((now + hb.interval).min(self.last_activity + hb.timeout));
    }

    // ----- commands -----

    /// Closes the connection with this code and reason (once).
    pub fn close(&mut self, code: CloseCode, reason: &'static str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.in_flight.clear();
        self.extras = None;
        self.auth_deadline = None;
        self.next_heartbeat = None;
        self.outputs.push_back(ConnOutput::Close { code, reason });
    }

    // ----- outputs -----

    /// The next thing the adapter must do, or `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ConnOutput> {
        self.outputs.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, TimerReason)> {
        let auth = self
            .auth_deadline
            .filter(|_| self.phase != Phase::Open)
            .map(|at| (at, TimerReason::AuthDeadline));
        let heartbeat = self.next_heartbeat.map(|at| (at, TimerReason::Heartbeat));
        match (auth, heartbeat) {
            (Some(a), Some(h)) => Some(if a.0 <= h.0 { a } else { h }),
            (a, h) => a.or(h),
        }
    }

    // ----- requests -----

    fn auth(&mut self, id: RequestId, data: Args, since: Option<Option<StreamPosition>>) {
        match self.phase {
            Phase::Open if self.config.requires_auth() => self.reply_error(
                &id,
                RtmError::new(ErrorCode::AlreadyAuthenticated, "already authenticated"),
            ),
            Phase::Open => self.transmit(reply_true(&id)),
            Phase::Authenticating => self.reply_error(
                &id,
                RtmError::bad_request("authentication already in progress"),
            ),
            Phase::Unauthenticated => {
                let max = self.config.limits.max_auth_bytes;
                if data.as_json().len() > max {
                    let len = data.as_json().len();
                    return self.reply_error(
                        &id,
                        RtmError::bad_request(format!(
                            "auth data is {len} bytes, over the limit of {max}"
                        )),
                    );
                }
                self.phase = Phase::Authenticating;
                self.in_flight.insert(id.clone());
                self.outputs.push_back(ConnOutput::Authenticate {
                    ticket: AuthTicket {
                        conn: self.id(),
                        id,
                        since,
                    },
                    data,
                });
            }
            Phase::Closed => {}
        }
    }

    fn invoke(&mut self, id: RequestId, function: &str, args: Args, now: Instant) {
        if self.phase != Phase::Open {
            self.reply_unauthenticated(&id);
            let function = self.functions.id(function);
            return self.refused(function, ErrorCode::Unauthenticated);
        }
        if let Err(err) = self.check_name("function name", function) {
            self.reply_error(&id, err);
            return self.refused(None, ErrorCode::BadRequest);
        }
        let Some(function_id) = self.functions.id(function) else {
            let message = format!("no function named '{function}'");
            self.reply_error(&id, RtmError::new(ErrorCode::FunctionNotFound, message));
            return self.refused(None, ErrorCode::FunctionNotFound);
        };
        let rate = self
            .functions
            .rate_limit(function_id)
            .and_then(|limit| limit.per_connection);
        if let Some(rate) = rate {
            let bucket = self
                .extras
                .get_or_insert_with(Box::default)
                .call_buckets
                .entry(function_id)
                .or_default();
            if let Err(wait) = bucket.try_take(rate, now) {
                let what = format!("'{function}' by this connection");
                self.reply_error(&id, rate::too_many(&what, rate, wait));
                return self.refused(Some(function_id), ErrorCode::TooManyRequests);
            }
        }
        let function = function_id;
        if let Err(code) = self.take_slot(&id) {
            return self.refused(Some(function), code);
        }
        self.outputs.push_back(ConnOutput::Invoke {
            ticket: CallTicket {
                conn: self.id(),
                id,
            },
            function,
            args,
        });
    }

    fn subscribe(&mut self, id: RequestId, sub: PushSub) {
        if self.phase != Phase::Open {
            self.reply_unauthenticated(&id);
            return self.subscribe_answered(Err(ErrorCode::Unauthenticated));
        }
        if let Err(err) = self.check_sub(&sub) {
            let code = err.code.clone();
            self.reply_error(&id, err);
            return self.subscribe_answered(Err(code));
        }
        if let Err(code) = self.take_slot(&id) {
            return self.subscribe_answered(Err(code));
        }
        let ready = self
            .extras
            .get_or_insert_with(Box::default)
            .queue
            .push(id, sub, false);
        self.go(ready);
    }

    /// An unsubscribe takes effect at once, unless a subscribe that arrived
    /// before it and shares its event and a tag is still in progress: then
    /// it waits for that one, so the two take effect in arrival order (and
    /// its reply follows the subscribe's).
    fn unsubscribe(&mut self, id: RequestId, sub: PushSub) {
        if self.phase != Phase::Open {
            return self.reply_unauthenticated(&id);
        }
        if let Err(err) = self.check_sub(&sub) {
            return self.reply_error(&id, err);
        }
        if !self
            .extras
            .as_ref()
            .is_some_and(|x| x.queue.would_wait(&sub))
        {
            self.outputs.push_back(ConnOutput::Unsubscribe(sub));
            return self.transmit(reply_true(&id));
        }
        // Waiting, it is in flight: its id is taken and it counts.
        if self.take_slot(&id).is_err() {
            return;
        }
        if let Some(extras) = self.extras.as_mut() {
            let ready = extras.queue.push(id, sub, true);
            debug_assert!(ready.is_none(), "it waits behind an overlapping request");
        }
    }

    /// Carries out a request the queue let through: a subscribe goes to the
    /// authorizer or the router (and stays queued until it is done); an
    /// unsubscribe takes effect (it left the queue).
    fn go(&mut self, ready: Option<Ready>) {
        match ready {
            None => {}
            Some(Ready::Unsubscribe(id, sub)) => {
                self.in_flight.remove(&id);
                self.outputs.push_back(ConnOutput::Unsubscribe(sub));
                self.transmit(reply_true(&id));
            }
            Some(Ready::Subscribe(id, sub)) => {
                let ticket = SubscribeTicket {
                    conn: self.info.id,
                    id,
                    sub,
                    sync: None,
                    synced: None,
                    replied: false,
                };
                self.outputs
                    .push_back(if self.config.authorize_subscriptions {
                        ConnOutput::Authorize { ticket }
                    } else {
                        ConnOutput::Subscribe { ticket }
                    });
            }
        }
        if self.extras.as_ref().is_some_and(|x| x.is_empty()) {
            self.extras = None;
        }
    }

    /// The subscribe `id` is done (replied): it leaves the queue, and the
    /// requests that waited only for it go, in arrival order (O(tags) each).
    fn subscribe_done(&mut self, id: &RequestId) {
        let Some(extras) = self.extras.as_mut() else {
            return;
        };
        for ready in extras.queue.finish(id) {
            self.go(Some(ready));
        }
        if self.extras.as_ref().is_some_and(|x| x.is_empty()) {
            self.extras = None;
        }
    }

    // ----- internals -----

    /// Event and tags within their limits, before anything is kept for them.
    fn check_sub(&self, sub: &PushSub) -> Result<(), RtmError> {
        frame::check_event_name(&sub.event)?;
        self.check_name("event name", &sub.event)?;
        let max = self.config.limits.max_tags_per_request;
        if sub.tags.len() > max {
            return Err(RtmError::bad_request(format!(
                "{} tags in one request, over the limit of {max}",
                sub.tags.len()
            )));
        }
        sub.tags
            .iter()
            .try_for_each(|tag| self.check_name("tag", tag))
    }

    fn check_name(&self, what: &str, name: &str) -> Result<(), RtmError> {
        let max = self.config.limits.max_name_bytes;
        if name.len() > max {
            return Err(RtmError::bad_request(format!(
                "the {what} is {} bytes, over the limit of {max}",
                name.len()
            )));
        }
        Ok(())
    }

    /// Counts one more request in flight; on a duplicate id or at the limit,
    /// replies with the error and returns its code.
    fn take_slot(&mut self, id: &RequestId) -> Result<(), ErrorCode> {
        if self.in_flight.contains(id) {
            self.reply_error(
                id,
                RtmError::bad_request("a request with this id is still in flight"),
            );
            return Err(ErrorCode::BadRequest);
        }
        let max = self.config.limits.max_in_flight;
        if self.in_flight.len() >= max {
            let message = format!("more than {max} requests in flight");
            self.reply_error(id, RtmError::new(ErrorCode::TooManyRequests, message));
            return Err(ErrorCode::TooManyRequests);
        }
        self.in_flight.insert(id.clone());
        Ok(())
    }

    /// Says a call was answered here without running (for metrics).
    fn refused(&mut self, function: Option<FunctionId>, code: ErrorCode) {
        self.outputs
            .push_back(ConnOutput::CallRefused { function, code });
    }

    /// Says a subscribe was answered (for metrics).
    fn subscribe_answered(&mut self, result: Result<(), ErrorCode>) {
        self.outputs
            .push_back(ConnOutput::SubscribeAnswered { result });
    }

    fn transmit(&mut self, frame: Bytes) {
        self.outputs.push_back(ConnOutput::Transmit(frame));
    }

    fn reply_error(&mut self, id: &RequestId, err: RtmError) {
        self.transmit(frame::encode_error_reply(id, &err));
    }

    fn reply_unauthenticated(&mut self, id: &RequestId) {
        self.reply_error(
            id,
            RtmError::new(ErrorCode::Unauthenticated, "authenticate first"),
        );
    }
}

/// A fast hash for the ids in flight (FxHash's mixing): they are short, and
/// at most `max_in_flight` of them live in one connection's set, so a client
/// that picks colliding ids only slows its own connection, within that bound.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Why [`Connection::poll_timeout`] asks to be woken, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerReason {
    /// The connection must have authenticated by then.
    AuthDeadline,
    /// A ping is due, or the silence deadline.
    Heartbeat,
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

pub(crate) fn reply_true(id: &RequestId) -> Bytes {
    frame::encode_reply(id, &true).unwrap_or_default()
}
