//! The socket side: the connection limit, heartbeats, slow consumers, frame
//! limits, the served path, graceful shutdown, and serving a socket upgraded
//! elsewhere; every scenario on every adapter
//! (tokio, async-std, smol).

use std::time::{Duration, Instant};

use async_net::TcpStream;
use conformance::adapter::{recv, soon, until, within, Adapter};
use conformance::on_every_adapter;
use conformance::raw_ws::{
    expect_close, invoke, next_json, next_message, raw_connect, silent_tcp_until_dropped,
    skip_to_close, try_raw_connect,
};
use futures_util::StreamExt;
use rtm_core::{Heartbeat, RtmError};
use rtm_driver::{CallContext, ClientOptions, Listening, ServerBuilder};
use serde_json::{json, Value};
use tungstenite::Message;

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

fn echo() -> ServerBuilder {
    ServerBuilder::new().register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
        Ok::<_, RtmError>(x)
    })
}

async fn a_frame_over_max_frame_bytes_is_closed_with_1009(adapter: Adapter) {
    let server = listen(adapter, echo().max_frame_bytes(256)).await;
    let mut ws = raw_connect(&server.url()).await;
    invoke(&mut ws, "1", "echo", json!(["small"])).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"id": "1", "data": "small"})
    );
    let big = "x".repeat(300);
    invoke(&mut ws, "2", "echo", json!([big])).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    soon("shutdown", server.shutdown()).await;
}

async fn a_path_other_than_the_servers_is_refused_with_404(adapter: Adapter) {
    let server = listen(adapter, echo().path("/rtm")).await;
    assert!(server.url().ends_with("/rtm"));
    let addr = server.local_addr();
    for path in ["/", "/other", "/rtm/deeper"] {
        match try_raw_connect(&format!("ws://{addr}{path}")).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 404, "path {path}")
            }
            Err(other) => panic!("path {path}: expected a 404, got {other}"),
            Ok(_) => panic!("path {path} was upgraded"),
        }
    }
    // The served path, with a query, is upgraded.
    let mut ws = raw_connect(&format!("{}?v=1", server.url())).await;
    invoke(&mut ws, "1", "echo", json!([1])).await;
    assert_eq!(next_json(&mut ws).await, json!({"id": "1", "data": 1}));
    // Gone, the raw peer needs no close grace (2 s) at shutdown.
    drop(ws);
    soon("shutdown", server.shutdown()).await;
}

async fn graceful_shutdown_finishes_in_flight_calls_then_closes_1001_and_refuses_new_connections(
    adapter: Adapter,
) {
    let (started, started_rx) = async_channel::unbounded();
    let (release, release_rx) = async_channel::unbounded::<()>();
    let builder = echo().register("slow", move |_ctx: CallContext| {
        let (started, release_rx) = (started.clone(), release_rx.clone());
        async move {
            let _ = started.send(()).await;
            let _ = release_rx.recv().await;
            Ok::<_, RtmError>("done")
        }
    });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut busy = raw_connect(&server.url()).await;
    let mut idle = raw_connect(&server.url()).await;
    invoke(&mut idle, "1", "echo", json!([1])).await;
    next_json(&mut idle).await;
    invoke(&mut busy, "1", "slow", json!([])).await;
    recv("the slow call to start", &started_rx).await;

    // Shutdown waits for the in-flight call: release it once shutdown started.
    let release_once_shutting_down = async {
        until("the shutdown to start", || {
            server.handle().is_shutting_down()
        })
        .await;
        release.send(()).await.unwrap();
    };
    soon(
        "shutdown",
        futures_util::future::join(server.shutdown(), release_once_shutting_down),
    )
    .await;

    assert_eq!(
        next_json(&mut busy).await,
        json!({"id": "1", "data": "done"})
    );
    assert_eq!(expect_close(&mut busy).await.0, 1001);
    assert_eq!(expect_close(&mut idle).await.0, 1001);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a connection was accepted after shutdown"
    );
}

