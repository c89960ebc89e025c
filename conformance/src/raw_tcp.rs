//! A WebSocket peer written byte by byte over TCP, for what a WebSocket
//! library will not send: malformed frames, frames split across writes,
//! bad handshakes, a request and its first frame in one write, pings from a
//! peer that never reads. It also tells a clean end of the stream (FIN)
//! from a reset, which is how a lingering close is seen from outside.
//!
//! async-net, so it runs on every executor. Every wait is bounded
//! ([`soon`]).
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) {
//! use conformance::raw_tcp::{frame, RawPeer, TEXT};
//!
//! let mut peer = RawPeer::upgrade(addr, "/").await;
//! peer.send(&frame(true, TEXT, br#"{"id":"1","type":"invoke","function":"echo","data":[1]}"#)).await;
//! let reply = peer.read_frame().await.unwrap();
//! assert_eq!(reply.payload, br#"{"id":"1","data":1}"#);
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use async_net::TcpStream;
use futures_util::{AsyncReadExt, AsyncWriteExt};

use serde_json::{json, Value};

use crate::adapter::{soon, within};

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
/// Text frame.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
/// Close frame.
pub const CLOSE: u8 = 0x8;
/// Ping frame.
pub const PING: u8 = 0x9;
/// Pong frame.
pub const PONG: u8 = 0xA;

/// The masking key every frame from this peer uses.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame, masked as RFC 6455 requires.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, true, payload)
}

/// A client frame with chosen reserved bits (`rsv` in 0..8) and masking.
pub fn frame_with(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0F)];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close frame's payload: code and reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The opening handshake request for `path` on `addr`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// Its opcode.
    pub opcode: u8,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// A close frame's code and reason.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

/// How the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server shut its side cleanly (FIN).
    Eof,
    /// The connection was reset (or failed otherwise).
    Reset(String),
    /// Nothing came within the time allowed.
    Timeout,
}

/// A raw peer. See the [module docs](self).
#[derive(Debug)]
pub struct RawPeer {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    /// A TCP connection, no handshake.
    pub async fn connect(addr: SocketAddr) -> RawPeer {
        let tcp = soon("tcp connect", TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawPeer {
            tcp,
            buf: Vec::new(),
        }
    }

    /// A TCP connection whose receive buffer is `window` bytes: once the
    /// peer stops reading, the server can write little more than that.
    pub async fn connect_with_window(addr: SocketAddr, window: usize) -> RawPeer {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .and_then(|socket| {
            socket.set_recv_buffer_size(window)?;
            // Loopback: the blocking connect completes at once.
            socket.connect(&addr.into())?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let std: std::net::TcpStream = socket.into();
        let tcp = TcpStream::try_from(std).unwrap_or_else(|e| panic!("register socket: {e}"));
        RawPeer {
            tcp,
            buf: Vec::new(),
        }
    }

    /// [`RawPeer::connect_with_window`], then the WebSocket upgrade on `path`.
    pub async fn upgrade_with_window(addr: SocketAddr, path: &str, window: usize) -> RawPeer {
        let mut peer = RawPeer::connect_with_window(addr, window).await;
        peer.send(upgrade_request(addr, path).as_bytes()).await;
        let head = peer.read_http_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        peer
    }

    /// A TCP connection upgraded to WebSocket on `path`.
    ///
    /// # Panics
    /// If the answer is not `101`.
    pub async fn upgrade(addr: SocketAddr, path: &str) -> RawPeer {
        RawPeer::try_upgrade(addr, path)
            .await
            .unwrap_or_else(|head| panic!("not upgraded: {head}"))
    }

    /// A TCP connection upgraded to WebSocket on `path`, or the response
    /// head when the server refused.
    pub async fn try_upgrade(addr: SocketAddr, path: &str) -> Result<RawPeer, String> {
        let mut peer = RawPeer::connect(addr).await;
        peer.send(upgrade_request(addr, path).as_bytes()).await;
        let head = peer.read_http_head().await;
        if head.starts_with("HTTP/1.1 101") {
            Ok(peer)
        } else {
            Err(head)
        }
    }

    /// Writes these bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        soon("a write", self.tcp.write_all(bytes))
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// Writes, ignoring a failure (the server may be closing already).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// The socket, to set options or shut a side down.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Reads an HTTP response head (up to the blank line); what follows
    /// stays buffered for [`RawPeer::read_frame`].
    pub async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            match self.fill(Duration::from_secs(5)).await {
                Ok(0) | Err(_) => {
                    return format!(
                        "<no response head: {:?}>",
                        String::from_utf8_lossy(&self.buf)
                    )
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads everything until the stream ends; returns it as text and how it ended.
    pub async fn read_to_end(&mut self) -> (String, End) {
        let end = loop {
            match self.fill(Duration::from_secs(5)).await {
                Ok(0) => break End::Eof,
                Ok(_) => {}
                Err(end) => break end,
            }
        };
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        (text, end)
    }

    /// The next server frame, or how the stream ended.
    pub async fn read_frame(&mut self) -> Result<ServerFrame, End> {
        self.read_frame_within(Duration::from_secs(5)).await
    }

    /// The next server frame within `limit`.
    pub async fn read_frame_within(&mut self, limit: Duration) -> Result<ServerFrame, End> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            match self.fill(limit).await {
                Ok(0) => return Err(End::Eof),
                Ok(_) => {}
                Err(end) => return Err(end),
            }
        }
    }

    /// Reads frames until a close frame; returns its code and reason, and
    /// how the stream ended after it (read within `after` once the close
    /// arrived, having answered it with a close of the same code).
    ///
    /// # Panics
    /// If no close frame comes within 5 s (after at most `max_frames` others).
    pub async fn expect_close(&mut self, max_frames: usize) -> (u16, String, End) {
        for _ in 0..=max_frames {
            match self.read_frame().await {
                Ok(frame) if frame.opcode == CLOSE => {
                    let (code, reason) = frame.close().unwrap_or((1005, String::new()));
                    let _ = self
                        .try_send(&self::frame(true, CLOSE, &close_payload(code, "")))
                        .await;
                    let end = self.end_within(Duration::from_secs(5)).await;
                    return (code, reason, end);
                }
                Ok(_) => continue,
                Err(end) => panic!("no close frame: the stream ended ({end:?})"),
            }
        }
        panic!("no close frame within {max_frames} frames");
    }

    /// Discards what comes until the stream ends, at most `limit`.
    pub async fn end_within(&mut self, limit: Duration) -> End {
        loop {
            self.buf.clear();
            match self.fill(limit).await {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(end) => return end,
            }
        }
    }

    async fn fill(&mut self, limit: Duration) -> Result<usize, End> {
        // On the heap: a test's futures live on its thread's stack.
        let mut chunk = vec![0u8; 16 * 1024];
        let read = self.tcp.read(&mut chunk);
        let Some(result) = crate::adapter::timeout_opt(limit, read).await else {
            return Err(End::Timeout);
        };
        match result {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(err) => Err(End::Reset(err.to_string())),
        }
    }
}

/// Parses one unmasked server frame at the front of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    let (len, at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(be) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((
        ServerFrame {
            opcode: b0 & 0x0F,
            payload,
        },
        at + len,
    ))
}

