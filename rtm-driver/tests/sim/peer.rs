//! Peers: WebSocket clients written byte by byte, each a simulation task
//! on the client end of a [`pipe`](super::pipe), the server end going to
//! the real `ServerHandle::accept` (handshake, then the connection's task).
//!
//! A peer writes the HTTP upgrade request, reads the `101` answer, sends
//! its requests (masked text frames), then reads the server's frames by its
//! [`ReadPolicy`]: never, `bytes` every `every` of virtual time, or as soon
//! as anything is readable. It answers pings with pongs and a close with
//! its close (as a browser does). [`PeerLog`] records, with virtual
//! times, every event frame and reply, the pings, the close code and
//! reason, and the end of the stream.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_io::AsyncRead;
use futures_util::{AsyncReadExt, AsyncWriteExt};
use rtm_driver::rt::RuntimeRef;
use rtm_driver::ServerHandle;

use super::executor::{Sim, SimClock};
use super::pipe::{duplex, PipeEnd, PipeStats};

/// Opcodes (RFC 6455 §5.2).
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The key every peer's handshake sends, and the accept value it expects.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The masking key of every frame a peer sends.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Bytes a peer reads per read call, at most.
const READ_BUF: usize = 64 * 1024;

/// How a peer reads after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPolicy {
    /// Never reads again (its socket buffer fills and stays full).
    Never,
    /// Every `every`, reads what is buffered, up to `bytes`.
    Bursts { every: Duration, bytes: usize },
    /// Reads whenever anything is readable.
    Fast,
}

/// What a peer is.
#[derive(Debug, Clone)]
pub(crate) struct PeerSpec {
    pub name: &'static str,
    /// The address the server is told the peer has (distinct per peer: it
    /// is how hooks and emit filters tell peers apart).
    pub addr: SocketAddr,
    pub policy: ReadPolicy,
    /// Capacity of the peer→server direction of its socket.
    pub to_server: usize,
    /// Capacity of the server→peer direction of its socket.
    pub to_client: usize,
    /// Text frames sent right after the handshake.
    pub requests: Vec<String>,
}

/// One event frame as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// Virtual time it was read.
    pub at: Duration,
    /// The first element of its `data`, when it is a number.
    pub seq: Option<u64>,
    /// Its payload's length.
    pub len: usize,
}

/// The server's close frame.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    pub at: Duration,
    pub code: Option<u16>,
    pub reason: String,
}

/// What a peer saw; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct PeerLog {
    /// When the `101` answer was read.
    pub upgraded_at: Option<Duration>,
    /// Length of the `101` answer (the first bytes of the stream).
    pub handshake_bytes: u64,
    /// Every byte read from the socket so far, the handshake's included.
    pub bytes_read: u64,
    /// Event frames (`{"event":…}`), in arrival order.
    pub events: Vec<Arrival>,
    /// Other text frames (replies), with their arrival time.
    pub replies: Vec<(Duration, String)>,
    /// When each ping arrived.
    pub pings: Vec<Duration>,
    pub close: Option<Closed>,
    /// When the server's end of the stream ended (EOF).
    pub eof_at: Option<Duration>,
    /// What went wrong on the peer's side (a failed handshake, a bad frame…).
    pub failure: Option<String>,
}

/// A peer in the simulation: its spec, its log, and its socket's
/// server→peer counters.
#[derive(Clone)]
pub(crate) struct Peer {
    pub spec: PeerSpec,
    log: Arc<Mutex<PeerLog>>,
    /// The server→peer direction of its socket.
    pub socket: PipeStats,
}

impl Peer {
    /// Its log so far.
    pub(crate) fn log(&self) -> MutexGuard<'_, PeerLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server closed it, or its stream ended, or it failed.
    pub(crate) fn finished(&self) -> bool {
        let log = self.log();
        log.close.is_some() || log.eof_at.is_some() || log.failure.is_some()
    }
}

/// Opens `spec`'s socket: its server end goes to `server.accept` and its
/// client end to a peer task, both spawned on `sim`.
pub(crate) fn connect(sim: &Sim, server: &ServerHandle, spec: PeerSpec) -> Peer {
    let (client, server_end, socket) = duplex(spec.to_server, spec.to_client);
    let accepting = server.clone();
    let addr = spec.addr;
    sim.spawn(async move { accepting.accept(Box::new(server_end), addr).await });
    let peer = Peer {
        spec,
        log: Arc::default(),
        socket,
    };
    let task = Task {
        io: client,
        frames: Frames::default(),
        log: peer.log.clone(),
        clock: sim.clock(),
        runtime: sim.runtime(),
        answered_close: false,
    };
    let spec = peer.spec.clone();
    sim.spawn(async move {
        let log = task.log.clone();
        if let Err(failure) = task.run(spec).await {
            log.lock().unwrap_or_else(|e| e.into_inner()).failure = Some(failure);
        }
    });
    peer
}

/// A client frame, masked as RFC 6455 requires.
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The length of a server (unmasked) frame carrying `payload` bytes.
pub(crate) fn server_frame_len(payload: usize) -> usize {
    let header = match payload {
        n if n < 126 => 2,
        n if n <= 0xFFFF => 4,
        _ => 10,
    };
    header + payload
}

