//! Closing: the close frame after what is queued, a bounded linger for the
//! peer's answer, then the write side shut; and leaving the router, once.

use std::task::{Context, Poll};
use std::time::Instant;

use rtm_core::{CloseCode, Connection};

use super::{ConnectionDriver, Stage};
use crate::metrics::ClosedBy;
use crate::server::mailbox::Mailbox;
use crate::server::shared::{call_hook, Shared};
use crate::server::socket::Socket;

impl<T: Socket> ConnectionDriver<T> {
    /// The connection decided to close: the close frame goes after what is
    /// queued to write (the events still in the mailbox are dropped, so a
    /// slow consumer's close does not wait behind them), and the connection
    /// leaves the router.
    pub(super) fn start_close(&mut self, code: CloseCode, reason: &'static str, now: Instant) {
        tracing::debug!(conn = %self.conn.id(), code = code.0, reason, "closing");
        self.shared
            .metrics
            .connection_closed(code, ClosedBy::Server);
        self.transport.queue_close(code, reason);
        self.leave_router();
        self.stage = Stage::Closing {
            deadline: now + self.shared.transport.close_grace,
            written: false,
        };
    }

    /// The peer does not read: the connection closes 1013.
    pub(super) fn slow_consumer(&mut self) {
        self.shared.metrics.slow_consumer();
        self.conn.handle_slow_consumer();
    }

    pub(super) fn leave_router(&mut self) {
        leave_router(&self.shared, &self.conn, &self.mailbox, &mut self.routed);
    }

    /// Closing, echoing a close, shutting down: each bounded by its deadline.
    pub(super) fn close_stages(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        loop {
            match self.stage {
                Stage::Open => return Poll::Pending,
                Stage::Done => {
                    self.leave_router();
                    self.timer = None;
                    self.timer_at = None;
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

/// Out of the router and its topics; the mailbox refuses further events;
/// the disconnect hook runs. Once.
pub(super) fn leave_router(
    shared: &Shared,
    conn: &Connection,
    mailbox: &Mailbox,
    routed: &mut bool,
) {
    if !std::mem::replace(routed, false) {
        return;
    }
    mailbox.close_for_good();
    shared.router_mut().remove(conn.id());
    if let Some(hook) = &shared.on_disconnect {
        call_hook(hook, conn.info());
    }
}
