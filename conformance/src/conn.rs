//! A raw WebSocket client that speaks the RTM wire protocol by hand, for tests
//! that must see the exact frames (no client library in between).
//!
//! Every wait is bounded: a reply or close that does not come within
//! [`REPLY_TIMEOUT`] is an error, and [`RawConn::expect_nothing`] listens for
//! [`QUIET`]. Frames that arrive while a method waits for something else
//! (events while waiting for a reply, replies while waiting for an event) are
//! kept, in order, for the next read.
//!
//! ```no_run
//! # async fn demo(url: &str) -> Result<(), String> {
//! use conformance::RawConn;
//! use serde_json::json;
//! let mut conn = RawConn::connect(url).await?;
//! assert_eq!(conn.call_ok("echo", json!(["hi"])).await?, json!("hi"));
//! conn.expect_nothing().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtm_core::testkit::vectors::Received;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a reply, event or close may take before the wait fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long "nothing arrives" is listened for.
pub const QUIET: Duration = Duration::from_millis(200);

/// How long connecting (TCP + WebSocket handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The close code reported when the connection ended without a close frame.
pub const ABNORMAL_CLOSE: u16 = 1006;

/// One client connection, frames as JSON.
pub struct RawConn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    kept: VecDeque<Value>,
    next_id: u64,
    closed: Option<u16>,
}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConn").finish_non_exhaustive()
    }
}

