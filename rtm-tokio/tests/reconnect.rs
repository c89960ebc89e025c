//! The client survives a server restart on the same address: it reconnects,
//! re-authenticates, re-sends its push subscriptions and flushes the calls
//! made while the server was down; calls in flight when it dropped fail with
//! `rtm/disconnected` (they are not re-sent: they may not be idempotent).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{recv, soon};
use futures_util::poll;
use rtm_tokio::{
    CallContext, Client, ClientEvent, ClientOptions, ClientState, ErrorCode, Identity, Listening,
    RtmError, Server, ServerBuilderExt,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// The same application on every start: auth (reported), `add`, `note`
/// (reported) and `hang` (reported, never finishes).
///
/// Graceful shutdown waits for in-flight calls up to `shutdown_timeout`; a
/// short one (100 ms) lets the server drop the `hang` call and close every
/// connection with 1001, which is exactly a server going away under a call.
async fn start(addr: SocketAddr, probes: &Probes) -> Listening {
    let (auths, notes, hangs) = (
        probes.auths.clone(),
        probes.notes.clone(),
        probes.hangs.clone(),
    );
    Server::builder()
        .auth(move |data: Vec<Value>, _info| {
            let auths = auths.clone();
            async move {
                let _ = auths.send(data.first().cloned().unwrap_or(Value::Null));
                Ok::<_, RtmError>(Identity::new("carol", Value::Null))
            }
        })
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .register("note", move |_ctx: CallContext, (text,): (String,)| {
            let notes = notes.clone();
            async move {
                let _ = notes.send(text);
                Ok::<_, RtmError>(())
            }
        })
        .register("hang", move |_ctx: CallContext, _: Vec<Value>| {
            let _ = hangs.send(());
            async move {
                std::future::pending::<()>().await;
                Ok::<_, RtmError>(())
            }
        })
        .shutdown_timeout(Duration::from_millis(100))
        .listen(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

struct Probes {
    auths: UnboundedSender<Value>,
    notes: UnboundedSender<String>,
    hangs: UnboundedSender<()>,
}

#[tokio::test]
async fn client_reconnects_to_a_restarted_server_and_resumes() {
    let (auths, mut auths_rx) = unbounded_channel();
    let (notes, mut notes_rx) = unbounded_channel();
    let (hangs, mut hangs_rx) = unbounded_channel();
    let probes = Probes {
        auths,
        notes,
        hangs,
    };
    let first = start("127.0.0.1:0".parse().unwrap(), &probes).await;
    let addr = first.local_addr();

    let options = ClientOptions::default()
        .auth(json!("token-1"))
        .reconnect_delay(Duration::from_millis(100))
        .call_timeout(Duration::from_secs(10));
    let client = soon("connect", Client::connect(&first.url(), options))
        .await
        .unwrap();
    assert_eq!(
        recv("the first auth", &mut auths_rx).await,
        json!("token-1")
    );

    let (scores, mut scores_rx) = unbounded_channel();
    let _sub = soon(
        "subscribe_push",
        client.subscribe_push("score", &["match-7"], move |(score,): (u32,)| {
            let _ = scores.send(score);
        }),
    )
    .await
    .unwrap();
    let tags = ["match-7".to_owned()];
    assert_eq!(first.handle().push("score", &tags, &(1,)).unwrap(), 1);
    assert_eq!(recv("a push before the restart", &mut scores_rx).await, 1);

    // A call in flight when the server goes away.
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.call_wait::<Value, _>("hang", &[0u8; 0]).await }
    });
    recv("the hanging call to start", &mut hangs_rx).await;

    let lifecycle = client.lifecycle();
    soon("shutdown", first.shutdown()).await;
    drop(first);
    let err = soon("the in-flight call", in_flight)
        .await
        .unwrap()
        .unwrap_err();
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
    let second = start(addr, &probes).await;
    assert_eq!(soon("the queued call", queued).await.unwrap(), 42);
    assert_eq!(recv("the queued note", &mut notes_rx).await, "while down");
    assert_eq!(
        recv("the second auth", &mut auths_rx).await,
        json!("token-1")
    );
    assert_eq!(client.state(), ClientState::Open);

    // The push subscription was re-sent before the queue was flushed, and
    // frames are handled in order: the new server holds it now.
    assert_eq!(second.handle().push("score", &tags, &(2,)).unwrap(), 1);
    assert_eq!(recv("a push after the restart", &mut scores_rx).await, 2);
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
