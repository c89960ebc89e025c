//! A raw WebSocket peer for what our Client cannot show: exact frames, close
//! codes, peers that never read, thousands of sockets at once.
//!
//! async-tungstenite over async-net, so it runs on every executor (tokio's
//! too): the same helpers serve every [`Adapter`](crate::Adapter). Every wait
//! is bounded ([`soon`]) and panics naming what it waited for: these are test
//! helpers.
//!
//! ```no_run
//! # async fn demo(url: &str) {
//! use conformance::raw_ws::{invoke, next_json, raw_connect};
//! use serde_json::json;
//!
//! let mut ws = raw_connect(url).await;
//! invoke(&mut ws, "1", "add", json!([1, 2])).await;
//! assert_eq!(next_json(&mut ws).await, json!({"id": "1", "data": 3}));
//! # }
//! ```

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::adapter::soon;

/// A raw client socket.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a raw WebSocket to `ws://ADDR/PATH`, or returns the handshake's error
/// (e.g. the HTTP response of a refused upgrade).
///
/// # Panics
/// If `url` is not a `ws://` URL, or the connect or handshake takes longer
/// than [`SOON`](crate::adapter::SOON).
pub async fn try_raw_connect(url: &str) -> Result<Ws, tungstenite::Error> {
    connect_with(url, None).await
}

async fn connect_with(
    url: &str,
    config: Option<WebSocketConfig>,
) -> Result<Ws, tungstenite::Error> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
    let tcp = soon("tcp connect", TcpStream::connect(authority))
        .await
        .map_err(tungstenite::Error::Io)?;
    let (ws, _) = soon(
        "websocket handshake",
        async_tungstenite::client_async_with_config(url, tcp, config),
    )
    .await?;
    Ok(ws)
}

/// Opens a raw WebSocket.
///
/// # Panics
/// If the connection or its handshake fails or takes longer than [`SOON`](crate::adapter::SOON).
pub async fn raw_connect(url: &str) -> Ws {
    try_raw_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Opens a raw WebSocket with small buffers, for tests holding thousands.
///
/// # Panics
/// As [`raw_connect`].
pub async fn raw_connect_small(url: &str) -> Ws {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    connect_with(url, Some(config))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Opens `count` raw sockets ([`raw_connect_small`]), `batch` handshakes at a
/// time (so the listener's backlog is not overrun).
///
/// # Panics
/// As [`raw_connect`], for any of them.
pub async fn raw_connect_many(url: &str, count: usize, batch: usize) -> Vec<Ws> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let n = batch.min(count - sockets.len());
        let opened = futures_util::future::join_all((0..n).map(|_| raw_connect_small(url))).await;
        sockets.extend(opened);
    }
    sockets
}

/// Sends one request frame.
///
/// # Panics
/// If the socket cannot send.
pub async fn send_json(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Sends an invoke of `function` with `data` as its arguments.
///
/// # Panics
/// If the socket cannot send.
pub async fn invoke(ws: &mut Ws, id: &str, function: &str, data: Value) {
    send_json(
        ws,
        json!({"id": id, "type": "invoke", "function": function, "data": data}),
    )
    .await;
}

/// The next message that is not a ping or pong; `None` when the socket ended
/// (with or without an error).
///
/// # Panics
/// If nothing comes within [`SOON`](crate::adapter::SOON).
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
///
/// # Panics
/// If the next message is not a JSON text frame.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The close frame that must come next: its code and reason.
///
/// # Panics
/// If the next message is not a close frame with a code.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    match next_message(ws).await {
        Some(Message::Close(Some(frame))) => (u16::from(frame.code), frame.reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Skips up to `max_messages` messages until a close frame: its code and
/// reason (1005 and no reason for a close without a code), or `None` when
/// the socket ended without one.
///
/// # Panics
/// After `max_messages` messages without a close, or when one is not
/// within [`SOON`](crate::adapter::SOON) of the previous.
pub async fn skip_to_close(ws: &mut Ws, max_messages: usize) -> Option<(u16, String)> {
    for _ in 0..max_messages {
        match next_message(ws).await {
            Some(Message::Close(Some(frame))) => {
                return Some((u16::from(frame.code), frame.reason.to_string()))
            }
            Some(Message::Close(None)) => return Some((1005, String::new())),
            Some(_) => {}
            None => return None,
        }
    }
    panic!("still no close after {max_messages} messages");
}

/// Reads a socket whose close frame was already read to its end, so that
/// tungstenite answers the close.
///
/// # Panics
/// If the socket does not end within [`SOON`](crate::adapter::SOON), or
/// sends 100 more messages.
pub async fn finish(mut ws: Ws) {
    soon("the socket to end", async {
        for _ in 0..100 {
            if !matches!(ws.next().await, Some(Ok(_))) {
                return;
            }
        }
        panic!("the socket kept sending after its close");
    })
    .await;
}

/// Opens a plain TCP connection to `addr` that never says anything, and
/// waits (at most 5 s) until the server drops it; how long that took.
pub async fn silent_tcp_until_dropped(addr: std::net::SocketAddr) -> std::time::Duration {
    let mut silent = TcpStream::connect(addr).await.expect("a TCP connection");
    let connected = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = crate::adapter::within(
        "the server to drop the silent socket",
        std::time::Duration::from_secs(5),
        smol::io::AsyncReadExt::read(&mut silent, &mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the silent socket read {read:?}"
    );
    connected.elapsed()
}
