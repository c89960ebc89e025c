//! Step 4: the requests in flight — the functions, the auth handler and the
//! subscribe authorizer the connection runs — and carrying out what the
//! connection asks ([`ConnOutput`]), in order.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use rtm_core::{AuthTicket, CallTicket, FunctionId, JoinTicket, SubscribeTicket};
use rtm_core::{CloseCode, ConnOutput, ErrorCode, Identity, PushSub, RtmError};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ConnectionDriver, Next};
use crate::function::{CallContext, SubscribeRequest};
use crate::metrics::{AuthResult, CallOutcome, FrameKind};
use crate::runtime::BoxFuture;
use crate::server::handle::ServerHandle;
use crate::server::shared::call_hook;
use crate::server::socket::Socket;

/// What finished among the things a connection waits for.
pub(super) enum Done {
    Call(CallDone),
    Auth(AuthTicket, Result<Identity, RtmError>),
    Authorized(SubscribeTicket, Result<(), RtmError>),
}

/// A function's end: its reply, and what the metrics count of it.
pub(super) struct CallDone {
    ticket: CallTicket,
    function: FunctionId,
    /// The round it started in.
    started: Instant,
    outcome: CallOutcome,
    result: Result<Box<RawValue>, RtmError>,
}

/// Something the connection waits for: a running function (its boxed
/// future as the function returned it), or another handler.
pub(super) enum Waiting {
    Call(Option<Box<Started>>, crate::function::FunctionFuture),
    Other(BoxFuture<Done>),
}

/// A call running in this task.
pub(super) struct Started {
    ticket: CallTicket,
    function: FunctionId,
    at: Instant,
}

impl Future for Waiting {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        match self.get_mut() {
            Waiting::Other(future) => future.as_mut().poll(cx),
            Waiting::Call(started, running) => {
                // A panic inside the function becomes `rtm/internal`.
                let polled =
                    std::panic::catch_unwind(AssertUnwindSafe(|| running.as_mut().poll(cx)));
                let (outcome, result) = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => function_ended(Ok(result)),
                    Err(panic) => function_ended(Err(panic)),
                };
                match started.take() {
                    Some(started) => Poll::Ready(Done::Call(CallDone {
                        ticket: started.ticket,
                        function: started.function,
                        started: started.at,
                        outcome,
                        result,
                    })),
                    // Polled after completion: never, FuturesUnordered drops it.
                    None => Poll::Pending,
                }
            }
        }
    }
}

impl<T: Socket> ConnectionDriver<T> {
    /// Polls the functions and handlers in flight (those just started too,
    /// so each registers this task's waker), hands their results in, and
    /// closes 1001 once shutdown began and nothing is in flight.
    pub(super) fn drive_requests(&mut self, cx: &mut Context<'_>, now: Instant) -> Next {
        loop {
            self.poll_waiting(cx, now);
            self.carry_out(cx, now);
            if self.draining && self.conn.in_flight() == 0 && !self.conn.is_closed() {
                self.conn
                    .close(CloseCode::GOING_AWAY, "server shutting down");
                self.carry_out(cx, now);
            }
            if !std::mem::take(&mut self.fresh) {
                return Next::IDLE;
            }
        }
    }

