//! Step 2: the peer's frames.

use std::task::{Context, Poll};
use std::time::Instant;

use rtm_core::CloseCode;

use super::mail::WRITE_WATERMARK;
use super::{ConnectionDriver, Next, Stage};
use crate::metrics::ClosedBy;
use crate::server::socket::Socket;
use crate::websocket::codec::Message;
use crate::websocket::stream::Read;

/// Messages handled in one round before the task lets others run.
const MESSAGES_PER_ROUND: usize = 64;

impl<T: Socket> ConnectionDriver<T> {
    /// Bytes waiting to be written past which the peer is not read.
    pub(super) fn read_pause(&self) -> usize {
        (self.shared.config.limits.max_outbound_bytes / 4).clamp(1, WRITE_WATERMARK)
    }

    /// Reads and handles what arrived. Yields when it read its budget (more
    /// may wait in the socket).
    pub(super) fn drive_reads(&mut self, cx: &mut Context<'_>, now: Instant) -> Next {
        // Counted once per round, not per frame.
        let mut read = (0, 0);
        let next = self.read_messages(cx, now, &mut read);
        self.shared.metrics.received(read.0, read.1);
        next
    }

    /// [`Self::drive_reads`]' loop; `read` counts text frames and their bytes.
    fn read_messages(&mut self, cx: &mut Context<'_>, now: Instant, read: &mut (u64, u64)) -> Next {
        // Backpressure: while this much waits to be written, the peer's next
        // requests wait in its socket (a peer that does not read its replies
        // is not read either), so replies stay bounded by what is in flight.
        let pause = self.read_pause();
        self.read_paused = false;
        for _ in 0..MESSAGES_PER_ROUND {
            if self.draining || self.conn.is_closed() || self.stage != Stage::Open {
                return Next::IDLE;
            }
            if self.transport.unwritten() >= pause {
                self.read_paused = true;
                return Next::IDLE;
            }
            let Poll::Ready(got) = self.transport.poll_read(cx) else {
                return Next::IDLE;
            };
            match got {
                Read::Message(Message::Text(frame)) => {
                    *read = (read.0 + 1, read.1 + frame.len() as u64);
                    self.conn.handle_text(frame, now);
                }
                Read::Message(Message::Binary) => self.conn.handle_binary(),
                Read::Message(Message::Ping(payload)) => {
                    self.transport.set_pong(payload);
                    self.conn.handle_activity(now);
                }
                Read::Message(Message::Pong) => self.conn.handle_activity(now),
                Read::Message(Message::Close(code, _)) => {
                    tracing::debug!(conn = %self.conn.id(), ?code, "peer closed");
                    self.echo_close(code, now);
                    return Next::IDLE;
                }
                Read::Violation(violation) if violation.resumable() => {
                    self.conn.handle_oversized();
                }
                Read::Violation(violation) => {
                    tracing::debug!(conn = %self.conn.id(), reason = violation.reason, "protocol violation");
                    self.conn.close(CloseCode(violation.code), violation.reason);
                }
                Read::Eof => {
                    tracing::debug!(conn = %self.conn.id(), "stream ended without a close frame");
                    return self.stream_ended();
                }
                Read::Failed(err) => {
                    tracing::debug!(conn = %self.conn.id(), %err, "stream failed");
                    return self.stream_ended();
                }
            }
            self.carry_out(cx, now);
        }
        Next::YIELD
    }

    /// The peer sent its close: echo its code (RFC 6455 §5.5.1) and finish.
    /// The peer's stream ended without a close frame (1006): the task is over.
    fn stream_ended(&mut self) -> Next {
        self.shared
            .metrics
            .connection_closed(CloseCode::ABNORMAL, ClosedBy::Peer);
        self.leave_router();
        self.stage = Stage::Done;
        Next::IDLE
    }

    fn echo_close(&mut self, code: Option<u16>, now: Instant) {
        let echo = code.unwrap_or(CloseCode::NORMAL.0);
        let got = code.map_or(CloseCode::NO_STATUS, CloseCode);
        self.shared.metrics.connection_closed(got, ClosedBy::Peer);
        // Whatever was queued goes first; the echo is the last frame.
        self.transport.queue_close(CloseCode(echo), "");
        self.leave_router();
        self.stage = Stage::Echoing {
            deadline: now + self.shared.transport.close_grace,
        };
    }
}