async fn serve_websocket_serves_a_socket_upgraded_elsewhere(adapter: Adapter) {
    let handle = adapter.embedded(echo());
    let url = adapter.serve_one_upgraded(handle.clone()).await.unwrap();
    let mut ws = raw_connect(&url).await;
    futures_util::SinkExt::send(
        &mut ws,
        Message::text(r#"{"id":"7","type":"invoke","function":"echo","data":["hi"]}"#),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"id": "7", "data": "hi"}));
    soon("shutdown", handle.shutdown()).await;
    assert_eq!(expect_close(&mut ws).await.0, 1001);
}

/// A peer that stops reading is closed as a slow consumer once its socket
/// and its outbound bound (16 of these frames here) are full; reading again, it gets
/// what was buffered and then the 1013 close.
async fn a_slow_consumer_that_reads_again_gets_close_1013_slow_consumer(adapter: Adapter) {
    /// Bound of the flood: 2,000 × 64 KiB is far more than loopback buffers hold.
    const MAX_FLOOD: usize = 2000;
    let (gone, gone_rx) = async_channel::unbounded();
    let builder = echo()
        .max_outbound_bytes(16 * 65 * 1024)
        .on_disconnect(move |_| {
            let _ = gone.try_send(());
        });
    let server = listen(adapter, builder).await;
    let mut slow = raw_connect(&server.url()).await;
    let handle = server.handle();
    // The handshake can finish on the peer's side before the server holds the
    // connection; an Emit before that reaches nobody.
    until("the server to hold the connection", || {
        handle.connection_count() == 1
    })
    .await;
    let big = "x".repeat(64 * 1024);
    let mut flooded = 0;
    for i in 0..MAX_FLOOD {
        if handle.emit("flood", |_| true, &(i, &big)).unwrap() == 0 {
            break;
        }
        flooded += 1;
        // Let the writer run: the peer's socket must really be full.
        rtm_driver::rt::yield_now().await;
    }
    assert!(flooded > 0, "the first big event reached nobody");
    assert!(
        flooded < MAX_FLOOD,
        "{flooded} big events never overflowed the peer"
    );
    recv("the slow peer's disconnect", &gone_rx).await;
    // The server's writer waits up to 2 s for the peer to read up to the close.
    assert_eq!(
        skip_to_close(&mut slow, flooded + 10).await,
        Some((1013, "rtm/slow-consumer".to_owned()))
    );
    soon("shutdown", server.shutdown()).await;
}

/// The connection limit: one more connection than `max_connections` is
/// closed with 1013; once one leaves, there is room again.
async fn max_connections_refuses_the_next_connection_with_1013(adapter: Adapter) {
    let (connects, connects_rx) = async_channel::unbounded();
    let (disconnects, disconnects_rx) = async_channel::unbounded();
    let builder = echo()
        .max_connections(2)
        .on_connect(move |_| {
            let _ = connects.try_send(());
        })
        .on_disconnect(move |_| {
            let _ = disconnects.try_send(());
        });
    let server = listen(adapter, builder).await;
    let mut first = raw_connect(&server.url()).await;
    let _second = raw_connect(&server.url()).await;
    recv("the first connection", &connects_rx).await;
    recv("the second connection", &connects_rx).await;

    let mut third = raw_connect(&server.url()).await;
    assert_eq!(expect_close(&mut third).await.0, 1013);
    assert_eq!(server.handle().connection_count(), 2);

    // Once one leaves, there is room again.
    soon("closing the first", first.close(None)).await.unwrap();
    while next_message(&mut first).await.is_some() {}
    recv("a disconnect", &disconnects_rx).await;
    let mut fourth = raw_connect(&server.url()).await;
    invoke(&mut fourth, "1", "echo", json!([4])).await;
    assert_eq!(next_json(&mut fourth).await, json!({"id": "1", "data": 4}));
    soon("shutdown", server.shutdown()).await;
}

/// The heartbeat closes a peer that does not answer pings within the
/// timeout, and keeps a raw peer that answers them and our own client.
async fn heartbeat_closes_a_silent_peer_and_keeps_one_that_answers_pings(adapter: Adapter) {
    let heartbeat = Heartbeat {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
    };
    let (gone, gone_rx) = async_channel::unbounded();
    let builder = echo()
        .heartbeat(Some(heartbeat))
        .on_disconnect(move |info| {
            let _ = gone.try_send(info.meta.path.clone());
        });
    let server = listen(adapter, builder).await;
    // tungstenite answers pings only while it is read: never reading it
    // makes a peer that never answers.
    let mut silent = raw_connect(&format!("{}?silent", server.url())).await;
    let mut alive = raw_connect(&format!("{}?alive", server.url())).await;
    // Our client answers pings by itself.
    let client = soon(
        "connect",
        adapter.connect(
            &format!("{}?client", server.url()),
            ClientOptions::default(),
        ),
    )
    .await
    .unwrap();
    let lifecycle = client.lifecycle();

    // Reading the live peer answers its pings; count enough of them to span
    // twice the silence deadline.
    let started = Instant::now();
    soon("pings on the live peer", async {
        let mut pings = 0;
        while pings < 6 {
            match alive.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("the live peer got {other:?}"),
            }
        }
    })
    .await;
    assert!(started.elapsed() >= heartbeat.timeout);
    assert_eq!(
        recv("the silent peer's disconnect", &gone_rx)
            .await
            .as_deref(),
        Some("/?silent")
    );
    assert_eq!(
        server.handle().connection_count(),
        2,
        "a live peer was closed"
    );
    assert!(gone_rx.try_recv().is_err());
    assert!(
        lifecycle.try_recv().is_err(),
        "the client's connection changed"
    );
    client.close();
    // What the silent peer finds once it reads: pings, then the close.
    assert_eq!(expect_close(&mut silent).await.0, 1001);
    soon("shutdown", server.shutdown()).await;
}

/// A peer that connects and never finishes the WebSocket handshake holds
/// its socket until `handshake_timeout`, not forever; a peer that finishes in
/// time is served.
async fn a_connection_silent_past_the_handshake_timeout_is_dropped(adapter: Adapter) {
    let timeout = Duration::from_millis(200);
    let server = listen(adapter, echo().handshake_timeout(timeout)).await;
    let waited = silent_tcp_until_dropped(server.local_addr()).await;
    assert!(waited >= timeout / 2, "dropped before the timeout");

    let mut ws = raw_connect(&server.url()).await;
    invoke(&mut ws, "1", "echo", json!(["in time"])).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"id": "1", "data": "in time"})
    );
    drop(ws);
    soon("shutdown", server.shutdown()).await;
}

