//! One connection's task: [`ConnectionDriver`], a future that owns the
//! connection's protocol state ([`rtm_core::Connection`]), its socket and
//! its running functions, shaped like quinn's `ConnectionDriver`.
//!
//! Every round of [`ConnectionDriver::poll`] is a flat list of steps, each
//! in its own module, each saying whether another round is due at once:
//!
//! 1. [`mail`](self::mail): take what the mailbox holds — events from Emit /
//!    Publish / Push (within a write budget), requests the router settled,
//!    the application's close or shutdown;
//! 2. [`reading`](self::reading): read and handle the peer's frames
//!    (paused while replies wait to be written);
//! 3. timers: the connection's deadlines (auth, heartbeat) and the write
//!    stall of the slow-consumer rule;
//! 4. [`requests`](self::requests): poll the functions and handlers in
//!    flight, carry out the connection's outputs;
//! 5. [`writing`](self::writing): write what is queued (paced), apply the
//!    slow-consumer rule ([`rtm_core::outbound`]).
//!
//! The task sleeps only when no step has more to do: events left in the
//! mailbox are taken as soon as the socket has room for them, never at the
//! next timer. No lock is taken on the call path: a call is read, run and
//! answered inside this task; functions start (are first polled) in the
//! order their requests arrived.
//!
//! Closing ([`closing`](self::closing)) is a lingering close: the close
//! frame is written, the socket is read (and discarded) until the peer's
//! close or the end of the stream, bounded by the close grace and
//! `close_drain_bytes`, and only then is the write side shut — so the peer
//! reads the close code instead of a reset.

mod closing;
mod mail;
mod reading;
mod requests;
mod writing;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use rtm_core::{Connection, Outbound};

use crate::runtime::Timer;
use crate::server::handle::ServerHandle;
use crate::server::mailbox::Mailbox;
use crate::server::shared::Shared;
use crate::server::socket::Socket;

use self::requests::Waiting;

/// Rounds of steps in one poll before the task lets others run.
const ROUNDS_PER_POLL: usize = 16;

/// The largest frame read before authentication: an `auth` request's data
/// at its limit, and room for the request around it.
pub(crate) fn pre_auth_frame_bytes(limits: &rtm_core::Limits) -> usize {
    limits
        .max_auth_bytes
        .saturating_add(1024)
        .min(limits.max_frame_bytes)
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

/// What a step asks of the round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Next {
    /// Another round at once (something it did enables more work).
    again: bool,
    /// Let other tasks run first, then come back (a step hit its budget).
    yield_now: bool,
}

impl Next {
    const IDLE: Next = Next {
        again: false,
        yield_now: false,
    };
    const AGAIN: Next = Next {
        again: true,
        yield_now: false,
    };
    const YIELD: Next = Next {
        again: false,
        yield_now: true,
    };

    fn again_if(again: bool) -> Next {
        Next {
            again,
            yield_now: false,
        }
    }

    fn and(self, other: Next) -> Next {
        Next {
            again: self.again || other.again,
            yield_now: self.yield_now || other.yield_now,
        }
    }
}

/// One connection's task. See the [module docs](self).
pub(crate) struct ConnectionDriver<T> {
    shared: Arc<Shared>,
    conn: Connection,
    transport: T,
    mailbox: Arc<Mailbox>,
    /// Boxed: most connections wait for nothing most of the time, and this
    /// task's size is every idle connection's memory.
    waiting: Option<Box<FuturesUnordered<Waiting>>>,
    /// The connection's one timer (made at its first deadline, then moved),
    /// and the deadline it is armed at (`None`: not armed, or it fired).
    timer: Option<Pin<Box<dyn Timer>>>,
    timer_at: Option<Instant>,
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
    /// Counted against `max_connections_per_ip` (its peer's address) while
    /// the connection lives.
    holds_ip: bool,
    /// The handle its functions get (made at the first call).
    handle: Option<ServerHandle>,
    /// Frames taken from the mailbox (swapped with its buffer: no allocation).
    inbox: VecDeque<Bytes>,
    /// Bytes of the frames the last take left in the mailbox (0: none).
    mail_left: usize,
    /// Bytes of events queued since nothing was left to write.
    event_bytes: usize,
    /// The write progress the slow-consumer rule watches.
    outbound: Outbound,
    /// What the mailbox counts: bytes held unwritten (as it was told, plus
    /// what takes added), and in the top bit whether the socket is stalled
    /// (one word: this task's size is every idle connection's memory).
    reported: usize,
    /// The last round stopped reading for backpressure.
    read_paused: bool,
    /// Frames up to max_frame_bytes are read (after authentication).
    authenticated: bool,
}

