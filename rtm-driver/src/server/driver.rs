//! One connection's task: [`ConnectionDriver`], a future that owns the
//! connection's protocol state ([`rtm_core::Connection`]), its socket and
//! its running functions, shaped like quinn's `ConnectionDriver`.
//!
//! Every pass of [`ConnectionDriver::poll`] takes what the mailbox holds
//! (events from Emit / Publish / Push), reads and handles the frames that
//! arrived, polls the functions and handlers in flight, carries out the
//! connection's outputs, writes everything queued in one go, and re-arms
//! its one timer from [`Connection::poll_timeout`]. No lock is taken on the
//! call path: a call is read, run and answered inside this task; functions
//! start (are first polled) in the order their requests arrived.
//!
//! Closing is a lingering close: the close frame is written, the socket is
//! read (and discarded) until the peer's close or the end of the stream,
//! bounded by the close grace and `close_drain_bytes`, and only then is the
//! write side shut — so the peer reads the close code instead of a reset.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rtm_core::connection::{AuthTicket, CallTicket, JoinTicket, SubscribeTicket};
use rtm_core::{CloseCode, ConnOutput, Connection, ErrorCode, Identity, RtmError};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::function::CallContext;
use crate::runtime::BoxFuture;
use crate::server::broker_link::CONFIRM_TIMEOUT;
use crate::server::handle::{call_hook, ServerHandle, Shared};
use crate::server::mailbox::Mailbox;
use crate::server::transport::Transport;
use crate::websocket::codec::Message;
use crate::websocket::stream::Read;

/// Messages handled in one pass before the task lets others run.
const MESSAGES_PER_PASS: usize = 64;
/// Events taken from the mailbox while this much waits to be written, at most.
const WRITE_WATERMARK: usize = 64 * 1024;
/// Replies to the connection's own requests do not count toward
/// `max_outbound_bytes` (its requests are not read while they wait), up to
/// this many times it: past that, even replies make it a slow consumer.
const REPLY_ALLOWANCE: usize = 16;

/// What finished among the things a connection waits for.
enum Done {
    Call(CallTicket, Result<Box<RawValue>, RtmError>),
    Auth(AuthTicket, Result<Identity, RtmError>),
    Authorized(SubscribeTicket, Result<(), RtmError>),
    Subscribed(SubscribeTicket, Vec<String>, bool),
    Joined(JoinTicket),
}

/// The largest frame read before authentication: an `auth` request's data
/// at its limit, and room for the request around it.
pub(crate) fn pre_auth_frame_bytes(limits: &rtm_core::Limits) -> usize {
    limits
        .max_auth_bytes
        .saturating_add(1024)
        .min(limits.max_frame_bytes)
}

/// Something the connection waits for: a running function (its boxed
/// future as the function returned it), or another handler.
enum Waiting {
    Call(Option<CallTicket>, crate::function::FunctionFuture),
    Other(BoxFuture<Done>),
}

impl Future for Waiting {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        match self.get_mut() {
            Waiting::Other(future) => future.as_mut().poll(cx),
            Waiting::Call(ticket, running) => {
                // A panic inside the function becomes `rtm/internal`.
                let polled =
                    std::panic::catch_unwind(AssertUnwindSafe(|| running.as_mut().poll(cx)));
                let result = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => result,
                    Err(_) => {
                        tracing::error!("a function panicked");
                        Err(panicked())
                    }
                };
                match ticket.take() {
                    Some(ticket) => Poll::Ready(Done::Call(ticket, result)),
                    // Polled after completion: never, FuturesUnordered drops it.
                    None => Poll::Pending,
                }
            }
        }
    }
}

/// Where the task is in the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading and serving.
    Open,
    /// Our close frame is queued: writing it, then lingering until `deadline`.
    Closing { deadline: Instant, written: bool },
    /// The peer closed and its close is echoed: writing, then shutting down.
    Echoing { deadline: Instant },
    /// Write side being shut down.
    ShuttingDown { deadline: Instant },
    /// Over.
    Done,
}

