//! What a connection's task reads from and writes to: the server's own
//! WebSocket on a byte stream ([`WebSocketIo`]), or the two halves of a
//! socket some other library upgraded (axum; [`Incoming`] / [`Outgoing`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{Sink, Stream};
use rtm_core::CloseCode;

use crate::messages::{Incoming, Outgoing};
use crate::websocket::codec::{Message, Violation};
use crate::websocket::stream::{Lingered, Read, WebSocketIo};

/// One connection's socket, as its task uses it.
pub(crate) trait Socket: Send + Unpin {
    /// The next message, or what ended the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read>;
    /// Queues a text frame.
    fn queue_text(&mut self, frame: &Bytes);
    /// Queues a ping.
    fn queue_ping(&mut self);
    /// Queues a close frame (the last thing queued).
    fn queue_close(&mut self, code: CloseCode, reason: &str);
    /// The pong for the latest ping (replacing one not yet sent).
    fn set_pong(&mut self, payload: Bytes);
    /// Bytes queued, not yet written.
    fn unwritten(&self) -> usize;
    /// Writes what is queued.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// After our close: reads until the peer's close or the end of the stream.
    fn poll_linger(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<Lingered>;
    /// Shuts the write side.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// The largest message accepted from now on (where the transport reads
    /// frames itself; another library keeps the limit it was given).
    fn set_max_message(&mut self, _max_message: usize) {}
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Socket for WebSocketIo<IO> {
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        WebSocketIo::poll_read(self, cx)
    }
    fn queue_text(&mut self, frame: &Bytes) {
        WebSocketIo::queue_text(self, frame)
    }
    fn queue_ping(&mut self) {
        WebSocketIo::queue_ping(self)
    }
    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        WebSocketIo::queue_close(self, code.0, reason)
    }
    fn set_pong(&mut self, payload: Bytes) {
        WebSocketIo::set_pong(self, payload)
    }
    fn unwritten(&self) -> usize {
        WebSocketIo::unwritten(self)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        WebSocketIo::poll_flush(self, cx)
    }
    fn poll_linger(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<Lingered> {
        WebSocketIo::poll_linger(self, cx, budget)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        WebSocketIo::poll_shutdown(self, cx)
    }
    fn set_max_message(&mut self, max_message: usize) {
        WebSocketIo::set_max_message(self, max_message)
    }
}

/// A socket upgraded by another WebSocket library, as a stream of
/// [`Incoming`] and a sink of [`Outgoing`]. That library answers pings
/// itself and owns the close handshake.
pub(crate) struct Messages<St, Si> {
    stream: St,
    sink: Si,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    /// Sent since the last flush.
    dirty: bool,
    /// The peer closed: the library has queued its answer; ours would fail.
    peer_closed: bool,
}

impl<St, Si> Messages<St, Si> {
    pub(crate) fn new(stream: St, sink: Si) -> Self {
        Messages {
            stream,
            sink,
            queue: VecDeque::new(),
            queued_bytes: 0,
            dirty: false,
            peer_closed: false,
        }
    }
}

impl<St, Si> Socket for Messages<St, Si>
where
    St: Stream<Item = Incoming> + Unpin + Send,
    Si: Sink<Outgoing> + Unpin + Send,
{
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        let Poll::Ready(next) = Pin::new(&mut self.stream).poll_next(cx) else {
            return Poll::Pending;
        };
        Poll::Ready(match next {
            Some(Incoming::Text(text)) => Read::Message(Message::Text(text)),
            Some(Incoming::Binary) => Read::Message(Message::Binary),
            Some(Incoming::Activity) => Read::Message(Message::Pong),
            Some(Incoming::TooLarge) => Read::Violation(Violation::TOO_BIG),
            Some(Incoming::Closed(code, reason)) => {
                // WebSocket libraries answer a close themselves, on their next
                // flush: flush, do not send a second close.
                self.peer_closed = true;
                self.dirty = true;
                Read::Message(Message::Close(code.map(|c| c.0), reason))
            }
            Some(Incoming::Error(err)) => Read::Failed(io::Error::other(err)),
            None => Read::Eof,
        })
    }

    fn queue_text(&mut self, frame: &Bytes) {
        self.queued_bytes += frame.len();
        self.queue.push_back(Outgoing::Text(frame.clone()));
    }

    fn queue_ping(&mut self) {
        self.queue.push_back(Outgoing::Ping);
    }

    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        if !self.peer_closed {
            self.queue
                .push_back(Outgoing::Close(code, reason.to_owned()));
        }
    }

    fn set_pong(&mut self, _payload: Bytes) {}

    fn unwritten(&self) -> usize {
        self.queued_bytes
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let failed = |_| io::Error::other("the socket refused a write");
        while !self.queue.is_empty() {
            match Pin::new(&mut self.sink).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                Poll::Pending => return Poll::Pending,
            }
            let Some(message) = self.queue.pop_front() else {
                break;
            };
            if let Outgoing::Text(frame) = &message {
                self.queued_bytes -= frame.len();
            }
            if let Err(err) = Pin::new(&mut self.sink).start_send(message) {
                return Poll::Ready(Err(failed(err)));
            }
            self.dirty = true;
        }
        if !self.dirty {
            return Poll::Ready(Ok(()));
        }
        let flushed = Pin::new(&mut self.sink).poll_flush(cx).map_err(failed);
        if flushed.is_ready() {
            self.dirty = false;
        }
        flushed
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>, _budget: &mut usize) -> Poll<Lingered> {
        loop {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Incoming::Closed(..))) => {
                    return Poll::Ready(Lingered::CloseAnswered)
                }
                Poll::Ready(Some(Incoming::Error(_)) | None) => {
                    return Poll::Ready(Lingered::StreamEnded)
                }
                Poll::Ready(Some(_)) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sink)
            .poll_close(cx)
            .map_err(|_| io::Error::other("the socket refused to close"))
    }
}
