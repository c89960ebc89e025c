//! The client state machine.
//!
//! [`Client`] owns every piece of protocol state of one RTM client: request
//! ids, calls awaiting replies and their deadlines, the offline queue, the
//! push subscriptions to re-send after a reconnect, the reconnect schedule and
//! auth on every (re)open. It does no IO and reads no clock. An adapter drives
//! it in this order:
//!
//! 1. **inputs** (`handle_*`): the socket opened, a text frame arrived, the
//!    socket closed (or a connect attempt failed), the time (`handle_timeout`);
//! 2. **commands**: [`Client::call`], [`Client::call_wait`],
//!    [`Client::subscribe_push`], [`Client::unsubscribe_push`], [`Client::close`];
//! 3. **outputs**: after every input or command, drain [`Client::poll_output`]
//!    until it returns `None`, then wait until [`Client::poll_timeout`] (or the
//!    next input) and call [`Client::handle_timeout`].
//!
//! Time must not go backwards between calls.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rtm_core::Args;
//! use rtm_core::client::{Client, ClientConfig, ClientOutput};
//!
//! let now = Instant::now();
//! let mut client = Client::new(ClientConfig::default(), now);
//! assert!(matches!(client.poll_output(), Some(ClientOutput::Connect)));
//! // Called before the socket is open: queued.
//! let call = client.call_wait("add", Args::encode(&(1, 2)).unwrap(), now).unwrap();
//! assert_eq!(client.queued_calls(), 1);
//! client.handle_open(now);
//! let frame = std::iter::from_fn(|| client.poll_output())
//!     .find_map(|o| match o { ClientOutput::Transmit(f) => Some(f), _ => None })
//!     .unwrap();
//! assert_eq!(&frame[..], br#"{"id":"1","type":"invoke","function":"add","data":[1,2]}"#);
//! client.handle_text(Bytes::from_static(br#"{"id":"1","data":3}"#), now);
//! let Some(ClientOutput::CallDone { call: done, result }) = client.poll_output() else { panic!() };
//! assert_eq!(done, call);
//! assert_eq!(result.unwrap().get(), "3");
//! ```

mod backoff;
mod config;
mod output;
mod positions;
mod subs;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::error::{CloseCode, ErrorCode, RtmError};
use crate::frame::{self, Args, PushSub, RequestId, ServerFrame};

use backoff::XorShift;
pub use config::{ClientConfig, Jitter, Reconnect};
pub use output::{CallId, ClientEvent, ClientOutput, ClientState};
use positions::{Positions, Verdict};
use subs::Subscriptions;

/// A request sent and awaiting its reply, by request id.
#[derive(Debug)]
enum Pending {
    Auth,
    Call(CallId),
    /// Also the internal re-sends after a reconnect (no waiter).
    Subscribe {
        sub: PushSub,
        waiters: Vec<CallId>,
    },
    Unsubscribe(CallId),
}

/// A call made while not open, sent in order once open.
#[derive(Debug)]
struct Queued {
    /// `None` for a fire-and-forget call.
    call: Option<CallId>,
    function: String,
    args: Args,
}

/// Where a live call currently is.
#[derive(Debug)]
enum Place {
    Queued,
    Sent(String),
    /// A subscribe made offline, waiting in its held subscription.
    HeldSub,
    /// Nowhere: completed at once, or about to be sent.
    Done,
}

#[derive(Debug)]
struct Call {
    deadline: Option<Instant>,
    place: Place,
}

/// The client state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: ClientState,
    /// The next reconnect attempt's number minus one; 0 once ready.
    attempt: u32,
    reconnect_at: Option<Instant>,
    rng: XorShift,
    next_request: u64,
    next_call: u64,
    pending: HashMap<String, Pending>,
    calls: HashMap<CallId, Call>,
    deadlines: BTreeSet<(Instant, CallId)>,
    queue: VecDeque<Queued>,
    subs: Subscriptions,
    /// Positions in the streams of the push subscriptions (ext).
    positions: Positions,
    outputs: VecDeque<ClientOutput>,
    /// Why the client closed for good, when it was not the application's
    /// `close` (a rejected auth, a fatal error): told to later calls.
    closed_by: Option<RtmError>,
    /// When the server last gave a sign of life (a frame, a ping or a pong),
    /// and when we last pinged it; meaningful while a socket is open.
    last_heard: Instant,
    last_ping: Instant,
}

