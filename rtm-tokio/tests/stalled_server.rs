//! A server that stops reading cannot make the client grow memory without
//! bound: past `offline_queue` unsent frames the connection counts as lost.
use std::time::Duration;

use rtm_tokio::{Client, ClientOptions, ErrorCode};
use tokio::net::TcpListener;

#[tokio::test]
async fn frames_for_a_server_that_stopped_reading_are_bounded_by_the_offline_queue() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    // Completes the handshake, then never reads again (but keeps the socket open).
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
    });
    let options = ClientOptions::default()
        .offline_queue(4)
        .reconnect_delay(Duration::ZERO)
        .call_timeout(Duration::from_secs(20));
    let client = Client::connect(&url, options).await.expect("connect");
    // 1 MiB arguments fill the socket buffers quickly; then frames pile up unsent.
    let big = "x".repeat(1024 * 1024);
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            let big = big.clone();
            tokio::spawn(async move {
                client
                    .call_wait::<serde_json::Value, _>("echo", &(big,))
                    .await
            })
        })
        .collect();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("calls still hanging: unsent frames were not bounded");
    let codes: Vec<ErrorCode> = outcome
        .into_iter()
        .map(|r| {
            r.expect("task")
                .expect_err("no server reply can arrive")
                .code
        })
        .collect();
    assert!(
        codes.contains(&ErrorCode::Disconnected),
        "the stalled connection was not dropped: {codes:?}"
    );
    server.abort();
}
