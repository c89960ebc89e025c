//! Thousands of raw connections to one server: every call is answered and
//! the server forgets every connection once they close; a peer that never
//! reads is closed as a slow consumer (1013 `rtm/slow-consumer`) while a
//! thousand others get every event. (The 1013 close itself is checked in
//! `adapter_transport.rs`.)
//!
//! Sized for `ulimit -n` ≥ 4,096 (2,000 client sockets and 2,000 server
//! sockets in this one process); the CI machine allows 20,000.

use std::future::Future;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use conformance::adapter::{recv, recv_n, within, Adapter};
use conformance::on_every_adapter;
use conformance::raw_ws::{invoke, raw_connect, raw_connect_many, skip_to_close, Ws};
use futures_util::StreamExt;
use rtm_core::{ConnInfo, RtmError};
use rtm_driver::{CallContext, ServerBuilder};
use serde_json::{json, Value};
use tungstenite::Message;

/// What the slow steps (opening, calling and closing thousands of sockets)
/// may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs each of `tasks` in its own task on the adapter's executor; their
/// outputs arrive on the returned channel, in the order they finish.
fn spawn_each<T, F>(adapter: Adapter, tasks: impl IntoIterator<Item = F>) -> Receiver<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (done, done_rx) = async_channel::unbounded();
    let runtime = adapter.runtime();
    for task in tasks {
        let done = done.clone();
        runtime.spawn(Box::pin(async move {
            let _ = done.send(task.await).await;
        }));
    }
    done_rx
}

/// The next text frame, parsed; what else came instead, as an error (the
/// spawned readers report rather than panic: a panic in a detached task is
/// not the test's).
async fn next_text(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|e| e.to_string())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("{other:?}")),
        }
    }
}

const CONNECTIONS: usize = 2000;
const CALLS: u64 = 3;

/// Sends `CALLS` invokes at once, then reads their replies (in any order):
/// the socket back, or what went wrong.
async fn call_a_few(k: u64, mut ws: Ws) -> Result<Ws, String> {
    for c in 0..CALLS {
        invoke(&mut ws, &format!("{k}-{c}"), "add", json!([k, c])).await;
    }
    let mut answered = [false; CALLS as usize];
    while answered.iter().any(|a| !a) {
        let reply = next_text(&mut ws)
            .await
            .map_err(|lost| format!("connection {k} lost before its replies: {lost}"))?;
        let id = reply["id"].as_str().unwrap_or_default();
        let c = id
            .strip_prefix(&format!("{k}-"))
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|c| *c < answered.len())
            .ok_or_else(|| format!("connection {k}: a reply to another's call: {reply}"))?;
        if reply["data"] != json!(k + c as u64) || answered[c] {
            return Err(format!("connection {k}: wrong or repeated reply {reply}"));
        }
        answered[c] = true;
    }
    Ok(ws)
}

