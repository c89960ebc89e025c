//! Thousands of concurrent connections, each calling: every call is
//! answered, and the server forgets every connection once they close.
//!
//! Sized for `ulimit -n` ≥ 4,096 (2,000 client sockets and 2,000 server
//! sockets in this one process); the CI machine allows 20,000.

mod common;

use std::time::{Duration, Instant};

use common::{invoke, raw_connect_many, recv_n, within, Ws};
use futures_util::{SinkExt, StreamExt};
use rtm_tokio::{CallContext, RtmError, Server, ServerBuilderExt};
use serde_json::json;
use tokio::sync::mpsc::unbounded_channel;
use tungstenite::Message;

const CONNECTIONS: usize = 2000;
const CALLS: u64 = 3;
const LIMIT: Duration = Duration::from_secs(30);

/// Sends `CALLS` invokes at once, then reads their replies (in any order).
async fn call_a_few(k: u64, mut ws: Ws) -> Ws {
    for c in 0..CALLS {
        invoke(&mut ws, &format!("{k}-{c}"), "add", json!([k, c])).await;
    }
    let mut answered = [false; CALLS as usize];
    while answered.iter().any(|a| !a) {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("connection {k} lost before its replies: {other:?}"),
        };
        let reply: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        let id = reply["id"].as_str().unwrap();
        let c: u64 = id.strip_prefix(&format!("{k}-")).unwrap().parse().unwrap();
        assert_eq!(reply["data"], json!(k + c), "reply {id}");
        assert!(!answered[c as usize], "reply {id} twice");
        answered[c as usize] = true;
    }
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_get_every_reply_and_the_count_returns_to_zero() {
    let started = Instant::now();
    let (connected, mut connected_rx) = unbounded_channel();
    let (gone, mut gone_rx) = unbounded_channel();
    let server = Server::builder()
        .register("add", |_ctx: CallContext, (a, b): (u64, u64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .on_connect(move |_| {
            let _ = connected.send(());
        })
        .on_disconnect(move |_| {
            let _ = gone.send(());
        })
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();

    let sockets = within(
        "every connection to open",
        LIMIT,
        raw_connect_many(&server.url(), CONNECTIONS, 200),
    )
    .await;
    within(
        "every on_connect",
        LIMIT,
        recv_n("on_connect", CONNECTIONS, &mut connected_rx),
    )
    .await;
    assert_eq!(handle.connection_count(), CONNECTIONS);
    let opened = started.elapsed();

    let callers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(k, ws)| tokio::spawn(call_a_few(k as u64, ws)))
        .collect();
    let sockets = within("every reply", LIMIT, async {
        let mut sockets = Vec::with_capacity(CONNECTIONS);
        for caller in callers {
            sockets.push(caller.await.unwrap());
        }
        sockets
    })
    .await;
    assert_eq!(handle.connection_count(), CONNECTIONS);
    let called = started.elapsed();

    // Close every socket properly: send the close, read until the server's answer.
    let closers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let _ = ws.send(Message::Close(None)).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
        })
        .collect();
    within("every socket to close", LIMIT, async {
        for closer in closers {
            closer.await.unwrap();
        }
    })
    .await;
    within(
        "every on_disconnect",
        LIMIT,
        recv_n("on_disconnect", CONNECTIONS, &mut gone_rx),
    )
    .await;
    assert_eq!(handle.connection_count(), 0);
    eprintln!(
        "{CONNECTIONS} connections: opened in {opened:?}, {CALLS} calls each by {called:?}, closed by {:?}",
        started.elapsed()
    );
    server.shutdown().await;
}
