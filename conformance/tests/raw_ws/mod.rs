//! The raw WebSocket peer (async-tungstenite over async-net, so it runs on
//! every executor) the adapter scenarios use for what our Client cannot show.
#![allow(dead_code)] // each test file uses its own subset

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use conformance::adapter::soon;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tungstenite::Message;

/// A raw client socket.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a raw WebSocket to `ws://ADDR/PATH`, or returns the handshake's error.
pub async fn try_raw_connect(url: &str) -> Result<Ws, tungstenite::Error> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
    let tcp = soon("tcp connect", TcpStream::connect(authority))
        .await
        .map_err(tungstenite::Error::Io)?;
    let (ws, _) = soon(
        "websocket handshake",
        async_tungstenite::client_async(url, tcp),
    )
    .await?;
    Ok(ws)
}

/// Opens a raw WebSocket.
pub async fn raw_connect(url: &str) -> Ws {
    try_raw_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
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
