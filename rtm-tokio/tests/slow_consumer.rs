//! A connection that does not read its events is closed as a slow consumer
//! (1013 `rtm/slow-consumer`); every other connection is unaffected. (The
//! 1013 close itself is checked on every adapter in
//! `conformance/tests/adapter_transport.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::{raw_connect, raw_connect_many, recv, recv_n, within, Ws};
use futures_util::StreamExt;
use rtm_tokio::{ConnInfo, Server, ServerBuilderExt};
use tokio::sync::mpsc::unbounded_channel;
use tungstenite::Message;

const OTHERS: usize = 1000;
/// Events every other connection gets: fewer than the outbound queue, so
/// even a reader that is not scheduled at all during the test cannot overflow.
const TICKS: usize = 12;
const QUEUE: usize = 16;
/// Bound of the flood: 2,000 × 64 KiB is far more than loopback buffers hold.
const MAX_FLOOD: usize = 2000;

fn is_slow(info: &ConnInfo) -> bool {
    info.meta.path.as_deref() == Some("/?slow")
}

/// Reads every tick; returns them with the socket (kept open to the end).
async fn read_ticks(mut ws: Ws) -> (Vec<u64>, Ws) {
    let mut seen = Vec::with_capacity(TICKS);
    while seen.len() < TICKS {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(frame["event"], "tick");
                seen.push(frame["data"][0].as_u64().unwrap());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("a fast reader lost its connection: {other:?}"),
        }
    }
    (seen, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_while_every_other_peer_gets_every_event() {
    let (connected, mut connected_rx) = unbounded_channel();
    let (gone, mut gone_rx) = unbounded_channel();
    let server = Server::builder()
        .outbound_queue(QUEUE)
        .on_connect(move |_| {
            let _ = connected.send(());
        })
        .on_disconnect(move |info| {
            let _ = gone.send(info.meta.path.clone());
        })
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let others = within(
        "the other connections to open",
        Duration::from_secs(30),
        raw_connect_many(&server.url(), OTHERS, 100),
    )
    .await;
    // Never read: its kernel buffers fill, then its outbound queue.
    let slow = raw_connect(&format!("{}?slow", server.url())).await;
    recv_n("every connection to open", OTHERS + 1, &mut connected_rx).await;
    let readers: Vec<_> = others
        .into_iter()
        .map(|ws| tokio::spawn(read_ticks(ws)))
        .collect();

    let handle = server.handle();
    let big = "x".repeat(64 * 1024);
    let (mut flooded, mut ticks, mut slow_closed) = (0usize, 0usize, false);
    for i in 0..MAX_FLOOD {
        if !slow_closed {
            match handle.emit("flood", is_slow, &(i, &big)).unwrap() {
                0 => slow_closed = true,
                _ => flooded += 1,
            }
        }
        if i % 8 == 0 && ticks < TICKS {
            let sent = handle
                .emit("tick", |info| !is_slow(info), &(ticks,))
                .unwrap();
            assert_eq!(sent, OTHERS, "an emit missed a connection");
            ticks += 1;
        }
        if slow_closed && ticks == TICKS {
            break;
        }
        // Let the writers run: the slow peer's socket must really be full.
        tokio::task::yield_now().await;
    }
    assert!(
        slow_closed,
        "{flooded} big events never overflowed the slow peer"
    );
    assert_eq!(
        recv("the slow peer's disconnect", &mut gone_rx)
            .await
            .as_deref(),
        Some("/?slow")
    );

    // The slow peer, reading at last, gets what was buffered, then the end of
    // its connection: the 1013 close when it starts reading within the
    // server's close grace (2 s; the thousand readers compete for the CPU
    // here; conformance checks the close itself), else a dead socket.
    let outcome = drain_until_closed(slow, flooded + 10).await;
    if let Some(close) = outcome {
        assert_eq!(close, (1013, "rtm/slow-consumer".to_owned()));
    }

    let _open = within(
        "every tick at every reader",
        Duration::from_secs(30),
        async {
            let mut open = Vec::with_capacity(OTHERS);
            for reader in readers {
                let (seen, ws) = reader.await.unwrap();
                assert_eq!(seen, (0..TICKS as u64).collect::<Vec<_>>());
                open.push(ws);
            }
            open
        },
    )
    .await;
    assert!(
        gone_rx.try_recv().is_err(),
        "a reading peer was disconnected"
    );
    assert_eq!(handle.connection_count(), OTHERS);
}

/// Reads until a close frame (its code and reason) or the socket's end (`None`).
async fn drain_until_closed(mut ws: Ws, max_messages: usize) -> Option<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for _ in 0..max_messages {
        let left = deadline.saturating_duration_since(Instant::now());
        match within("the slow peer's next message", left, ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return Some((u16::from(frame.code), frame.reason.to_string()))
            }
            Some(Ok(Message::Close(None))) => return Some((1005, String::new())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
    panic!("the slow peer kept receiving more than {max_messages} messages");
}