impl<T: Socket> ConnectionDriver<T> {
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
            timer_at: None,
            stage: Stage::Open,
            draining: false,
            routed: true,
            linger_budget,
            flush_at: None,
            yielded: false,
            fresh: false,
            holds_ip: false,
            handle: None,
            inbox: VecDeque::new(),
            mail_left: 0,
            event_bytes: 0,
            outbound: Outbound::new(),
            reported: 0,
            read_paused: false,
            authenticated,
        }
    }

    /// The mailbox's count of held bytes after a take (the stalled bit kept).
    fn took(&mut self, held: usize) {
        const STALLED: usize = 1 << (usize::BITS - 1);
        self.reported = (self.reported & STALLED) | (held & !STALLED);
    }

    /// The connection counts against its peer address's limit until it ends.
    pub(crate) fn holding_ip(mut self, holds: bool) -> Self {
        self.holds_ip = holds;
        self
    }

    /// Rounds of steps until none has more to do; see the module docs.
    /// Returns `Ready` when the connection is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS_PER_POLL {
            let now = self.shared.runtime.now();
            if self.stage != Stage::Open {
                return self.close_stages(cx, now);
            }
            let next = self
                .drive_mail(cx, now)
                .and(self.drive_reads(cx, now))
                .and(self.drive_timers(cx, now))
                .and(self.drive_requests(cx, now))
                .and(self.drive_writes(cx, now));
            if self.stage != Stage::Open || next.again {
                continue;
            }
            if next.yield_now {
                cx.waker().wake_by_ref();
            }
            self.arm_timer(cx);
            return Poll::Pending;
        }
        // Its share of work for this poll is done: let other tasks run, and
        // come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Time passed: the connection's deadlines, and the write stall.
    fn drive_timers(&mut self, cx: &mut Context<'_>, now: Instant) -> Next {
        if self.conn.poll_timeout().is_some_and(|(at, _)| at <= now) {
            self.conn.handle_timeout(now);
            self.carry_out(cx, now);
        }
        self.outbound
            .handle_timeout(now, &self.shared.config.limits);
        Next::IDLE
    }

    /// Re-arms the one timer at the earliest deadline: the connection's,
    /// the write stall's, a delayed write's (or the closing deadline).
    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let deadline = match self.stage {
            Stage::Open => [
                self.conn.poll_timeout().map(|(at, _)| at),
                self.outbound.poll_timeout(&self.shared.config.limits),
                self.flush_at,
            ]
            .into_iter()
            .flatten()
            .min(),
            Stage::Closing { deadline, .. }
            | Stage::Echoing { deadline }
            | Stage::ShuttingDown { deadline } => Some(deadline),
            Stage::Done => None,
        };
        let Some(at) = deadline else {
            self.timer_at = None;
            return;
        };
        // One timer for the connection's life, moved in place.
        match self.timer.as_mut() {
            Some(timer) if self.timer_at != Some(at) => {
                timer.as_mut().reset(at, &*self.shared.runtime)
            }
            Some(_) => {}
            None => self.timer = Some(self.shared.runtime.timer(at)),
        }
        self.timer_at = Some(at);
        if let Some(timer) = self.timer.as_mut() {
            if timer.as_mut().poll_elapsed(cx).is_ready() {
                self.timer_at = None;
                cx.waker().wake_by_ref();
            }
        }
    }
}

impl<T: Socket> Future for ConnectionDriver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.drive(cx)
    }
}

impl<T> Drop for ConnectionDriver<T> {
    fn drop(&mut self) {
        // Also when the task is dropped unfinished (its runtime shut down).
        closing::leave_router(&self.shared, &self.conn, &self.mailbox, &mut self.routed);
        let lived = self
            .shared
            .runtime
            .now()
            .saturating_duration_since(self.conn.info().opened_at);
        self.shared
            .metrics
            .connection_ended(self.authenticated, lived);
        if std::mem::take(&mut self.holds_ip) {
            if let Some(peer) = self.conn.info().meta.peer_addr {
                self.shared.release_ip(peer.ip());
            }
        }
        self.shared.connection_ended();
    }
}

/// Idle memory per connection is mostly its task: a guard on the size of
/// what is spawned per connection, so growing it fails a test instead of a
/// benchmark nobody runs. The type does not depend on features (plain and
/// TLS streams are both a `BoxIo`); `cargo test --workspace` builds this
/// crate with every feature on.
#[cfg(test)]
mod size {
    /// Bytes, at most, of one connection's task future once upgraded.
    const CONNECTION_TASK_MAX: usize = 512;

    #[test]
    fn a_connections_task_stays_small() {
        let size = std::mem::size_of::<
            super::ConnectionDriver<crate::websocket::stream::WebSocketIo<crate::io::BoxIo>>,
        >();
        eprintln!("connection task: {size} bytes");
        assert!(
            size <= CONNECTION_TASK_MAX,
            "{size} bytes > {CONNECTION_TASK_MAX}"
        );
    }
}