/// One connection's task. See the [module docs](self).
pub(crate) struct ConnectionDriver<T> {
    shared: Arc<Shared>,
    conn: Connection,
    transport: T,
    mailbox: Arc<Mailbox>,
    waiting: Option<FuturesUnordered<Waiting>>,
    timer: Option<(Instant, BoxFuture<()>)>,
    stage: Stage,
    /// Shutdown began: no new request is read; close 1001 once idle.
    draining: bool,
    /// Still in the router (Emit and the rest reach it).
    routed: bool,
    linger_budget: usize,
    /// When what is queued gets written (with a write delay, or after one
    /// yield so frames other tasks are about to deliver share the write).
    flush_at: Option<Instant>,
    yielded: bool,
    /// Futures were added to `waiting` since it was last polled.
    fresh: bool,
    /// Counted against `max_connections_per_ip` while the connection lives.
    ip: Option<std::net::IpAddr>,
    /// The handle its functions get (made at the first call).
    handle: Option<ServerHandle>,
    /// Frames taken from the mailbox (swapped with its buffer: no allocation).
    inbox: std::collections::VecDeque<Bytes>,
    /// Bytes of events queued since nothing was left to write.
    event_bytes: usize,
    /// The last pass stopped reading for backpressure.
    read_paused: bool,
    /// Frames up to max_frame_bytes are read (after authentication).
    authenticated: bool,
}