impl Client {
    /// A client core; its first output is [`ClientOutput::Connect`].
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let mut client = Client {
            rng: XorShift::new(config.jitter_seed),
            config,
            state: ClientState::Connecting,
            attempt: 0,
            reconnect_at: None,
            next_request: 0,
            next_call: 0,
            pending: HashMap::new(),
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
            queue: VecDeque::new(),
            subs: Subscriptions::default(),
            positions: Positions::default(),
            outputs: VecDeque::new(),
            closed_by: None,
            last_heard: now,
            last_ping: now,
        };
        client.start_connecting();
        client
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Where the client is in its lifecycle.
    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// Calls sent and awaiting their reply (call_wait, subscribe and unsubscribe acks).
    pub fn pending_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| matches!(c.place, Place::Sent(_)))
            .count()
    }

    /// Calls waiting in the offline queue (fire-and-forget included).
    pub fn queued_calls(&self) -> usize {
        self.queue.len()
    }

    /// Push subscriptions held (re-sent after every reconnect).
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    // ----- inputs -----

    /// The socket opened: sends `auth` if configured, else the client is open.
    pub fn handle_open(&mut self, now: Instant) {
        if self.state != ClientState::Connecting {
            return;
        }
        self.last_heard = now;
        self.last_ping = now;
        self.lifecycle(ClientEvent::Opened);
        match self.config.auth_data.clone() {
            Some(data) => {
                self.state = ClientState::Authenticating;
                self.lifecycle(ClientEvent::Authenticating);
                let id = self.request_id();
                // With positions: the user's stream (Publish) too.
                let since = self
                    .config
                    .track_positions
                    .then(|| self.positions.user_since());
                self.transmit(frame::encode_auth_since(
                    &RequestId::new(&id),
                    &data,
                    since.as_ref(),
                ));
                self.pending.insert(id, Pending::Auth);
            }
            None => self.become_open(),
        }
    }

    /// A text frame arrived. Bad frames are reported as [`ClientEvent::Error`]
    /// and otherwise ignored; replies to unknown ids are ignored.
    pub fn handle_text(&mut self, frame: Bytes, now: Instant) {
        if !self.has_socket() {
            return;
        }
        self.last_heard = now;
        match frame::parse_server_frame(&frame) {
            Err(err) => self.lifecycle(ClientEvent::Error(err)),
            Ok(ServerFrame::Event {
                event,
                args,
                position,
            }) => {
                let verdict = match &position {
                    Some(at) if self.config.track_positions => {
                        self.positions.handle_event(&event, at)
                    }
                    _ => Verdict::Deliver,
                };
                match verdict {
                    Verdict::Deliver => self.outputs.push_back(ClientOutput::Event { event, args }),
                    Verdict::Drop => {}
                    Verdict::Gap => match position.and_then(|at| at.tag) {
                        // Missed some: subscribe again with the position,
                        // and the server sends them (or says it cannot).
                        Some(tag) => {
                            let sub = subs::normalize(&event, &[tag]);
                            self.send_subscribe(sub, Vec::new());
                        }
                        // The user's stream is tracked by the auth: a new
                        // connection authenticates from the position.
                        None => {
                            self.outputs.push_back(ClientOutput::Disconnect);
                            self.handle_close(
                                None,
                                "missed events of the user's stream: reconnecting to recover them",
                                now,
                            );
                        }
                    },
                }
            }
            Ok(ServerFrame::Reply {
                id,
                result,
                streams,
            }) => self.handle_reply(&id, result, streams, now),
        }
    }

    /// The socket closed or was lost, or a connect attempt failed. Unless the
    /// client is closed, pending invokes fail with `rtm/disconnected` and a
    /// reconnect is scheduled. Close code 4003 during auth is a rejected auth.
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str, now: Instant) {
        match self.state {
            ClientState::Closed | ClientState::WaitingToReconnect { .. } => return,
            ClientState::Authenticating if code == Some(CloseCode::AUTH_REJECTED.0) => {
                let message = if reason.is_empty() {
                    "authentication rejected"
                } else {
                    reason
                };
                return self.auth_rejected(message, false);
            }
            _ => {}
        }
        self.drop_in_flight();
        self.lifecycle(ClientEvent::Closed {
            code,
            reason: reason.to_owned(),
        });
        self.attempt = self.attempt.saturating_add(1);
        let attempt = self.attempt;
        let allowed = self
            .config
            .max_reconnect_attempts
            .is_none_or(|max| attempt <= max);
        match backoff::delay(&self.config.reconnect, attempt, &mut self.rng).filter(|_| allowed) {
            Some(delay) => {
                self.state = ClientState::WaitingToReconnect { attempt };
                self.reconnect_at = Some(now + delay);
                self.lifecycle(ClientEvent::Reconnecting { attempt, delay });
            }
            None => {
                let err =
                    RtmError::new(ErrorCode::Disconnected, "connection lost, not reconnecting");
                self.fail_everything(&err);
                self.state = ClientState::Closed;
            }
        }
    }

    /// Something other than a text frame came from the server (a ping, a
    /// pong, a binary frame): it is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        if self.has_socket() {
            self.last_heard = now;
        }
    }

    /// Time passed: call deadlines (`rtm/timeout`), the heartbeat (a
    /// [`ClientOutput::Ping`], or the connection dropped as lost) and the
    /// reconnect delay due by `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.heartbeat(now);
        while let Some(&(at, call)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.unplace(call);
            self.complete(
                call,
                Err(RtmError::new(
                    ErrorCode::Timeout,
                    "no reply within the call timeout",
                )),
            );
        }
        if let (ClientState::WaitingToReconnect { .. }, Some(at)) = (&self.state, self.reconnect_at)
        {
            if at <= now {
                self.start_connecting();
            }
        }
        if self.state == ClientState::Open {
            let due: Vec<PushSub> = self
                .subs
                .iter_mut()
                .filter(|h| h.retry.is_some_and(|(at, _)| at <= now))
                .map(|h| {
                    h.retry = None;
                    h.sub.clone()
                })
                .collect();
            for sub in due {
                self.send_subscribe(sub, Vec::new());
            }
        }
    }

    // ----- commands -----

    /// Calls `function` and ignores its reply (the JS client's `Call`). Queued
    /// while not open; `rtm/queue-full` when the queue is full, `rtm/closed` after [`Client::close`].
    pub fn call(&mut self, function: &str, args: Args, now: Instant) -> Result<(), RtmError> {
        let _ = now;
        self.check_not_closed()?;
        if self.state == ClientState::Open {
            let id = self.request_id();
            self.transmit(frame::encode_invoke(&RequestId::new(&id), function, &args));
            return Ok(());
        }
        self.enqueue(None, function, args)
    }

    /// Calls `function`; its reply comes back as a [`ClientOutput::CallDone`]
    /// (the JS client's `CallWait`). Queued while not open; the call timeout
    /// runs from now, also while queued.
    pub fn call_wait(
        &mut self,
        function: &str,
        args: Args,
        now: Instant,
    ) -> Result<CallId, RtmError> {
        self.check_not_closed()?;
        if self.state == ClientState::Open {
            let id = self.request_id();
            self.transmit(frame::encode_invoke(&RequestId::new(&id), function, &args));
            let call = self.new_call(now, Place::Sent(id.clone()));
            self.pending.insert(id, Pending::Call(call));
            return Ok(call);
        }
        if self.queue.len() >= self.config.offline_queue {
            return Err(self.queue_full());
        }
        let call = self.new_call(now, Place::Queued);
        self.enqueue(Some(call), function, args)?;
        Ok(call)
    }

    /// Holds a push subscription to `event` with `tags`, re-sent after every
    /// reconnect until [`Client::unsubscribe_push`]. Its acknowledgement comes
    /// as a [`ClientOutput::CallDone`] (after the next open if offline).
    pub fn subscribe_push(
        &mut self,
        event: &str,
        tags: &[String],
        now: Instant,
    ) -> Result<CallId, RtmError> {
        self.check_not_closed()?;
        frame::check_event_name(event)?;
        let sub = subs::normalize(event, tags);
        if self.state == ClientState::Open {
            // Placed when sent, just below.
            let call = self.new_call(now, Place::Done);
            self.subs.add(sub.clone());
            self.send_subscribe(sub, vec![call]);
            return Ok(call);
        }
        let call = self.new_call(now, Place::HeldSub);
        self.subs.add(sub).waiters.push(call);
        Ok(call)
    }

    /// Forgets a push subscription's `tags` for `event`. While open the server
    /// is told and acknowledges through [`ClientOutput::CallDone`]; while
    /// offline there is nothing to undo on the server, so it completes at once.
    pub fn unsubscribe_push(
        &mut self,
        event: &str,
        tags: &[String],
        now: Instant,
    ) -> Result<CallId, RtmError> {
        self.check_not_closed()?;
        frame::check_event_name(event)?;
        let sub = subs::normalize(event, tags);
        self.positions.forget(event, &sub.tags);
        // Offline subscribes withdrawn before they were sent: done, nothing to send.
        for orphan in self.subs.remove_tags(event, &sub.tags) {
            self.complete(orphan, Ok(raw_true()));
        }
        if self.state == ClientState::Open {
            let id = self.request_id();
            self.transmit(frame::encode_subscription(
                &RequestId::new(&id),
                false,
                &sub,
            ));
            let call = self.new_call(now, Place::Sent(id.clone()));
            self.pending.insert(id, Pending::Unsubscribe(call));
            return Ok(call);
        }
        let call = self.new_call(now, Place::Done);
        self.complete(call, Ok(raw_true()));
        Ok(call)
    }

    /// Something no retry can fix happened, such as a malformed server URL
    /// or an unsupported scheme found when connecting: `err` is reported (a
    /// [`ClientEvent::Error`]), every queued and in-flight call fails with
    /// it, and the client ends [`ClientState::Closed`] without reconnecting.
    pub fn handle_fatal_error(&mut self, err: RtmError) {
        if self.state == ClientState::Closed {
            return;
        }
        let has_socket = matches!(self.state, ClientState::Open | ClientState::Authenticating);
        self.close_for_good(err, None, has_socket);
    }

    /// Closes the client for good: every pending and queued call fails with
    /// `rtm/closed`, the socket is closed ([`ClientOutput::Disconnect`]) and no
    /// reconnect follows. Further commands fail with `rtm/closed`.
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        if self.state == ClientState::Closed {
            return;
        }
        // While waiting to reconnect there is no socket to close.
        let has_socket = !matches!(self.state, ClientState::WaitingToReconnect { .. });
        self.fail_everything(&RtmError::new(ErrorCode::Closed, "the client was closed"));
        if has_socket {
            self.outputs.push_back(ClientOutput::Disconnect);
        }
        self.state = ClientState::Closed;
        self.lifecycle(ClientEvent::Closed {
            code: Some(CloseCode::NORMAL.0),
            reason: "closed by the application".into(),
        });
    }

    // ----- outputs -----

    /// The next thing the adapter must do, or `None` when there is nothing.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let call = self.deadlines.first().map(|(at, _)| *at);
        let reconnect = match self.state {
            ClientState::WaitingToReconnect { .. } => self.reconnect_at,
            _ => None,
        };
        let retry = match self.state {
            ClientState::Open => self.subs.next_retry(),
            _ => None,
        };
        [call, reconnect, self.heartbeat_due(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals -----

    fn lifecycle(&mut self, event: ClientEvent) {
        self.outputs.push_back(ClientOutput::Lifecycle(event));
    }

    fn transmit(&mut self, frame: Bytes) {
        self.outputs.push_back(ClientOutput::Transmit(frame));
    }

    fn request_id(&mut self) -> String {
        // Unique for the client's whole life, hence per connection too.
        self.next_request += 1;
        self.next_request.to_string()
    }

    fn new_call(&mut self, now: Instant, place: Place) -> CallId {
        self.next_call += 1;
        let call = CallId(self.next_call);
        let deadline = self.config.call_timeout.and_then(|t| now.checked_add(t));
        if let Some(at) = deadline {
            self.deadlines.insert((at, call));
        }
        self.calls.insert(call, Call { deadline, place });
        call
    }

    /// Records `pending` under request `id` and moves `call` there.
    fn send_as(&mut self, call: CallId, id: String, pending: Pending) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.place = Place::Sent(id.clone());
        }
        self.pending.insert(id, pending);
    }

    /// Finishes a live call once; a call already finished is skipped.
    fn complete(&mut self, call: CallId, result: Result<Box<RawValue>, RtmError>) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        if let Some(at) = c.deadline {
            self.deadlines.remove(&(at, call));
        }
        self.outputs
            .push_back(ClientOutput::CallDone { call, result });
    }

    /// Takes a call out of wherever it waits (it timed out).
    fn unplace(&mut self, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match &c.place {
            Place::Queued => self.queue.retain(|q| q.call != Some(call)),
            Place::HeldSub => self.subs.remove_waiter(call),
            Place::Done => {}
            Place::Sent(id) => match self.pending.get_mut(id) {
                Some(Pending::Subscribe { waiters, .. }) => waiters.retain(|w| *w != call),
                Some(Pending::Call(_) | Pending::Unsubscribe(_)) => {
                    self.pending.remove(id);
                }
                Some(Pending::Auth) | None => {}
            },
        }
    }

    /// A socket is open (authenticating or open).
    fn has_socket(&self) -> bool {
        matches!(self.state, ClientState::Authenticating | ClientState::Open)
    }

    /// When the heartbeat must act next: ping, or give up on the server.
    fn heartbeat_due(&self) -> Option<Instant> {
        let beat = self.config.heartbeat.filter(|_| self.has_socket())?;
        let ping = self.last_heard.max(self.last_ping) + beat.interval;
        Some(ping.min(self.last_heard + beat.timeout))
    }

    fn heartbeat(&mut self, now: Instant) {
        let Some(beat) = self.config.heartbeat.filter(|_| self.has_socket()) else {
            return;
        };
        if now >= self.last_heard + beat.timeout {
            // The socket may look open forever: close it and reconnect.
            self.outputs.push_back(ClientOutput::Disconnect);
            let reason = format!("nothing from the server for {:?}", beat.timeout);
            self.handle_close(None, &reason, now);
        } else if now >= self.last_heard.max(self.last_ping) + beat.interval {
            self.last_ping = now;
            self.outputs.push_back(ClientOutput::Ping);
        }
    }

    fn check_not_closed(&self) -> Result<(), RtmError> {
        if self.state == ClientState::Closed {
            let message = match &self.closed_by {
                Some(why) => format!("the client was closed: {why}"),
                None => "the client was closed".to_owned(),
            };
            return Err(RtmError::new(ErrorCode::Closed, message));
        }
        Ok(())
    }

    fn queue_full(&self) -> RtmError {
        RtmError::new(
            ErrorCode::QueueFull,
            format!("offline queue full ({} calls)", self.config.offline_queue),
        )
    }

    fn enqueue(
        &mut self,
        call: Option<CallId>,
        function: &str,
        args: Args,
    ) -> Result<(), RtmError> {
        if self.queue.len() >= self.config.offline_queue {
            return Err(self.queue_full());
        }
        self.queue.push_back(Queued {
            call,
            function: function.to_owned(),
            args,
        });
        Ok(())
    }

    fn send_subscribe(&mut self, sub: PushSub, waiters: Vec<CallId>) {
        let id = self.request_id();
        let since = self
            .config
            .track_positions
            .then(|| self.positions.since(&sub.event, &sub.tags));
        let wire = PushSub {
            since,
            ..sub.clone()
        };
        self.transmit(frame::encode_subscription(
            &RequestId::new(&id),
            true,
            &wire,
        ));
        for call in &waiters {
            if let Some(c) = self.calls.get_mut(call) {
                c.place = Place::Sent(id.clone());
            }
        }
        self.pending.insert(id, Pending::Subscribe { sub, waiters });
    }

    fn start_connecting(&mut self) {
        self.state = ClientState::Connecting;
        self.reconnect_at = None;
        self.outputs.push_back(ClientOutput::Connect);
        self.lifecycle(ClientEvent::Connecting);
    }

    /// Open and authenticated: re-send subscriptions, then flush the queue in order.
    fn become_open(&mut self) {
        self.state = ClientState::Open;
        self.attempt = 0;
        let resend: Vec<(PushSub, Vec<CallId>)> = self
            .subs
            .iter_mut()
            .map(|h| {
                h.retry = None;
                (h.sub.clone(), std::mem::take(&mut h.waiters))
            })
            .collect();
        for (sub, waiters) in resend {
            self.send_subscribe(sub, waiters);
        }
        while let Some(q) = self.queue.pop_front() {
            let id = self.request_id();
            self.transmit(frame::encode_invoke(
                &RequestId::new(&id),
                &q.function,
                &q.args,
            ));
            if let Some(call) = q.call {
                self.send_as(call, id, Pending::Call(call));
            }
        }
    }

    fn handle_reply(
        &mut self,
        id: &str,
        result: Result<Box<RawValue>, RtmError>,
        streams: Option<Box<RawValue>>,
        now: Instant,
    ) {
        let Some(pending) = self.pending.remove(id) else {
            return;
        };
        match pending {
            Pending::Auth => match result {
                Ok(data) if is_truthy(&data) => {
                    self.lifecycle(ClientEvent::Authenticated(data));
                    self.stream_states(positions::USER_KEY, streams);
                    self.become_open();
                }
                Ok(_) => self.auth_rejected("authentication rejected", true),
                Err(err) => self.auth_rejected(&err.message, true),
            },
            Pending::Call(call) | Pending::Unsubscribe(call) => self.complete(call, result),
            Pending::Subscribe { sub, waiters } => {
                match &result {
                    Ok(_) => self.subscribed(&sub, streams),
                    Err(err) => self.subscribe_refused(&sub, err, waiters.is_empty(), now),
                }
                for call in waiters {
                    self.complete(call, result.clone());
                }
            }
        }
    }

    /// A subscribe was taken: its streams' positions are where the reply
    /// says; a stream that could not be recovered is told to the application.
    fn subscribed(&mut self, sub: &PushSub, streams: Option<Box<RawValue>>) {
        if let Some(held) = self.subs.get_mut(sub) {
            held.retries = 0;
        }
        self.stream_states(&sub.event, streams);
    }

    /// A reply's `streams`: the positions of `event`'s streams (the user's
    /// stream for an `auth`); a stream that could not be recovered is told.
    fn stream_states(&mut self, event: &str, streams: Option<Box<RawValue>>) {
        let Some(streams) = streams.filter(|_| self.config.track_positions) else {
            return;
        };
        match crate::positions::parse_streams(&streams) {
            Ok(states) => {
                for (tag, reason) in self.positions.handle_streams(event, states) {
                    self.lifecycle(ClientEvent::Resync {
                        event: event.to_owned(),
                        tag,
                        reason: crate::positions::reason_code(&reason).to_owned(),
                    });
                }
            }
            Err(message) => self.lifecycle(ClientEvent::Error(RtmError::bad_request(message))),
        }
    }

    /// A subscribe was refused. A temporary refusal (`rtm/broker-unavailable`,
    /// `rtm/timeout`) of a held subscription is sent again after a backoff
    /// (the reconnect schedule's); any other, or with no reconnects, stops
    /// it being sent again.
    fn subscribe_refused(&mut self, sub: &PushSub, err: &RtmError, tell: bool, now: Instant) {
        self.positions.resync_failed(&sub.event, &sub.tags);
        let temporary = matches!(err.code, ErrorCode::BrokerUnavailable | ErrorCode::Timeout);
        let retry = match self.subs.get_mut(sub) {
            Some(held) if temporary => {
                let attempt = held.retries.saturating_add(1);
                backoff::delay(&self.config.reconnect, attempt, &mut self.rng).map(|delay| {
                    held.retries = attempt;
                    held.retry = Some((now + delay, attempt));
                    (attempt, delay)
                })
            }
            _ => None,
        };
        match retry {
            Some((attempt, delay)) => self.lifecycle(ClientEvent::SubscribeRetry {
                event: sub.event.clone(),
                tags: sub.tags.clone(),
                attempt,
                delay,
                error: err.clone(),
            }),
            None => {
                // Denied: the server does not hold it, so stop re-sending it.
                self.subs.forget(sub);
                if tell {
                    self.lifecycle(ClientEvent::Error(err.clone()));
                }
            }
        }
    }

    /// The server rejected the auth: terminal, nothing is retried.
    fn auth_rejected(&mut self, message: &str, close_socket: bool) {
        let err = RtmError::new(ErrorCode::AuthRejected, message);
        self.close_for_good(err, Some(CloseCode::AUTH_REJECTED.0), close_socket);
    }

    /// Reports `err`, fails every call with it and ends `Closed`.
    fn close_for_good(&mut self, err: RtmError, code: Option<u16>, close_socket: bool) {
        self.closed_by = Some(err.clone());
        self.lifecycle(ClientEvent::Error(err.clone()));
        self.fail_everything(&err);
        if close_socket {
            self.outputs.push_back(ClientOutput::Disconnect);
        }
        self.state = ClientState::Closed;
        self.lifecycle(ClientEvent::Closed {
            code,
            reason: err.message,
        });
    }

    /// The connection is gone: invokes in flight fail (they may not be
    /// idempotent, so they are not re-sent); subscribes wait for the next open.
    fn drop_in_flight(&mut self) {
        let disconnected = || {
            RtmError::new(
                ErrorCode::Disconnected,
                "connection lost while the call was in flight",
            )
        };
        for p in self.take_pending() {
            match p {
                Pending::Auth => {}
                Pending::Call(call) => self.complete(call, Err(disconnected())),
                // The subscription is gone with the connection, as asked.
                Pending::Unsubscribe(call) => self.complete(call, Ok(raw_true())),
                Pending::Subscribe { sub, waiters } => match self.subs.get_mut(&sub) {
                    Some(held) => {
                        held.waiters.extend(&waiters);
                        for call in waiters {
                            if let Some(c) = self.calls.get_mut(&call) {
                                c.place = Place::HeldSub;
                            }
                        }
                    }
                    None => {
                        for call in waiters {
                            self.complete(call, Err(disconnected()));
                        }
                    }
                },
            }
        }
    }

    /// Every request awaiting a reply, in the order sent (request ids are
    /// increasing numbers), so completions come out in call order.
    fn take_pending(&mut self) -> Vec<Pending> {
        let mut pending: Vec<(String, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(u64::MAX));
        pending.into_iter().map(|(_, p)| p).collect()
    }

    /// Every pending, queued and held call fails with `err`; subscriptions are forgotten.
    fn fail_everything(&mut self, err: &RtmError) {
        self.drop_in_flight_with(err);
        while let Some(q) = self.queue.pop_front() {
            if let Some(call) = q.call {
                self.complete(call, Err(err.clone()));
            }
        }
        for call in self.subs.clear() {
            self.complete(call, Err(err.clone()));
        }
        self.positions.clear();
        self.reconnect_at = None;
    }

    fn drop_in_flight_with(&mut self, err: &RtmError) {
        for p in self.take_pending() {
            match p {
                Pending::Auth => {}
                Pending::Call(call) | Pending::Unsubscribe(call) => {
                    self.complete(call, Err(err.clone()));
                }
                Pending::Subscribe { waiters, .. } => {
                    for call in waiters {
                        self.complete(call, Err(err.clone()));
                    }
                }
            }
        }
    }
}

/// JavaScript truthiness of a reply's `data`, as the JS client tests the auth reply.
fn is_truthy(data: &RawValue) -> bool {
    match serde_json::from_str::<serde_json::Value>(data.get()) {
        Ok(serde_json::Value::Null | serde_json::Value::Bool(false)) => false,
        Ok(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
        Ok(serde_json::Value::String(s)) => !s.is_empty(),
        Ok(_) => true,
        Err(_) => false,
    }
}

fn raw_true() -> Box<RawValue> {
    // A literal that is valid JSON: cannot fail.
    RawValue::from_string("true".to_owned()).expect("`true` is JSON")
}
