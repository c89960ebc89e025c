//! Step 5: writing what is queued, and the slow-consumer rule
//! ([`rtm_core::outbound`]) over what waits.

use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use super::mail::WRITE_WATERMARK;
use super::{ConnectionDriver, Next, Stage};
use crate::server::socket::Socket;

/// Replies to the connection's own requests do not count toward
/// `max_outbound_bytes` (its requests are not read while they wait), up to
/// this many times it: past that, even replies make it a slow consumer.
const REPLY_ALLOWANCE: usize = 16;

impl<T: Socket> ConnectionDriver<T> {
    /// Writes what is queued (when due), follows the socket's progress for
    /// the slow-consumer rule, and asks for another round when the write
    /// made room for what waits: events left in the mailbox, or requests
    /// left unread while replies waited.
    pub(super) fn drive_writes(&mut self, cx: &mut Context<'_>, now: Instant) -> Next {
        if self.stage != Stage::Open {
            return Next::IDLE;
        }
        if self.flush_due(cx, now) {
            let before = self.transport.unwritten();
            if let Poll::Ready(Err(_)) = self.transport.poll_flush(cx) {
                self.stage = Stage::Done;
                return Next::AGAIN;
            }
            self.outbound
                .handle_flush(before, self.transport.unwritten(), now);
        }
        let unwritten = self.transport.unwritten();
        if unwritten == 0 {
            self.event_bytes = 0;
        }
        // Events waiting to be written count toward the mailbox's bound;
        // replies to the peer's own requests do not.
        let held = self.event_bytes.min(unwritten);
        let stalled = self.outbound.is_stalled();
        let progress = held | (usize::from(stalled) << (usize::BITS - 1));
        if progress != self.reported {
            self.reported = progress;
            self.mailbox.set_progress(held, stalled);
        }
        let limits = &self.shared.config.limits;
        if self.outbound.is_slow(held + self.mail_left, limits) {
            tracing::warn!(conn = %self.conn.id(), "slow consumer: the peer stopped reading");
            self.slow_consumer();
            self.carry_out(cx, now);
            return Next::AGAIN;
        }
        // Room was made: take what the mailbox still holds, read what the
        // peer sent while its replies waited. Nothing else would wake this
        // task for either.
        let room_for_mail = self.mail_left > 0 && unwritten < WRITE_WATERMARK;
        let room_to_read = self.read_paused && unwritten < self.read_pause();
        Next::again_if(room_for_mail || room_to_read)
    }

    /// Whether to write now. Without a write delay, the first round that has
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

    /// Queues one of our own frames (a reply): the events delivered before
    /// it go first, so a function's own Emit reaches its caller before its
    /// reply, as it happened.
    pub(super) fn transmit(&mut self, frame: &Bytes) {
        let mut overflowed = false;
        if self.mailbox.has_frames() {
            // No waker: the round already registered this task's. Settled
            // requests come with the frames taken (a synced request's own
            // frames are among them): the connection sees them now, and
            // their outputs follow in the loop that carries outputs out.
            let mut settled = Vec::new();
            let taken = self
                .mailbox
                .take(None, usize::MAX, &mut self.inbox, Some(&mut settled));
            self.queue_events();
            self.mail_left = 0;
            self.took(taken.held);
            overflowed = taken.overflowed;
            for settled in settled {
                self.conn.handle_settled(settled);
            }
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
            self.slow_consumer();
        }
    }
}