    /// Carries out the connection's outputs, in order.
    pub(super) fn carry_out(&mut self, cx: &mut Context<'_>, now: Instant) {
        // Replies are counted once per call here, not per frame.
        let mut replies = (0u64, 0u64);
        while let Some(output) = self.conn.poll_output() {
            match output {
                ConnOutput::Transmit(frame) => {
                    replies = (replies.0 + 1, replies.1 + frame.len() as u64);
                    self.transmit(&frame);
                }
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
                } => self.invoke(cx, ticket, function, args, now),
                ConnOutput::Authorize { ticket } => self.authorize(ticket),
                ConnOutput::Join { ticket, info } => self.join(ticket, info, now),
                ConnOutput::Subscribe { ticket } => self.subscribe(ticket, now),
                ConnOutput::Unsubscribe(sub) => self.unsubscribe(&sub),
                ConnOutput::AuthTimedOut => {
                    tracing::debug!(conn = %self.conn.id(), "authentication timed out");
                    self.shared.metrics.auth(AuthResult::Timeout);
                    if let Some(hook) = &self.shared.on_auth_timeout {
                        call_hook(hook, self.conn.info());
                    }
                }
                ConnOutput::CallRefused { function, code } => self
                    .shared
                    .metrics
                    .call_answered_by_connection(function, CallOutcome::of_refusal(code)),
                ConnOutput::SubscribeAnswered { result } => {
                    self.shared.metrics.subscribe_answered(&result);
                }
                ConnOutput::PeerSilent => {
                    tracing::debug!(conn = %self.conn.id(), "peer silent past the heartbeat deadline");
                }
            }
        }
        self.shared
            .metrics
            .frames_sent(FrameKind::Reply, replies.0, replies.1);
        if !self.authenticated && self.conn.is_open() {
            self.authenticated = true;
            self.shared.metrics.connection_authenticated();
            let max = self.shared.config.limits.max_frame_bytes;
            self.transport.set_max_message(max);
        }
    }

    /// Polls the functions and handlers in flight and hands their results in.
    fn poll_waiting(&mut self, cx: &mut Context<'_>, now: Instant) {
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
            self.finish(done, now);
        }
    }

    /// `now`: the round the end was seen in.
    fn finish(&mut self, done: Done, now: Instant) {
        match done {
            Done::Call(call) => {
                let CallDone {
                    ticket,
                    function,
                    started,
                    outcome,
                    result,
                } = call;
                let took = now.saturating_duration_since(started);
                self.shared.metrics.call_ended(function, outcome, took);
                match result {
                    Ok(raw) => self.conn.handle_call_result_raw(ticket, Ok(&raw)),
                    Err(err) => self.conn.handle_call_result_raw(ticket, Err(err)),
                }
            }
            Done::Auth(ticket, result) => {
                match &result {
                    Ok(identity) => {
                        tracing::debug!(conn = %self.conn.id(), user = %crate::log::clip(&identity.user_id), "authenticated");
                        self.shared.metrics.auth(AuthResult::Accepted);
                    }
                    Err(err) => {
                        tracing::debug!(conn = %self.conn.id(), %err, "authentication rejected");
                        self.shared.metrics.auth(AuthResult::of_error(err));
                    }
                }
                self.conn.handle_auth_result(ticket, result);
            }
            Done::Authorized(ticket, result) => self.conn.handle_authorize_result(ticket, result),
        }
    }

    fn authenticate(&mut self, ticket: AuthTicket, data: rtm_core::Args) {
        let Some(auth) = self.shared.auth.clone() else {
            self.shared.metrics.auth(AuthResult::Error);
            self.conn
                .handle_auth_result(ticket, Err(RtmError::internal("no auth handler")));
            return;
        };
        let info = self.conn.info().clone();
        if let Some(limits) = &self.shared.limits {
            let now = self.shared.runtime.now();
            let checked = lock(limits).check_sign_in(&info, now);
            if let Err(err) = checked {
                self.shared.metrics.auth(AuthResult::Rejected);
                self.conn.handle_auth_result(ticket, Err(err));
                return;
            }
        }
        self.wait(Box::pin(async move {
            Done::Auth(ticket, guarded(auth(info, data)).await)
        }));
    }

    fn invoke(
        &mut self,
        cx: &mut Context<'_>,
        ticket: CallTicket,
        function: FunctionId,
        args: rtm_core::Args,
        now: Instant,
    ) {
        let server = self
            .handle
            .get_or_insert_with(|| ServerHandle::for_connection(&self.shared))
            .clone();
        let ctx = CallContext {
            info: self.conn.info().clone(),
            server,
        };
        if let Some(limits) = &self.shared.limits {
            let mut limits = lock(limits);
            if limits.limits_users(function) {
                let name = self.shared.functions.name(function).unwrap_or_default();
                let now = self.shared.runtime.now();
                if let Err(err) = limits.check_call(function, name, &ctx.info, now) {
                    drop(limits);
                    self.shared
                        .metrics
                        .call_refused(function, CallOutcome::TooMany);
                    self.conn.handle_call_result::<Value>(ticket, Err(err));
                    return;
                }
            }
        }
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
                self.shared
                    .metrics
                    .call_refused(function, CallOutcome::Panic);
                self.conn
                    .handle_call_result::<Value>(ticket, Err(panicked()));
                return;
            }
        };
        self.shared.metrics.call_started();
        if detached {
            // Runs on its own task: it outlives this connection if it must.
            let (tx, rx) = futures_channel::oneshot::channel();
            self.shared.runtime.spawn(Box::pin(async move {
                let ended = AssertUnwindSafe(running).catch_unwind().await;
                let _ = tx.send(function_ended(ended));
            }));
            self.wait(Box::pin(async move {
                let (outcome, result) = rx
                    .await
                    .unwrap_or_else(|_| (CallOutcome::Panic, Err(panicked())));
                Done::Call(CallDone {
                    ticket,
                    function,
                    started: now,
                    outcome,
                    result,
                })
            }));
            return;
        }
        // Started now, in arrival order; most functions finish on this first
        // poll, and only those that do not are kept (with no second box).
        let started = Started {
            ticket,
            function,
            at: now,
        };
        let mut call = Waiting::Call(Some(Box::new(started)), running);
        match Pin::new(&mut call).poll(cx) {
            Poll::Ready(done) => self.finish(done, now),
            Poll::Pending => self.keep(call),
        }
    }

    fn authorize(&mut self, ticket: SubscribeTicket) {
        let Some(authorizer) = self.shared.authorizer.clone() else {
            self.conn.handle_authorize_result(ticket, Ok(()));
            return;
        };
        let request = SubscribeRequest {
            info: self.conn.info().clone(),
            event: ticket.event().to_owned(),
            tags: ticket.tags().to_vec(),
        };
        self.wait(Box::pin(async move {
            let result = AssertUnwindSafe(authorizer(request))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("the subscribe authorizer panicked");
                    Err(RtmError::new(ErrorCode::Forbidden, "subscription denied"))
                });
            Done::Authorized(ticket, result)
        }));
    }

    /// Authenticated: into the router's user index. The router answers at
    /// once, or holds the ticket until the broker confirms the user's topic
    /// (it then comes back through the mailbox).
    fn join(&mut self, ticket: JoinTicket, info: Arc<rtm_core::ConnInfo>, now: Instant) {
        let settled = self.shared.router_mut().join(info, ticket, now);
        if let Some(settled) = settled {
            self.conn.handle_settled(settled);
        }
    }

    /// Into the router; answered at once, or once the broker confirmed every
    /// topic it needs (through the mailbox).
    fn subscribe(&mut self, ticket: SubscribeTicket, now: Instant) {
        let settled = self.shared.router_mut().subscribe(ticket, now);
        if let Some(settled) = settled {
            self.conn.handle_settled(settled);
        }
    }

    fn unsubscribe(&mut self, sub: &PushSub) {
        self.shared
            .router_mut()
            .unsubscribe(self.conn.id(), &sub.event, &sub.tags);
    }

    fn wait(&mut self, future: BoxFuture<Done>) {
        self.keep(Waiting::Other(future));
    }

    fn keep(&mut self, future: Waiting) {
        self.fresh = true;
        self.waiting.get_or_insert_with(Box::default).push(future);
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it; poisoned, it is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn panicked() -> RtmError {
    RtmError::internal("the function panicked")
}

/// A function's end, or its panic, as its reply and what the metrics count.
fn function_ended(
    ended: std::thread::Result<Result<Box<RawValue>, RtmError>>,
) -> (CallOutcome, Result<Box<RawValue>, RtmError>) {
    match ended {
        Ok(result) => (CallOutcome::of(&result), result),
        Err(_) => {
            tracing::error!("a function panicked");
            (CallOutcome::Panic, Err(panicked()))
        }
    }
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