/// A JSON request as one masked text frame.
pub fn request(request: &Value) -> Vec<u8> {
    frame(true, TEXT, request.to_string().as_bytes())
}

/// What a peer read next (pings and pongs skipped); shown in failures.
#[derive(Debug)]
pub enum Got {
    /// A text frame, as JSON.
    Json(Value),
    /// A close frame: its code and reason.
    Close(u16, String),
    /// Nothing more: how the stream ended, or `Timeout`.
    Ended(End),
}

/// The next text frame (as JSON) or close; `Ended(Timeout)` when nothing
/// arrived for `quiet`.
///
/// # Panics
/// On a text frame that is not JSON (the server only sends JSON).
pub async fn next(peer: &mut RawPeer, quiet: Duration) -> Got {
    loop {
        match peer.read_frame_within(quiet).await {
            Ok(f) if f.opcode == CLOSE => {
                let (code, reason) = f.close().unwrap_or((1005, String::new()));
                return Got::Close(code, reason);
            }
            Ok(f) if f.opcode == TEXT => {
                return Got::Json(serde_json::from_slice(&f.payload).expect("a JSON frame"))
            }
            Ok(_) => continue,
            Err(end) => return Got::Ended(end),
        }
    }
}

/// The reply to `id`, skipping events.
///
/// # Panics
/// When anything else arrives, or nothing within `limit`.
pub async fn reply_to(peer: &mut RawPeer, id: &str, limit: Duration) -> Value {
    within(&format!("the reply to {id:?}"), limit, async {
        loop {
            match next(peer, limit).await {
                Got::Json(v) if v.get("event").is_some() => continue,
                Got::Json(v) if v["id"] == json!(id) => return v,
                Got::Ended(End::Timeout) => panic!("no reply to {id:?} within {limit:?}"),
                got => panic!("waiting for the reply to {id:?}, got {got:?}"),
            }
        }
    })
    .await
}
