//! Client/server scenarios written once and run on every adapter (tokio,
//! async-std, smol): `cargo test -p conformance --test adapters`.
//!
//! The client survives a server restart on the same address: it reconnects,
//! re-authenticates, re-sends its push subscriptions and flushes the calls
//! made while the server was down; calls in flight when it dropped fail with
//! `rtm/disconnected` (they are not re-sent: they may not be idempotent).

use std::net::SocketAddr;
use std::time::Duration;

use async_channel::{unbounded, Sender};
use conformance::adapter::{recv, soon, Adapter};
use conformance::on_every_adapter;
use futures_util::poll;
use rtm_core::{ClientEvent, ClientState, ErrorCode, Identity, RtmError};
use rtm_driver::{CallContext, ClientOptions, Listening, ServerBuilder};
use serde_json::{json, Value};

struct Probes {
    auths: Sender<Value>,
    notes: Sender<String>,
    hangs: Sender<()>,
}

/// The same application on every start: auth (reported), `add`, `note`
/// (reported) and `hang` (reported, never finishes). A short shutdown
/// timeout drops the `hang` call: a server going away under a call.
async fn start(adapter: Adapter, addr: SocketAddr, probes: &Probes) -> Listening {
    let (auths, notes, hangs) = (
        probes.auths.clone(),
        probes.notes.clone(),
        probes.hangs.clone(),
    );
    let builder = ServerBuilder::new()
        .auth(move |_info, data: Vec<Value>| {
            let auths = auths.clone();
            async move {
                let _ = auths.try_send(data.first().cloned().unwrap_or(Value::Null));
                Ok::<_, RtmError>(Identity::new("carol", Value::Null))
            }
        })
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .register("note", move |_ctx: CallContext, (text,): (String,)| {
            let notes = notes.clone();
            async move {
                let _ = notes.try_send(text);
                Ok::<_, RtmError>(())
            }
        })
        .register("hang", move |_ctx: CallContext| {
            let _ = hangs.try_send(());
            async move {
                std::future::pending::<()>().await;
                Ok::<_, RtmError>(())
            }
        })
        .shutdown_timeout(Duration::from_millis(100));
    adapter
        .listen(builder, addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

async fn client_reconnects_to_a_restarted_server_reauthenticates_and_resubscribes(
    adapter: Adapter,
) {
    let (auths, auths_rx) = unbounded();
    let (notes, notes_rx) = unbounded();
    let (hangs, hangs_rx) = unbounded();
    let probes = Probes {
        auths,
        notes,
        hangs,
    };
    let first = start(adapter, "127.0.0.1:0".parse().unwrap(), &probes).await;
    let addr = first.local_addr();

    let options = ClientOptions::default()
        .auth(json!("token-1"))
        .reconnect_delay(Duration::from_millis(100))
        .call_timeout(Duration::from_secs(10));
    let url = first.url();
    let client = soon("connect", adapter.connect(&url, options))
        .await
        .unwrap();
    assert_eq!(recv("the first auth", &auths_rx).await, json!("token-1"));

    let (scores, scores_rx) = unbounded();
    let _sub = soon(
        "subscribe_push",
        client.subscribe_push("score", &["match-7"], move |(score,): (u32,)| {
            let _ = scores.try_send(score);
        }),
    )
    .await
    .unwrap();
    let tags = ["match-7".to_owned()];
    assert_eq!(first.handle().push("score", &tags, &(1,)).unwrap(), 1);
    assert_eq!(recv("a push before the restart", &scores_rx).await, 1);

    // A call in flight when the server goes away.
    let (in_flight, in_flight_rx) = unbounded();
    let caller = client.clone();
    adapter.runtime().spawn(Box::pin(async move {
        let outcome = caller.call_wait::<Value, _>("hang", &[0u8; 0]).await;
        let _ = in_flight.send(outcome).await;
    }));
    recv("the hanging call to start", &hangs_rx).await;

    let lifecycle = client.lifecycle();
    soon("shutdown", first.shutdown()).await;
    drop(first);
    let err = recv("the in-flight call", &in_flight_rx).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Disconnected);

    // Calls made while the server is down wait in the offline queue.
    soon("the client to notice", async {
        loop {
            match lifecycle.recv().await {
                Ok(ClientEvent::Reconnecting { .. }) => break,
                Ok(_) => {}
                Err(_) => panic!("lifecycle ended"),
            }
        }
    })
    .await;
    assert_ne!(client.state(), ClientState::Open);
    let mut queued = Box::pin(client.call_wait::<i64, _>("add", &(20, 22)));
    assert!(poll!(queued.as_mut()).is_pending());
    soon(
        "a queued fire-and-forget call",
        client.call("note", &("while down",)),
    )
    .await
    .unwrap();

    // The same address again.
    let second = start(adapter, addr, &probes).await;
    assert_eq!(soon("the queued call", queued).await.unwrap(), 42);
    assert_eq!(recv("the queued note", &notes_rx).await, "while down");
    assert_eq!(recv("the second auth", &auths_rx).await, json!("token-1"));
    assert_eq!(client.state(), ClientState::Open);

    // The push subscription was re-sent before the queue was flushed.
    assert_eq!(second.handle().push("score", &tags, &(2,)).unwrap(), 1);
    assert_eq!(recv("a push after the restart", &scores_rx).await, 2);
    let three: i64 = soon("a fresh call", client.call_wait("add", &(1, 2)))
        .await
        .unwrap();
    assert_eq!(three, 3);
    // Only one `hang` ever ran: the invoke in flight at the drop was not re-sent.
    assert!(
        hangs_rx.try_recv().is_err(),
        "an in-flight invoke was re-sent"
    );
    assert!(auths_rx.try_recv().is_err(), "more than one auth per open");

    client.close();
    soon("shutdown", second.shutdown()).await;
}

on_every_adapter!(client_reconnects_to_a_restarted_server_reauthenticates_and_resubscribes);