/// A frame from the server.
#[derive(Debug)]
enum Frame {
    Text(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<u16>, String),
    Binary,
}

/// Server frames decoded from the bytes read so far.
#[derive(Default)]
struct Frames {
    buf: BytesMut,
}

impl Frames {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if it has all arrived.
    fn next(&mut self) -> Result<Option<Frame>, String> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
        if buf[1] & 0x80 != 0 {
            return Err("the server sent a masked frame".into());
        }
        if !fin {
            return Err("the server sent a fragment (it never fragments)".into());
        }
        let (len, header) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if buf.len() < header + len {
            return Ok(None);
        }
        self.buf.advance(header);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(match opcode {
            TEXT => Frame::Text(payload),
            BINARY => Frame::Binary,
            PING => Frame::Ping(payload),
            PONG => Frame::Pong,
            CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason =
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                Frame::Close(code, reason)
            }
            other => return Err(format!("the server sent opcode {other:#x}")),
        }))
    }
}

/// `data[0]` of an event frame `{"event":…,"data":[<n>,…]}`, if a number.
fn event_seq(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"data\":[")? + "\"data\":[".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A peer's task: its socket end and what it records.
struct Task {
    io: PipeEnd,
    frames: Frames,
    log: Arc<Mutex<PeerLog>>,
    clock: SimClock,
    runtime: RuntimeRef,
    /// Our close went out (after the server's).
    answered_close: bool,
}

impl Task {
    fn log(&self) -> MutexGuard<'_, PeerLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self, spec: PeerSpec) -> Result<(), String> {
        self.handshake().await?;
        for request in &spec.requests {
            self.send(&client_frame(TEXT, request.as_bytes())).await?;
        }
        let mut buf = vec![0u8; READ_BUF];
        match spec.policy {
            ReadPolicy::Never => {
                // Keeps its socket open (the task holds it) and never reads.
                std::future::pending::<()>().await;
            }
            ReadPolicy::Fast => loop {
                let n = self
                    .io
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if !self.received(&buf[..n]).await? {
                    return Ok(());
                }
            },
            ReadPolicy::Bursts { every, bytes } => loop {
                self.runtime.sleep(every).await;
                let mut taken = 0;
                while taken < bytes {
                    let want = (bytes - taken).min(buf.len());
                    let Some(read) = try_read(&mut self.io, &mut buf[..want]).await else {
                        break;
                    };
                    let n = read.map_err(|e| format!("read: {e}"))?;
                    if !self.received(&buf[..n]).await? {
                        return Ok(());
                    }
                    taken += n;
                }
            },
        }
        Ok(())
    }

    /// Upgrade request out, `101` answer in; bytes past the answer are the
    /// first frames.
    async fn handshake(&mut self) -> Result<(), String> {
        let request = format!(
            "GET / HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.send(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| format!("handshake read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the server ended the stream during the handshake: {:?}",
                    String::from_utf8_lossy(&answer)
                ));
            }
            answer.extend_from_slice(&chunk[..n]);
            if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") || !head.contains(ACCEPT) {
            return Err(format!("not upgraded: {head:?}"));
        }
        let now = self.clock.elapsed();
        {
            let mut log = self.log();
            log.upgraded_at = Some(now);
            log.handshake_bytes = end as u64;
            log.bytes_read = end as u64;
        }
        // Frames that came with the answer.
        let rest = answer[end..].to_vec();
        if !rest.is_empty() {
            self.received(&rest).await?;
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Handles `bytes` just read (empty: the end of the stream); `false`
    /// once the stream ended.
    async fn received(&mut self, bytes: &[u8]) -> Result<bool, String> {
        let now = self.clock.elapsed();
        if bytes.is_empty() {
            self.log().eof_at = Some(now);
            return Ok(false);
        }
        self.log().bytes_read += bytes.len() as u64;
        self.frames.push(bytes);
        while let Some(frame) = self.frames.next()? {
            match frame {
                Frame::Text(payload) if payload.starts_with(b"{\"event\":") => {
                    let arrival = Arrival {
                        at: now,
                        seq: event_seq(&payload),
                        len: payload.len(),
                    };
                    self.log().events.push(arrival);
                }
                Frame::Text(payload) => {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    self.log().replies.push((now, text));
                }
                Frame::Ping(payload) => {
                    self.log().pings.push(now);
                    if !self.answered_close {
                        self.send(&client_frame(PONG, &payload)).await?;
                    }
                }
                Frame::Close(code, reason) => {
                    self.log().close = Some(Closed {
                        at: now,
                        code,
                        reason,
                    });
                    if !self.answered_close {
                        self.answered_close = true;
                        let echo = code.unwrap_or(1000).to_be_bytes();
                        // The server may already have shut its reading side.
                        let _ = self.io.write_all(&client_frame(CLOSE, &echo)).await;
                    }
                }
                Frame::Pong | Frame::Binary => {}
            }
        }
        Ok(true)
    }
}

/// One read if bytes (or EOF) are there now; `None` when it would wait.
async fn try_read(io: &mut PipeEnd, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    poll_fn(|cx| match Pin::new(&mut *io).poll_read(cx, buf) {
        Poll::Ready(read) => Poll::Ready(Some(read)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}