/// After its close frame the server keeps the socket `close_grace` for the
/// peer to answer; a peer that never reads is dropped then, not later.
async fn a_peer_that_never_answers_the_close_is_dropped_after_close_grace(adapter: Adapter) {
    let grace = Duration::from_millis(200);
    let server = listen(adapter, echo().close_grace(grace)).await;
    let mut ws = raw_connect(&server.url()).await;
    until("the server to hold the connection", || {
        server.handle().connection_count() == 1
    })
    .await;
    let closing = Instant::now();
    soon("shutdown", server.shutdown()).await;
    // Read the raw bytes under the WebSocket: the close frame arrives, and
    // nothing answers it, until the server drops the socket (end of stream).
    let mut buf = [0u8; 256];
    let dropped = within(
        "the server to drop the socket",
        Duration::from_secs(5),
        async {
            loop {
                match ::smol::io::AsyncReadExt::read(ws.get_mut(), &mut buf).await {
                    Ok(0) | Err(_) => break closing.elapsed(),
                    Ok(_) => {}
                }
            }
        },
    )
    .await;
    assert!(
        dropped >= grace / 2,
        "dropped after {dropped:?}, before the grace"
    );
    assert!(
        dropped < Duration::from_secs(2),
        "dropped after {dropped:?}: the 2 s default, not the configured grace"
    );
}

on_every_adapter!(
    max_connections_refuses_the_next_connection_with_1013,
    heartbeat_closes_a_silent_peer_and_keeps_one_that_answers_pings,
    a_slow_consumer_that_reads_again_gets_close_1013_slow_consumer,
    a_frame_over_max_frame_bytes_is_closed_with_1009,
    a_path_other_than_the_servers_is_refused_with_404,
    graceful_shutdown_finishes_in_flight_calls_then_closes_1001_and_refuses_new_connections,
    serve_websocket_serves_a_socket_upgraded_elsewhere,
    a_connection_silent_past_the_handshake_timeout_is_dropped,
    a_peer_that_never_answers_the_close_is_dropped_after_close_grace,
);