impl RawConn {
    /// Connects to `url` (`ws://…`).
    pub async fn connect(url: &str) -> Result<RawConn, String> {
        let connecting = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("connecting to {url} took over {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(RawConn {
            ws,
            kept: VecDeque::new(),
            next_id: 0,
            closed: None,
        })
    }

    /// Connects and authenticates as `user` (token `"user:<user>"`); fails unless accepted.
    pub async fn connect_as(url: &str, user: &str) -> Result<RawConn, String> {
        let mut conn = RawConn::connect(url).await?;
        let reply = conn.auth(&format!("user:{user}")).await?;
        if reply.get("data") != Some(&json!({ "user": user })) {
            return Err(format!("auth as {user} was not accepted: {reply}"));
        }
        Ok(conn)
    }

    /// Sends a text frame exactly as given.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: &Value) -> Result<(), String> {
        self.send_text(&frame.to_string()).await
    }

    /// The next frame or close from the socket (ignoring kept frames), waiting at most `wait`.
    ///
    /// A connection that ended without a close frame reads as
    /// [`ABNORMAL_CLOSE`]; once closed, every later read repeats the code.
    pub async fn recv(&mut self, wait: Duration) -> Received {
        if let Some(code) = self.closed {
            return Received::Close(code);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Received::Nothing,
                Ok(next) => next,
            };
            let code = match next {
                Some(Ok(Message::Text(text))) => return Received::Frame(text.as_str().to_owned()),
                Some(Ok(Message::Binary(bytes))) => {
                    return Received::Frame(String::from_utf8_lossy(&bytes).into_owned())
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => frame.map_or(1005, |f| u16::from(f.code)),
                Some(Err(_)) | None => ABNORMAL_CLOSE,
            };
            self.closed = Some(code);
            return Received::Close(code);
        }
    }

    /// The next frame (kept ones first) as JSON; a close or silence is an error.
    pub async fn next_frame(&mut self) -> Result<Value, String> {
        if let Some(frame) = self.kept.pop_front() {
            return Ok(frame);
        }
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> Result<Value, String> {
        match self.recv(REPLY_TIMEOUT).await {
            Received::Frame(text) => {
                serde_json::from_str(&text).map_err(|e| format!("frame is not JSON ({e}): {text}"))
            }
            Received::Close(code) => Err(format!("expected a frame, the connection closed {code}")),
            Received::Nothing => Err(format!("no frame within {REPLY_TIMEOUT:?}")),
        }
    }

    /// The first frame (kept ones first) that `wanted` accepts; others are kept, in order.
    async fn next_matching(
        &mut self,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(pos) = self.kept.iter().position(&wanted) {
            return Ok(self.kept.remove(pos).unwrap_or_default());
        }
        loop {
            let frame = self
                .read_frame()
                .await
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if wanted(&frame) {
                return Ok(frame);
            }
            self.kept.push_back(frame);
        }
    }

    /// Sends an invoke of `function` with `data` (a JSON array) under a fresh id; returns the id.
    pub async fn invoke(&mut self, function: &str, data: Value) -> Result<String, String> {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        self.send_json(&json!({"id": id, "type": "invoke", "function": function, "data": data}))
            .await?;
        Ok(id)
    }

    /// The reply to request `id` (events and other replies meanwhile are kept).
    pub async fn reply_to(&mut self, id: &str) -> Result<Value, String> {
        self.next_matching(&format!("the reply to {id:?}"), |f| {
            is_reply(f) && f.get("id").and_then(Value::as_str) == Some(id)
        })
        .await
    }

    /// Invokes `function` and returns its whole reply frame.
    pub async fn call(&mut self, function: &str, data: Value) -> Result<Value, String> {
        let id = self.invoke(function, data).await?;
        self.reply_to(&id).await
    }

    /// Invokes `function` and returns the reply's `data`; an error reply is an error.
    pub async fn call_ok(&mut self, function: &str, data: Value) -> Result<Value, String> {
        let reply = self.call(function, data).await?;
        match error_of(&reply) {
            Some(error) => Err(format!("{function} answered an error: {error}")),
            None => Ok(reply.get("data").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Invokes `function` and returns the reply's `error` object; a success is an error.
    pub async fn call_err(&mut self, function: &str, data: Value) -> Result<Value, String> {
        let reply = self.call(function, data).await?;
        error_of(&reply)
            .cloned()
            .ok_or_else(|| format!("{function} should have failed, got {reply}"))
    }

    /// Sends `auth` with `[token]` and returns the reply frame.
    pub async fn auth(&mut self, token: &str) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        self.send_json(&json!({"id": id, "type": "auth", "data": [token]}))
            .await?;
        self.reply_to(&id).await
    }

    /// Sends `subscribe` (or `unsubscribe` with `subscribe = false`) and returns the reply frame.
    pub async fn subscription(
        &mut self,
        subscribe: bool,
        event: &str,
        tags: &[&str],
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        let kind = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        self.send_json(&json!({"id": id, "type": kind, "event": event, "tags": tags}))
            .await?;
        self.reply_to(&id).await
    }

    /// Subscribes and fails unless the server answered `true`.
    pub async fn subscribe(&mut self, event: &str, tags: &[&str]) -> Result<(), String> {
        let reply = self.subscription(true, event, tags).await?;
        match reply.get("data") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(format!("subscribe {event} {tags:?} was refused: {reply}")),
        }
    }

    /// The next event frame (`{"event": …, "data": […]}`); replies meanwhile are kept.
    pub async fn next_event(&mut self) -> Result<Value, String> {
        self.next_matching("an event", |f| f.get("event").is_some())
            .await
    }

    /// Fails if any frame or close is kept or arrives within [`QUIET`].
    pub async fn expect_nothing(&mut self) -> Result<(), String> {
        if let Some(frame) = self.kept.front() {
            return Err(format!("expected nothing, got {frame}"));
        }
        match self.recv(QUIET).await {
            Received::Nothing => Ok(()),
            got => Err(format!("expected nothing, got {got:?}")),
        }
    }

    /// Waits for the server to close the connection and returns the close code;
    /// a frame first is an error.
    pub async fn expect_close(&mut self) -> Result<u16, String> {
        if let Some(frame) = self.kept.front() {
            return Err(format!("expected a close, got {frame}"));
        }
        match self.recv(REPLY_TIMEOUT).await {
            Received::Close(code) => Ok(code),
            got => Err(format!("expected a close, got {got:?}")),
        }
    }

    /// Closes the connection (normal closure), waiting briefly for the server's answer.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(QUIET, self.ws.close(None)).await;
    }
}

/// Whether `frame` is a reply (has an `id`, is not an event).
pub fn is_reply(frame: &Value) -> bool {
    frame.get("id").is_some() && frame.get("event").is_none()
}

pub use rtm_core::testkit::vectors::error_of;