async fn two_thousand_connections_get_every_reply_and_the_count_returns_to_zero(adapter: Adapter) {
    let started = Instant::now();
    let (connected, connected_rx) = async_channel::unbounded();
    let (gone, gone_rx) = async_channel::unbounded();
    let builder = ServerBuilder::new()
        .register("add", |_ctx: CallContext, (a, b): (u64, u64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .on_connect(move |_| {
            let _ = connected.try_send(());
        })
        .on_disconnect(move |_| {
            let _ = gone.try_send(());
        });
    let server = adapter
        .listen(builder, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let handle = server.handle();

    let sockets = within(
        "every connection to open",
        LIMIT,
        raw_connect_many(&server.url(), CONNECTIONS, 200),
    )
    .await;
    recv_n("every on_connect", CONNECTIONS, LIMIT, &connected_rx).await;
    assert_eq!(handle.connection_count(), CONNECTIONS);
    let opened = started.elapsed();

    let callers = (0..).zip(sockets).map(|(k, ws)| call_a_few(k, ws));
    let replies = spawn_each(adapter, callers);
    let sockets: Vec<Ws> = recv_n("every reply", CONNECTIONS, LIMIT, &replies)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(handle.connection_count(), CONNECTIONS);
    let called = started.elapsed();

    // Close every socket properly: send the close, read until the server's answer.
    let closers = sockets.into_iter().map(|mut ws| async move {
        let _ = ws.send(Message::Close(None)).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let closed = spawn_each(adapter, closers);
    recv_n("every socket to close", CONNECTIONS, LIMIT, &closed).await;
    recv_n("every on_disconnect", CONNECTIONS, LIMIT, &gone_rx).await;
    assert_eq!(handle.connection_count(), 0);
    eprintln!(
        "{adapter:?}, {CONNECTIONS} connections: opened in {opened:?}, {CALLS} calls each by {called:?}, closed by {:?}",
        started.elapsed()
    );
    within("shutdown", LIMIT, server.shutdown()).await;
}

const OTHERS: usize = 1000;
/// Events every other connection gets: far fewer bytes than the outbound
/// bound, so even a reader that is not scheduled at all during the test
/// cannot overflow.
const TICKS: usize = 12;
/// The outbound bound: 16 of the slow peer's 64 KiB events.
const OUTBOUND_BYTES: usize = 16 * 65 * 1024;
/// Bound of the flood: 2,000 × 64 KiB is far more than loopback buffers hold.
const MAX_FLOOD: usize = 2000;

fn is_slow(info: &ConnInfo) -> bool {
    info.meta.path.as_deref() == Some("/?slow")
}

/// Reads every tick: the ticks, with the socket (kept open to the end), or
/// what went wrong.
async fn read_ticks(mut ws: Ws) -> Result<(Vec<u64>, Ws), String> {
    let mut seen = Vec::with_capacity(TICKS);
    while seen.len() < TICKS {
        let frame = next_text(&mut ws)
            .await
            .map_err(|lost| format!("a fast reader lost its connection: {lost}"))?;
        match (&frame["event"], frame["data"][0].as_u64()) {
            (Value::String(event), Some(tick)) if event == "tick" => seen.push(tick),
            _ => return Err(format!("a fast reader got {frame}")),
        }
    }
    Ok((seen, ws))
}

async fn a_peer_that_never_reads_is_closed_while_every_other_peer_gets_every_event(
    adapter: Adapter,
) {
    let (connected, connected_rx) = async_channel::unbounded();
    let (gone, gone_rx) = async_channel::unbounded();
    let builder = ServerBuilder::new()
        .max_outbound_bytes(OUTBOUND_BYTES)
        .on_connect(move |_| {
            let _ = connected.try_send(());
        })
        .on_disconnect(move |info| {
            let _ = gone.try_send(info.meta.path.clone());
        });
    let server = adapter
        .listen(builder, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let others = within(
        "the other connections to open",
        LIMIT,
        raw_connect_many(&server.url(), OTHERS, 100),
    )
    .await;
    // Never read: its kernel buffers fill, then its outbound queue.
    let mut slow = raw_connect(&format!("{}?slow", server.url())).await;
    // Wait until the server holds every connection: an Emit before reaches nobody.
    recv_n("every connection to open", OTHERS + 1, LIMIT, &connected_rx).await;
    let readers = spawn_each(adapter, others.into_iter().map(read_ticks));

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
        rtm_driver::rt::yield_now().await;
    }
    assert!(
        slow_closed,
        "{flooded} big events never overflowed the slow peer"
    );
    assert_eq!(
        recv("the slow peer's disconnect", &gone_rx)
            .await
            .as_deref(),
        Some("/?slow")
    );

    // The slow peer, reading at last, gets what was buffered, then the end of
    // its connection: the 1013 close when it starts reading within the
    // server's close grace (2 s; the thousand readers compete for the CPU
    // here; adapter_transport checks the close itself), else a dead socket.
    let outcome = within(
        "the slow peer's close",
        Duration::from_secs(15),
        skip_to_close(&mut slow, flooded + 10),
    )
    .await;
    if let Some(close) = outcome {
        assert_eq!(close, (1013, "rtm/slow-consumer".to_owned()));
    }

    let open: Vec<Ws> = recv_n("every tick at every reader", OTHERS, LIMIT, &readers)
        .await
        .into_iter()
        .map(|read| {
            let (seen, ws) = read.unwrap();
            assert_eq!(seen, (0..TICKS as u64).collect::<Vec<_>>());
            ws
        })
        .collect();
    assert!(
        gone_rx.try_recv().is_err(),
        "a reading peer was disconnected"
    );
    assert_eq!(handle.connection_count(), OTHERS);
    // Gone, the peers need no close grace: shutdown does not wait for them.
    drop((open, slow));
    within("shutdown", LIMIT, server.shutdown()).await;
}

on_every_adapter!(
    two_thousand_connections_get_every_reply_and_the_count_returns_to_zero,
    a_peer_that_never_reads_is_closed_while_every_other_peer_gets_every_event,
);