impl<T: Transport> ConnectionDriver<T> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: Connection,
        mut transport: T,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        let linger_budget = shared.transport.close_drain_bytes;
        // Before authentication only an `auth` is useful: frames are held to
        // its size, so a peer that never authenticates cannot make the server
        // buffer a whole max_frame_bytes for it.
        let limits = &shared.config.limits;
        let authenticated = conn.is_open();
        if !authenticated {
            transport.set_max_message(pre_auth_frame_bytes(limits));
        }
        ConnectionDriver {
            shared,
            conn,
            transport,
            mailbox,
            waiting: None,
            timer: None,
            stage: Stage::Open,
            draining: false,
            routed: true,
            linger_budget,
            flush_at: None,
            yielded: false,
            fresh: false,
            ip: None,
            handle: None,
            inbox: std::collections::VecDeque::new(),
            event_bytes: 0,
            read_paused: false,
            authenticated,
        }
    }

    /// The connection counts against its IP's limit until it ends.
    pub(crate) fn holding_ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    /// One pass; see the module docs. Returns `Ready` when the connection is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let now = self.shared.runtime.now();
            if let Stage::Open = self.stage {
                self.take_mail(cx);
                let yielded = self.read(cx, now);
                self.timeout(now);
                loop {
                    self.poll_waiting(cx);
                    self.outputs(cx, now);
                    if self.draining && self.conn.in_flight() == 0 && !self.conn.is_closed() {
                        self.conn
                            .close(CloseCode::GOING_AWAY, "server shutting down");
                        self.outputs(cx, now);
                    }
                    // Futures added by these outputs are polled once now, so
                    // each registers this task's waker.
                    if !std::mem::take(&mut self.fresh) {
                        break;
                    }
                }
                if !self.authenticated && self.conn.is_open() {
                    self.authenticated = true;
                    let max = self.shared.config.limits.max_frame_bytes;
                    self.transport.set_max_message(max);
                }
                if matches!(self.stage, Stage::Open) {
                    if self.flush_due(cx, now) {
                        match self.transport.poll_flush(cx) {
                            Poll::Ready(Err(_)) => {
                                self.stage = Stage::Done;
                            }
                            Poll::Ready(Ok(())) | Poll::Pending => {}
                        }
                    }
                    // Events waiting to be written count toward the mailbox's
                    // bound; replies to the peer's own requests do not.
                    let unwritten = self.transport.unwritten();
                    if unwritten == 0 {
                        self.event_bytes = 0;
                    }
                    self.mailbox.set_held(self.event_bytes.min(unwritten));
                    if !matches!(self.stage, Stage::Open) {
                        continue;
                    }
                    // Reading paused for replies that are now written: read on
                    // (nothing else would wake this task for the bytes waiting).
                    if self.read_paused && unwritten < self.read_pause() {
                        continue;
                    }
                    if yielded {
                        cx.waker().wake_by_ref();
                    }
                    self.arm_timer(cx);
                    return Poll::Pending;
                }
                continue;
            }
            return self.close_stages(cx, now);
        }
    }

    /// Bytes waiting to be written past which the peer is not read.
    fn read_pause(&self) -> usize {
        (self.shared.config.limits.max_outbound_bytes / 4).clamp(1, WRITE_WATERMARK)
    }

    /// Whether to write now. Without a write delay, the first pass that has
    /// something to write lets the tasks already ready run once first (so
    /// events they deliver here share the write); with one, writes wait
    /// that long after the first frame queued.
    fn flush_due(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.transport.unwritten() == 0 {
            self.flush_at = None;
            self.yielded = false;
            // Nothing queued, but a flush may still be owed (TLS records).
            return true;
        }
        let delay = self.shared.transport.write_delay;
        if self.transport.unwritten() >= WRITE_WATERMARK {
            return true;
        }
        if delay.is_zero() {
            if self.yielded {
                self.yielded = false;
                return true;
            }
            self.yielded = true;
            cx.waker().wake_by_ref();
            return false;
        }
        let at = *self.flush_at.get_or_insert(now + delay);
        if now >= at {
            self.flush_at = None;
            return true;
        }
        false
    }

    /// Moves mailbox events into the write buffer (while it is short) and
    /// takes the application's requests (close, shutdown).
    fn take_mail(&mut self, cx: &mut Context<'_>) {
        let budget = WRITE_WATERMARK.saturating_sub(self.transport.unwritten());
        let taken = self
            .mailbox
            .take(Some(cx.waker()), budget.max(1), &mut self.inbox);
        for frame in self.inbox.drain(..) {
            self.event_bytes += frame.len();
            self.transport.queue_text(&frame);
        }
        if taken.overflowed {
            tracing::warn!(conn = %self.conn.id(), "slow consumer: outbound bound passed");
            self.conn.handle_slow_consumer();
        }
        if let Some((code, reason)) = taken.close {
            self.conn.close(code, reason);
        }
        self.draining |= taken.draining;
    }

    /// Reads and handles what arrived; `true` when it stopped early to let
    /// other tasks run.
    fn read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        // Backpressure: while this much waits to be written, the peer's next
        // requests wait in its socket (a peer that does not read its replies
        // is not read either), so replies stay bounded by what is in flight.
        let pause = self.read_pause();
        self.read_paused = false;
        for _ in 0..MESSAGES_PER_PASS {
            if self.draining || self.conn.is_closed() {
                return false;
            }
            if self.transport.unwritten() >= pause {
                self.read_paused = true;
                return false;
            }
            let Poll::Ready(read) = self.transport.poll_read(cx) else {
                return false;
            };
            match read {
                Read::Message(Message::Text(frame)) => self.conn.handle_text(frame, now),
                Read::Message(Message::Binary) => self.conn.handle_binary(),
                Read::Message(Message::Ping(payload)) => {
                    self.transport.set_pong(payload);
                    self.conn.handle_activity(now);
                }
                Read::Message(Message::Pong) => self.conn.handle_activity(now),
                Read::Message(Message::Close(code, _)) => {
                    tracing::debug!(conn = %self.conn.id(), ?code, "peer closed");
                    return self.echo_close(code, now);
                }
                Read::Violation(violation) if violation.resumable() => {
                    self.conn.handle_oversized();
                }
                Read::Violation(violation) => {
                    tracing::debug!(conn = %self.conn.id(), reason = violation.reason, "protocol violation");
                    self.conn.close(CloseCode(violation.code), violation.reason);
                }
                Read::Eof | Read::Failed(_) => {
                    tracing::debug!(conn = %self.conn.id(), "stream ended without a close frame");
                    self.leave_router();
                    self.stage = Stage::Done;
                    return false;
                }
            }
            self.outputs(cx, now);
        }
        true
    }

    /// The peer sent its close: echo its code (RFC 6455 §5.5.1) and finish.
    fn echo_close(&mut self, code: Option<u16>, now: Instant) -> bool {
        let echo = code.unwrap_or(CloseCode::NORMAL.0);
        // Whatever was queued goes first; the echo is the last frame.
        self.transport.queue_close(echo, "");
        self.leave_router();
        self.stage = Stage::Echoing {
            deadline: now + self.shared.transport.close_grace,
        };
        false
    }

    /// Polls the functions and handlers in flight and hands their results in.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) {
        let Some(waiting) = self.waiting.as_mut() else {
            return;
        };
        let mut finished = Vec::new();
        while let Poll::Ready(Some(done)) = waiting.poll_next_unpin(cx) {
            finished.push(done);
        }
        if waiting.is_empty() {
            // The allocation of an idle FuturesUnordered is freed.
            self.waiting = None;
        }
        for done in finished {
            self.finish(done);
        }
    }

    fn finish(&mut self, done: Done) {
        match done {
            Done::Call(ticket, result) => match result {
                Ok(raw) => self.conn.handle_call_result_raw(ticket, Ok(&raw)),
                Err(err) => self.conn.handle_call_result_raw(ticket, Err(err)),
            },
            Done::Auth(ticket, result) => {
                match &result {
                    Ok(identity) => {
                        tracing::debug!(conn = %self.conn.id(), user = %crate::log::clip(&identity.user_id), "authenticated")
                    }
                    Err(err) => {
                        tracing::debug!(conn = %self.conn.id(), %err, "authentication rejected")
                    }
                }
                self.conn.handle_auth_result(ticket, result);
            }
            Done::Authorized(ticket, result) => self.conn.handle_authorize_result(ticket, result),
            Done::Subscribed(ticket, added, ok) => {
                if ok {
                    self.conn.handle_subscribe_result(ticket, Ok(()));
                } else {
                    self.undo_subscribe(&ticket, &added);
                    let err = RtmError::new(
                        ErrorCode::BrokerUnavailable,
                        "the broker could not subscribe this subscription's topics",
                    );
                    self.conn.handle_subscribe_result(ticket, Err(err));
                }
            }
            Done::Joined(ticket) => self.conn.handle_joined(ticket),
        }
    }

    /// Carries out the connection's outputs, in order.
    fn outputs(&mut self, cx: &mut Context<'_>, now: Instant) {
        while let Some(output) = self.conn.poll_output() {
            match output {
                ConnOutput::Transmit(frame) => self.transmit(&frame),
                ConnOutput::Close { code, reason } => self.start_close(code, reason, now),
                // A connection with writes pending shows it is alive anyway.
                ConnOutput::Ping if self.transport.unwritten() == 0 => {
                    self.transport.queue_ping();
                }
                ConnOutput::Ping => {}
                ConnOutput::Authenticate { ticket, data } => self.authenticate(ticket, data),
                ConnOutput::Invoke {
                    ticket,
                    function,
                    args,
                } => self.invoke(cx, ticket, function, args),
                ConnOutput::Authorize { ticket } => self.authorize(ticket),
                ConnOutput::Join { ticket, info } => self.join(ticket, info),
                ConnOutput::Subscribe { ticket } => self.subscribe(ticket),
                ConnOutput::Unsubscribe(sub) => {
                    let gone =
                        self.shared
                            .router_mut()
                            .unsubscribe(self.conn.id(), &sub.event, &sub.tags);
                    self.shared.topic_changes(&[], &gone);
                }
                ConnOutput::AuthTimedOut => {
                    tracing::debug!(conn = %self.conn.id(), "authentication timed out");
                    if let Some(hook) = &self.shared.on_auth_timeout {
                        call_hook(hook, self.conn.info());
                    }
                }
                ConnOutput::PeerSilent => {
                    tracing::debug!(conn = %self.conn.id(), "peer silent past the heartbeat deadline");
                }
                _ => {}
            }
        }
    }

    /// Queues one of our own frames (a reply): the events delivered before
    /// it go first, so a function's own Emit reaches its caller before its
    /// reply, as it happened.
    fn transmit(&mut self, frame: &Bytes) {
        let mut overflowed = false;
        if self.mailbox.has_frames() {
            // No waker: the pass already registered this task's.
            let taken = self.mailbox.take(None, usize::MAX, &mut self.inbox);
            for event in self.inbox.drain(..) {
                self.event_bytes += event.len();
                self.transport.queue_text(&event);
            }
            overflowed = taken.overflowed;
        }
        self.transport.queue_text(frame);
        let allowance = self
            .shared
            .config
            .limits
            .max_outbound_bytes
            .saturating_mul(REPLY_ALLOWANCE);
        if overflowed || self.transport.unwritten() > allowance {
            tracing::warn!(conn = %self.conn.id(), "slow consumer: outbound bound passed");
            self.conn.handle_slow_consumer();
        }
    }

    fn authenticate(&mut self, ticket: AuthTicket, data: rtm_core::Args) {
        let Some(auth) = self.shared.auth.clone() else {
            self.conn
                .handle_auth_result(ticket, Err(RtmError::internal("no auth handler")));
            return;
        };
        let info = self.conn.info().clone();
        self.wait(Box::pin(async move {
            let data: Vec<Value> = data.deserialize().unwrap_or_default();
            Done::Auth(ticket, guarded(auth(data, info)).await)
        }));
    }

    fn invoke(
        &mut self,
        cx: &mut Context<'_>,
        ticket: CallTicket,
        function: rtm_core::FunctionId,
        args: rtm_core::Args,
    ) {
        let server = self
            .handle
            .get_or_insert_with(|| ServerHandle::for_connection(&self.shared))
            .clone();
        let ctx = CallContext {
            info: self.conn.info().clone(),
            server,
        };
        // By reference: no counter shared by every core is touched per call.
        let Some(handler) = self.shared.handlers.get(function.0 as usize) else {
            self.conn.handle_call_result::<Value>(
                ticket,
                Err(RtmError::internal("unknown function id")),
            );
            return;
        };
        let detached = handler.detached;
        let running = match std::panic::catch_unwind(AssertUnwindSafe(|| (handler.run)(ctx, args)))
        {
            Ok(running) => running,
            Err(_) => {
                self.conn
                    .handle_call_result::<Value>(ticket, Err(panicked()));
                return;
            }
        };
        if detached {
            // Runs on its own task: it outlives this connection if it must.
            let (tx, rx) = futures_channel::oneshot::channel();
            self.shared.runtime.spawn(Box::pin(async move {
                let _ = tx.send(guarded(running).await);
            }));
            self.wait(Box::pin(async move {
                let result = rx.await.unwrap_or_else(|_| Err(panicked()));
                Done::Call(ticket, result)
            }));
            return;
        }
        // Started now, in arrival order; most functions finish on this first
        // poll, and only those that do not are kept (with no second box).
        let mut call = Waiting::Call(Some(ticket), running);
        match Pin::new(&mut call).poll(cx) {
            Poll::Ready(done) => self.finish(done),
            Poll::Pending => self.keep(call),
        }
    }

    fn authorize(&mut self, ticket: SubscribeTicket) {
        let Some(authorizer) = self.shared.authorizer.clone() else {
            self.conn.handle_authorize_result(ticket, Ok(()));
            return;
        };
        let info = self.conn.info().clone();
        let (event, tags) = (ticket.event().to_owned(), ticket.tags().to_vec());
        self.wait(Box::pin(async move {
            let result = AssertUnwindSafe(authorizer(info, event, tags))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("the subscribe authorizer panicked");
                    Err(RtmError::new(ErrorCode::Forbidden, "subscription denied"))
                });
            Done::Authorized(ticket, result)
        }));
    }

    /// Authenticated: into the router's user index; the reply waits for the
    /// user's broker topic while the broker is up.
    fn join(&mut self, ticket: JoinTicket, info: Arc<rtm_core::ConnInfo>) {
        let user = info.user_id().map(str::to_owned);
        let wait = {
            let mut router = self.shared.router_mut();
            let new_topic = router.join(info);
            let unconfirmed = user
                .and_then(|user| router.user_topic(&user))
                .filter(|topic| router.broker_up() && !router.is_confirmed(topic));
            match (&self.shared.broker, unconfirmed) {
                (Some(link), Some(topic)) => {
                    link.change(new_topic.as_slice(), &[]);
                    Some(link.wait_confirmed(std::slice::from_ref(&topic)))
                }
                (Some(link), None) => {
                    link.change(new_topic.as_slice(), &[]);
                    None
                }
                (None, _) => None,
            }
        };
        match wait {
            None => self.conn.handle_joined(ticket),
            Some(confirmed) => {
                let runtime = self.shared.runtime.clone();
                self.wait(Box::pin(async move {
                    // Authentication goes on without the topic if the broker is slow.
                    let _ = crate::runtime::timeout(&*runtime, CONFIRM_TIMEOUT, confirmed).await;
                    Done::Joined(ticket)
                }));
            }
        }
    }

    /// Into the router; the reply waits for the broker to confirm every
    /// topic the subscription needs.
    fn subscribe(&mut self, ticket: SubscribeTicket) {
        let conn = self.conn.id();
        let outcome = {
            let mut router = self.shared.router_mut();
            match router.subscribe(conn, ticket.event(), ticket.tags()) {
                Err(err) => Err(err),
                Ok(subscribed) if subscribed.unconfirmed.is_empty() => Ok((subscribed, None)),
                Ok(subscribed) if !router.broker_up() => {
                    let gone = router.unsubscribe(conn, ticket.event(), &subscribed.added);
                    drop(router);
                    self.shared.topic_changes(&[], &gone);
                    Err(RtmError::new(
                        ErrorCode::BrokerUnavailable,
                        "the broker is down: this subscription needs a new topic",
                    ))
                }
                Ok(subscribed) => {
                    let wait = self
                        .shared
                        .broker
                        .as_ref()
                        .map(|link| link.wait_confirmed(&subscribed.unconfirmed));
                    Ok((subscribed, wait))
                }
            }
        };
        match outcome {
            Err(err) => self.conn.handle_subscribe_result(ticket, Err(err)),
            Ok((subscribed, None)) => {
                self.shared.topic_changes(&subscribed.new_topics, &[]);
                self.conn.handle_subscribe_result(ticket, Ok(()));
            }
            Ok((subscribed, Some(confirmed))) => {
                self.shared.topic_changes(&subscribed.new_topics, &[]);
                let runtime = self.shared.runtime.clone();
                let added = subscribed.added;
                self.wait(Box::pin(async move {
                    let ok = crate::runtime::timeout(&*runtime, CONFIRM_TIMEOUT, confirmed)
                        .await
                        .unwrap_or(false);
                    Done::Subscribed(ticket, added, ok)
                }));
            }
        }
    }

    fn undo_subscribe(&mut self, ticket: &SubscribeTicket, added: &[String]) {
        let gone = self
            .shared
            .router_mut()
            .unsubscribe(self.conn.id(), ticket.event(), added);
        self.shared.topic_changes(&[], &gone);
    }

    fn wait(&mut self, future: BoxFuture<Done>) {
        self.keep(Waiting::Other(future));
    }

    fn keep(&mut self, future: Waiting) {
        self.fresh = true;
        self.waiting
            .get_or_insert_with(FuturesUnordered::new)
            .push(future);
    }

    /// Time passed: the connection's deadlines.
    fn timeout(&mut self, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|(at, _)| at <= now) {
            self.conn.handle_timeout(now);
        }
    }

    /// Re-arms the one timer at the connection's next deadline (or the
    /// closing deadline).
    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let deadline = match self.stage {
            Stage::Open => {
                let conn = self.conn.poll_timeout().map(|(at, _)| at);
                match (conn, self.flush_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Stage::Closing { deadline, .. }
            | Stage::Echoing { deadline }
            | Stage::ShuttingDown { deadline } => Some(deadline),
            Stage::Done => None,
        };
        let Some(at) = deadline else {
            self.timer = None;
            return;
        };
        if self.timer.as_ref().is_none_or(|(armed, _)| *armed != at) {
            let wait = at.saturating_duration_since(self.shared.runtime.now());
            self.timer = Some((at, self.shared.runtime.sleep(wait)));
        }
        if let Some((_, timer)) = self.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                self.timer = None;
                cx.waker().wake_by_ref();
            }
        }
    }

    /// The connection decided to close: the close frame goes after what is
    /// queued to write (the events still in the mailbox are dropped, so a
    /// slow consumer's close does not wait behind them), and the connection
    /// leaves the router.
    fn start_close(&mut self, code: CloseCode, reason: &'static str, now: Instant) {
        tracing::debug!(conn = %self.conn.id(), code = code.0, reason, "closing");
        self.transport.queue_close(code.0, reason);
        self.leave_router();
        self.stage = Stage::Closing {
            deadline: now + self.shared.transport.close_grace,
            written: false,
        };
    }

    fn leave_router(&mut self) {
        leave_router(&self.shared, &self.conn, &self.mailbox, &mut self.routed);
    }

    /// Closing, echoing a close, shutting down: each bounded by its deadline.
    fn close_stages(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        loop {
            match self.stage {
                Stage::Open => return Poll::Pending,
                Stage::Done => {
                    self.leave_router();
                    self.timer = None;
                    return Poll::Ready(());
                }
                // Past the grace: the socket goes without waiting any longer.
                Stage::Closing { deadline, .. }
                | Stage::Echoing { deadline }
                | Stage::ShuttingDown { deadline }
                    if now >= deadline =>
                {
                    self.stage = Stage::Done
                }
                Stage::Closing {
                    deadline,
                    written: false,
                } => match self.transport.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.stage = Stage::Closing {
                            deadline,
                            written: true,
                        }
                    }
                    Poll::Ready(Err(_)) => self.stage = Stage::Done,
                    Poll::Pending => return self.pending(cx),
                },
                Stage::Closing {
                    deadline,
                    written: true,
                } => match self.transport.poll_linger(cx, &mut self.linger_budget) {
                    Poll::Ready(lingered) => {
                        tracing::trace!(conn = %self.conn.id(), ?lingered, "lingered");
                        self.stage = Stage::ShuttingDown { deadline };
                    }
                    Poll::Pending => return self.pending(cx),
                },
                Stage::Echoing { deadline } => match self.transport.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.stage = Stage::ShuttingDown { deadline },
                    Poll::Ready(Err(_)) => self.stage = Stage::Done,
                    Poll::Pending => return self.pending(cx),
                },
                Stage::ShuttingDown { .. } => match self.transport.poll_shutdown(cx) {
                    Poll::Ready(_) => self.stage = Stage::Done,
                    Poll::Pending => return self.pending(cx),
                },
            }
        }
    }

    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.arm_timer(cx);
        Poll::Pending
    }
}

