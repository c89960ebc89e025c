//! In-memory sockets: [`duplex`] makes two connected [`PipeEnd`]s, each
//! `futures_io::AsyncRead + AsyncWrite + Send + Unpin` (so the server's end
//! boxes into an `rtm_driver::rt::BoxIo`).
//!
//! Each direction is one [`Channel`]: a byte buffer with a capacity, the
//! socket buffer of the simulation. A write takes what fits and returns
//! `Pending` (keeping the writer's waker) only when the buffer is full; a
//! read takes what is there, wakes the writer, and returns `Pending`
//! (keeping the reader's waker) only when it is empty. Closing (or
//! dropping) an end is a FIN: its peer reads what is left, then EOF.
//! Writing towards an end that was dropped fails with `BrokenPipe`.
//!
//! [`PipeStats`] reads one direction's counters from outside: bytes
//! written, read, buffered, and whether the writer closed.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_io::{AsyncRead, AsyncWrite};

/// One direction of a pipe; see the [module docs](self).
#[derive(Debug)]
struct Channel {
    buf: VecDeque<u8>,
    capacity: usize,
    /// The reader waits for bytes (or EOF).
    reader: Option<Waker>,
    /// The writer waits for room.
    writer: Option<Waker>,
    /// The writing end closed or was dropped: EOF once drained.
    write_closed: bool,
    /// The reading end was dropped: writes fail.
    read_closed: bool,
    written: u64,
    read: u64,
}

type Shared = Arc<Mutex<Channel>>;

fn lock(channel: &Shared) -> MutexGuard<'_, Channel> {
    // Nothing panics while holding it.
    channel.lock().unwrap_or_else(|e| e.into_inner())
}

fn channel(capacity: usize) -> Shared {
    Arc::new(Mutex::new(Channel {
        buf: VecDeque::with_capacity(capacity),
        capacity: capacity.max(1),
        reader: None,
        writer: None,
        write_closed: false,
        read_closed: false,
        written: 0,
        read: 0,
    }))
}

/// One end of an in-memory socket.
#[derive(Debug)]
pub(crate) struct PipeEnd {
    /// What this end reads.
    incoming: Shared,
    /// What this end writes.
    outgoing: Shared,
}

/// A connected pair: `(client, server)`. The client→server direction holds
/// `to_server` bytes at most, the server→client direction `to_client`.
/// The stats are the server→client direction's (what the server wrote).
pub(crate) fn duplex(to_server: usize, to_client: usize) -> (PipeEnd, PipeEnd, PipeStats) {
    let up = channel(to_server);
    let down = channel(to_client);
    let stats = PipeStats(down.clone());
    let client = PipeEnd {
        incoming: down.clone(),
        outgoing: up.clone(),
    };
    let server = PipeEnd {
        incoming: up,
        outgoing: down,
    };
    (client, server, stats)
}

/// Counters of one direction, readable from outside its ends.
#[derive(Debug, Clone)]
pub(crate) struct PipeStats(Shared);

impl PipeStats {
    /// Bytes written into this direction so far.
    pub(crate) fn written(&self) -> u64 {
        lock(&self.0).written
    }
    /// Bytes read out of it so far.
    pub(crate) fn read(&self) -> u64 {
        lock(&self.0).read
    }
    /// Bytes waiting in it.
    pub(crate) fn buffered(&self) -> usize {
        lock(&self.0).buf.len()
    }
    /// Its capacity.
    pub(crate) fn capacity(&self) -> usize {
        lock(&self.0).capacity
    }
    /// The writing end closed (or was dropped).
    pub(crate) fn write_closed(&self) -> bool {
        lock(&self.0).write_closed
    }
}

impl AsyncRead for PipeEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut channel = lock(&self.incoming);
        if channel.buf.is_empty() {
            if channel.write_closed || out.is_empty() {
                return Poll::Ready(Ok(0));
            }
            channel.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.len().min(channel.buf.len());
        let (front, back) = channel.buf.as_slices();
        let first = n.min(front.len());
        out[..first].copy_from_slice(&front[..first]);
        out[first..n].copy_from_slice(&back[..n - first]);
        channel.buf.drain(..n);
        channel.read += n as u64;
        let writer = channel.writer.take();
        drop(channel);
        if let Some(writer) = writer {
            writer.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut channel = lock(&self.outgoing);
        if channel.read_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if channel.write_closed {
            return Poll::Ready(Err(io::Error::other("write after close")));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = channel.capacity - channel.buf.len();
        if room == 0 {
            channel.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        channel.buf.extend(&data[..n]);
        channel.written += n as u64;
        let reader = channel.reader.take();
        drop(channel);
        if let Some(reader) = reader {
            reader.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        close_writing(&self.outgoing);
        Poll::Ready(Ok(()))
    }
}

/// A FIN on `channel`: its reader gets EOF once it has read what is left.
fn close_writing(channel: &Shared) {
    let reader = {
        let mut channel = lock(channel);
        channel.write_closed = true;
        channel.reader.take()
    };
    if let Some(reader) = reader {
        reader.wake();
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        close_writing(&self.outgoing);
        let writer = {
            let mut channel = lock(&self.incoming);
            channel.read_closed = true;
            channel.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}
