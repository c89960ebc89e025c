//! Step 1: what other tasks left in the mailbox.

use std::task::Context;
use std::time::Instant;

use super::{ConnectionDriver, Next};
use crate::metrics::FrameKind;
use crate::server::socket::Socket;

/// Events taken from the mailbox while this much waits to be written, at most.
pub(super) const WRITE_WATERMARK: usize = 64 * 1024;

impl<T: Socket> ConnectionDriver<T> {
    /// Moves mailbox events into the write buffer (while it is short),
    /// hands the requests the router settled to the connection, and takes
    /// the application's requests (close, shutdown). Frames left behind are
    /// taken once the socket has room ([`Self::drive_writes`] asks for the
    /// round).
    pub(super) fn drive_mail(&mut self, cx: &mut Context<'_>, now: Instant) -> Next {
        let budget = WRITE_WATERMARK.saturating_sub(self.transport.unwritten());
        // Settled requests are rare: a local buffer, not one in every task.
        let mut settled = Vec::new();
        let taken = self.mailbox.take(
            Some(cx.waker()),
            budget,
            &mut self.inbox,
            Some(&mut settled),
        );
        self.mail_left = taken.left_bytes;
        self.took(taken.held);
        self.queue_events();
        for settled in settled {
            self.conn.handle_settled(settled);
        }
        if taken.overflowed {
            tracing::warn!(conn = %self.conn.id(), "slow consumer: outbound bound passed");
            self.slow_consumer();
        }
        if let Some((code, reason)) = taken.close {
            self.conn.close(code, reason);
        }
        self.draining |= taken.draining;
        self.carry_out(cx, now);
        Next::IDLE
    }

    /// Queues the events taken from the mailbox into the write buffer.
    pub(super) fn queue_events(&mut self) {
        let (frames, bytes) = (self.inbox.len(), self.event_bytes);
        for event in self.inbox.drain(..) {
            self.event_bytes += event.len();
            self.transport.queue_text(&event);
        }
        let queued = self.event_bytes - bytes;
        self.shared
            .metrics
            .frames_sent(FrameKind::Event, frames as u64, queued as u64);
    }
}