impl<T: Transport> Future for ConnectionDriver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.drive(cx)
    }
}

impl<T> Drop for ConnectionDriver<T> {
    fn drop(&mut self) {
        // Also when the task is dropped unfinished (its runtime shut down).
        leave_router(&self.shared, &self.conn, &self.mailbox, &mut self.routed);
        if let Some(ip) = self.ip.take() {
            self.shared.release_ip(ip);
        }
        self.shared.connection_ended();
    }
}

/// Out of the router and its topics; the mailbox refuses further events;
/// the disconnect hook runs. Once.
fn leave_router(shared: &Shared, conn: &Connection, mailbox: &Mailbox, routed: &mut bool) {
    if !std::mem::replace(routed, false) {
        return;
    }
    mailbox.close_for_good();
    let removed = shared.router_mut().remove(conn.id());
    if let Some((_, gone)) = removed {
        shared.topic_changes(&[], &gone);
    }
    if let Some(hook) = &shared.on_disconnect {
        call_hook(hook, conn.info());
    }
}

fn panicked() -> RtmError {
    RtmError::internal("the function panicked")
}

/// Awaits a handler's future; a panic inside becomes `rtm/internal`.
async fn guarded<T>(future: impl Future<Output = Result<T, RtmError>>) -> Result<T, RtmError> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("a handler panicked");
            Err(panicked())
        }
    }
}

/// The size of one connection's task as spawned (its future), whatever the
/// stream under it (plain or TLS: both are a [`crate::io::BoxIo`]).
#[doc(hidden)]
pub fn connection_task_size() -> usize {
    std::mem::size_of::<ConnectionDriver<crate::websocket::stream::WebSocketIo<crate::io::BoxIo>>>()
}
