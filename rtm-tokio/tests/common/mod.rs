//! Helpers shared by the integration tests: loud timeouts and a raw
//! WebSocket peer (tokio-tungstenite) for what our Client cannot show.
#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tungstenite::Message;

/// A raw client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long anything that should happen promptly may take.
pub const SOON: Duration = Duration::from_secs(5);

/// Awaits `future` at most `limit`; panics naming `what` when it does not complete.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// [`within`] the default [`SOON`].
pub async fn soon<F: Future>(what: &str, future: F) -> F::Output {
    within(what, SOON, future).await
}

/// Receives the next value of a test channel, loudly.
pub async fn recv<T>(what: &str, rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    soon(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// Opens a raw WebSocket.
pub async fn raw_connect(url: &str) -> Ws {
    let (ws, _) = soon("websocket handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    ws
}

/// Sends one request frame.
pub async fn send_json(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Sends an invoke.
pub async fn invoke(ws: &mut Ws, id: &str, function: &str, data: Value) {
    send_json(
        ws,
        json!({"id": id, "type": "invoke", "function": function, "data": data}),
    )
    .await;
}

/// The next message that is not a ping or pong; `None` when the socket ended
/// (with or without an error).
pub async fn next_message(ws: &mut Ws) -> Option<Message> {
    soon("a message", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
}

/// The next text frame, parsed.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The close frame that must come next: its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    match next_message(ws).await {
        Some(Message::Close(Some(frame))) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Opens a raw WebSocket with small buffers, for tests holding thousands.
pub async fn raw_connect_small(url: &str) -> Ws {
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = soon(
        "websocket handshake",
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    ws
}

/// Opens `count` raw sockets, `batch` handshakes at a time.
pub async fn raw_connect_many(url: &str, count: usize, batch: usize) -> Vec<Ws> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let n = batch.min(count - sockets.len());
        let opened = futures_util::future::join_all((0..n).map(|_| raw_connect_small(url))).await;
        sockets.extend(opened);
    }
    sockets
}

/// Waits until `rx` delivered `count` values, loudly.
pub async fn recv_n<T>(what: &str, count: usize, rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) {
    soon(what, async {
        for _ in 0..count {
            rx.recv()
                .await
                .unwrap_or_else(|| panic!("channel closed waiting for {what}"));
        }
    })
    .await;
}
