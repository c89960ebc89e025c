//! Helpers shared by the integration tests: running one scenario on each
//! executor, loud timeouts, and a raw WebSocket peer (async-tungstenite) for
//! what our Client cannot show.
#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use rtm_async_std::RuntimeRef;
use rtm_runtime::{AsyncStdRuntime, SmolRuntime};
use serde_json::{json, Value};
use tungstenite::Message;

/// A raw client socket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long anything that should happen promptly may take.
pub const SOON: Duration = Duration::from_secs(5);

/// Runs `scenario` to completion on async-std's executor, with async-std's runtime.
pub fn on_async_std<F, Fut>(scenario: F)
where
    F: FnOnce(RuntimeRef) -> Fut,
    Fut: Future<Output = ()>,
{
    async_std::task::block_on(scenario(Arc::new(AsyncStdRuntime)));
}

/// Runs `scenario` to completion on smol's executor, with smol's runtime.
pub fn on_smol<F, Fut>(scenario: F)
where
    F: FnOnce(RuntimeRef) -> Fut,
    Fut: Future<Output = ()>,
{
    smol::block_on(scenario(Arc::new(SmolRuntime)));
}

/// One `#[test]` per scenario and executor: `on_async_std::NAME` and `on_smol::NAME`.
macro_rules! on_both_executors {
    ($($scenario:ident),* $(,)?) => {
        mod on_async_std {
            $(#[test]
            fn $scenario() {
                crate::common::on_async_std(super::$scenario)
            })*
        }
        mod on_smol {
            $(#[test]
            fn $scenario() {
                crate::common::on_smol(super::$scenario)
            })*
        }
    };
}

/// Awaits `future` at most `limit`; panics naming `what` when it does not complete.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    // async-io's timer: the reactor both executors share.
    let future = std::pin::pin!(future);
    match select(future, smol::Timer::after(limit)).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// [`within`] the default [`SOON`].
pub async fn soon<F: Future>(what: &str, future: F) -> F::Output {
    within(what, SOON, future).await
}

/// Receives the next value of a test channel, loudly.
pub async fn recv<T>(what: &str, rx: &async_channel::Receiver<T>) -> T {
    soon(what, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("channel closed waiting for {what}"))
}

/// Polls `condition` (state with no event to await) until it holds; panics after [`SOON`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}

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
