//! A server WebSocket over any byte stream ([`futures_io`]): reads decode
//! into [`Message`]s, writes gather in one buffer and go out in as few
//! syscalls as the stream allows.
//!
//! What it holds is bounded: the read buffer holds at most one frame
//! (itself bounded by the decoder's message limit), at most one pong waits
//! (a newer ping replaces it, RFC 6455 §5.5.3), and the write buffer holds
//! what its owner queued — the owner checks [`WebSocketIo::unwritten`]
//! against its own bound. An idle connection holds no buffer at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};

use super::codec::{self, Decoder, Message, Violation};

/// Bytes read from the stream per syscall, at most.
const READ_CHUNK: usize = 32 * 1024;

thread_local! {
    /// Where every connection on this thread reads into before keeping only
    /// what it has not decoded: no read buffer per idle connection, and no
    /// zeroing per read.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}
/// A buffer larger than this is given back once it is empty, so a burst
/// does not pin memory on an idle connection.
const KEEP_CAPACITY: usize = 4 * 1024;

/// What a read produced.
#[derive(Debug)]
pub(crate) enum Read {
    /// A complete message.
    Message(Message),
    /// The peer broke the protocol; close with this code.
    Violation(Violation),
    /// The peer closed the stream (EOF) without a close frame.
    Eof,
    /// The stream failed.
    Failed(io::Error),
}

/// How a lingering read after our close frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lingered {
    /// The peer answered with its close frame.
    CloseAnswered,
    /// The peer closed the stream (or it failed).
    StreamEnded,
    /// More than the allowed bytes arrived first.
    TooMuch,
}

/// A server-side WebSocket on a byte stream. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct WebSocketIo<IO> {
    io: IO,
    decoder: Decoder,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    written: usize,
    pong: Option<Bytes>,
    eof: bool,
    /// Written since the last flush.
    dirty: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WebSocketIo<IO> {
    /// A WebSocket on `io`, whose first bytes (read with the handshake) are
    /// `already_read`; messages over `max_message` bytes are refused (1009).
    pub(crate) fn new(io: IO, already_read: &[u8], max_message: usize) -> Self {
        WebSocketIo {
            io,
            decoder: Decoder::new(max_message),
            read_buf: BytesMut::from(already_read),
            write_buf: Vec::new(),
            written: 0,
            pong: None,
            eof: false,
            dirty: false,
        }
    }

    /// Changes the largest message accepted (1009 past it).
    pub(crate) fn set_max_message(&mut self, max_message: usize) {
        self.decoder.set_max_message(max_message);
    }

    /// Reads the next message (or what ended the stream).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(message)) => {
                    self.release_read_buf();
                    return Poll::Ready(Read::Message(message));
                }
                Err(violation) => return Poll::Ready(Read::Violation(violation)),
                Ok(None) => {}
            }
            if self.eof {
                return Poll::Ready(Read::Eof);
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    return Poll::Ready(Read::Eof);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Read::Failed(err)),
                Poll::Pending => {
                    self.release_read_buf();
                    return Poll::Pending;
                }
            }
        }
    }

    /// After our close frame: reads and discards, up to `budget` bytes, until
    /// the peer's close frame or the end of the stream (a lingering close:
    /// the peer reads our close before the socket goes, instead of a reset).
    /// Frames after a fault that left the stream unframed are skipped raw.
    pub(crate) fn poll_linger(
        &mut self,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Poll<Lingered> {
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(Message::Close(..))) => return Poll::Ready(Lingered::CloseAnswered),
                Ok(Some(_)) | Err(_) => continue,
                Ok(None) => {}
            }
            if self.eof {
                return Poll::Ready(Lingered::StreamEnded);
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.eof = true;
                    return Poll::Ready(Lingered::StreamEnded);
                }
                Poll::Ready(Ok(n)) => {
                    if n > *budget {
                        return Poll::Ready(Lingered::TooMuch);
                    }
                    *budget -= n;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads one chunk from the stream into the read buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            // A stream's poll_read never calls back into a connection, so
            // the scratch buffer cannot be borrowed twice.
            let Ok(mut chunk) = scratch.try_borrow_mut() else {
                let mut chunk = vec![0u8; READ_CHUNK];
                return self.fill_from(cx, &mut chunk);
            };
            self.fill_from(cx, &mut chunk)
        })
    }

    fn fill_from(&mut self, cx: &mut Context<'_>, chunk: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = match Pin::new(&mut self.io).poll_read(cx, chunk) {
            Poll::Ready(Ok(n)) => n.min(chunk.len()),
            other => return other,
        };
        self.read_buf.extend_from_slice(&chunk[..n]);
        Poll::Ready(Ok(n))
    }

    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > KEEP_CAPACITY {
            self.read_buf = BytesMut::new();
        }
    }

    /// Queues a text frame carrying `payload` (UTF-8).
    pub(crate) fn queue_text(&mut self, payload: &[u8]) {
        codec::encode_text(&mut self.write_buf, payload);
    }

    /// Queues a ping.
    pub(crate) fn queue_ping(&mut self) {
        codec::encode_ping(&mut self.write_buf);
    }

    /// Queues a close frame; nothing should be queued after it.
    pub(crate) fn queue_close(&mut self, code: u16, reason: &str) {
        if let Some(payload) = self.pong.take() {
            // The pong would come after the close: leave it out.
            drop(payload);
        }
        codec::encode_close(&mut self.write_buf, code, reason);
    }

    /// The pong for the latest ping; replaces one not yet sent.
    pub(crate) fn set_pong(&mut self, payload: Bytes) {
        self.pong = Some(payload);
    }

    /// Bytes queued and not yet written (pong included).
    pub(crate) fn unwritten(&self) -> usize {
        self.write_buf.len() - self.written + self.pong.as_ref().map_or(0, |p| p.len() + 2)
    }

    /// Writes what is queued; `Ready(Ok)` once all of it is written and flushed.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.written == self.write_buf.len() {
                // Between frames: the pending pong may go now.
                match self.pong.take() {
                    Some(payload) => {
                        self.write_buf.clear();
                        self.written = 0;
                        codec::encode_pong(&mut self.write_buf, &payload);
                    }
                    None => break,
                }
            }
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.write_buf[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            };
            self.written += n;
            self.dirty = true;
        }
        if self.write_buf.capacity() > KEEP_CAPACITY {
            self.write_buf = Vec::new();
        } else {
            self.write_buf.clear();
        }
        self.written = 0;
        if !self.dirty {
            return Poll::Ready(Ok(()));
        }
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if flushed.is_ready() {
            self.dirty = false;
        }
        flushed
    }

    /// Shuts the write side (TCP FIN; TLS close_notify first).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
