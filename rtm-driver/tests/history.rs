//! The driver carries out events with history: a Push or Publish of such
//! an event goes to the broker's stream (`Broker::publish_to_stream`) and
//! every server, the sending one too, delivers it as the broker hands it
//! back. The production connection task on in-memory channels, servers
//! sharing a `MemoryHub` (which keeps streams).
mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc::UnboundedSender;
use rtm_core::{Envelope, HistoryConfig, StreamOptions, Topic};
use rtm_driver::broker::{Broker, MemoryHub};
use rtm_driver::rt::{Incoming, Outgoing};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

struct Peer {
    send: UnboundedSender<Incoming>,
    written: UnboundedReceiver<Outgoing>,
}

impl Peer {
    async fn subscribed(server: &ServerHandle, tags: &[&str]) -> Peer {
        let (send, written) = common::connect(server).await;
        let mut peer = Peer { send, written };
        peer.send(json!({"id": "s", "type": "subscribe", "event": "score", "tags": tags}));
        assert_eq!(peer.next().await, json!({"id": "s", "data": true}));
        peer
    }

    fn send(&self, frame: Value) {
        self.send
            .unbounded_send(Incoming::Text(frame.to_string().into()))
            .unwrap();
    }

    async fn next(&mut self) -> Value {
        let next = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.written.recv().await {
                    Some(Outgoing::Text(frame)) => return serde_json::from_slice(&frame).unwrap(),
                    Some(_) => continue,
                    None => panic!("the connection ended"),
                }
            }
        });
        next.await.expect("a frame within 5 s")
    }

    /// Nothing more arrives for a moment.
    async fn quiet(&mut self) {
        let more = tokio::time::timeout(Duration::from_millis(100), self.written.recv()).await;
        assert!(
            !matches!(more, Ok(Some(Outgoing::Text(_)))),
            "unexpected {more:?}"
        );
    }
}

fn server(hub: &MemoryHub, history: bool) -> ServerHandle {
    let mut builder = ServerBuilder::new()
        .heartbeat(None)
        .broker(Arc::new(hub.broker()));
    if history {
        builder = builder.history(HistoryConfig::default().enable(
            "score",
            StreamOptions {
                size: 100,
                ttl: Duration::from_secs(60),
            },
        ));
    }
    builder.start(Arc::new(TokioRuntime::current()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_with_history_reach_every_holder_once_in_order_and_are_kept() {
    let hub = MemoryHub::new();
    let (a, b) = (server(&hub, true), server(&hub, true));
    let mut here = Peer::subscribed(&a, &["m1"]).await;
    let mut there = Peer::subscribed(&b, &["m1"]).await;
    for n in 1..=20 {
        // 0 local deliveries now: this server delivers it when it comes back.
        assert_eq!(a.push("score", &["m1".to_owned()], &(n,)).unwrap(), 0);
    }
    for peer in [&mut here, &mut there] {
        for n in 1..=20 {
            assert_eq!(peer.next().await, json!({"event": "score", "data": [n]}));
        }
        peer.quiet().await;
    }
    let read = hub
        .broker()
        .read_stream(
            &Topic::push("rtm", "score", "m1"),
            1,
            100,
            StreamOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(read.top.offset, 20);
    let data: Vec<Value> = read
        .envelopes
        .into_iter()
        .map(|wire| serde_json::from_slice(&Envelope::decode(wire).unwrap().frame).unwrap())
        .collect();
    assert_eq!(data[19], json!({"event": "score", "data": [20]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_that_keeps_history_the_events_go_as_before() {
    // No broker: history is ignored (and said so in the log), and a push
    // is delivered here at once.
    let alone = ServerBuilder::new()
        .heartbeat(None)
        .history(HistoryConfig::default().enable("score", StreamOptions::default()))
        .start(Arc::new(TokioRuntime::current()));
    let mut peer = Peer::subscribed(&alone, &["m1"]).await;
    assert_eq!(alone.push("score", &["m1".to_owned()], &(1,)).unwrap(), 1);
    assert_eq!(peer.next().await, json!({"event": "score", "data": [1]}));
    // A server without history beside one with it: each goes its way, and
    // the holders of both get every push once.
    let hub = MemoryHub::new();
    let (with, without) = (server(&hub, true), server(&hub, false));
    let mut on_with = Peer::subscribed(&with, &["m1"]).await;
    let mut on_without = Peer::subscribed(&without, &["m1"]).await;
    assert_eq!(without.push("score", &["m1".to_owned()], &(2,)).unwrap(), 1);
    assert_eq!(with.push("score", &["m1".to_owned()], &(3,)).unwrap(), 0);
    for peer in [&mut on_with, &mut on_without] {
        let got = [peer.next().await, peer.next().await];
        assert!(
            got.contains(&json!({"event": "score", "data": [2]})),
            "{got:?}"
        );
        assert!(
            got.contains(&json!({"event": "score", "data": [3]})),
            "{got:?}"
        );
        peer.quiet().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_reads_a_streams_kept_events_from_an_offset() {
    let hub = MemoryHub::new();
    let a = server(&hub, true);
    let _holder = Peer::subscribed(&a, &["m1"]).await;
    for n in 1..=5 {
        a.push("score", &["m1".to_owned()], &(n,)).unwrap();
    }
    common::until("the five pushes to be kept", || {
        futures_util::FutureExt::now_or_never(a.push_history("score", "m1", 1, 10))
            .and_then(Result::ok)
            .is_some_and(|page| page.top.offset == 5)
    })
    .await;
    let page = a.push_history("score", "m1", 4, 10).await.unwrap();
    let got: Vec<(u64, Value)> = page
        .events
        .iter()
        .map(|e| (e.offset, serde_json::from_slice(&e.frame).unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, json!({"event": "score", "data": [4]})),
            (5, json!({"event": "score", "data": [5]}))
        ]
    );
    assert_eq!(
        a.push_history("score", "m1", 1, 2)
            .await
            .unwrap()
            .events
            .len(),
        2
    );
    // An event without history says so.
    let err = a.push_history("chat", "m1", 1, 10).await.unwrap_err();
    assert_eq!(err.code, rtm_core::ErrorCode::BadRequest, "{err}");
    let err = a.publish_history("alice", "chat", 1, 10).await.unwrap_err();
    assert_eq!(err.code, rtm_core::ErrorCode::BadRequest, "{err}");
}

impl Peer {
    /// A connection subscribed to `score [m1]` with `since` (raw JSON);
    /// returns it and the subscribe's reply, the frames before it kept.
    async fn tracking(server: &ServerHandle, since: Value) -> (Peer, Vec<Value>, Value) {
        let (send, written) = common::connect(server).await;
        let mut peer = Peer { send, written };
        peer.send(json!({"id": "s", "type": "subscribe", "event": "score", "tags": ["m1"], "since": since}));
        let mut before = Vec::new();
        loop {
            let frame = peer.next().await;
            if frame.get("id").is_some() {
                return (peer, before, frame);
            }
            before.push(frame);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_and_comes_back_to_another_server_while_events_flow_gets_each_once_in_order(
) {
    let hub = MemoryHub::new();
    let (a, b) = (server(&hub, true), server(&hub, true));
    const N: u64 = 400;
    let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Pushes keep flowing on server a, through the sessions and the gaps.
    let pusher = {
        let (a, pushed) = (a.clone(), pushed.clone());
        tokio::spawn(async move {
            for n in 1..=N {
                a.push("score", &["m1".to_owned()], &(n,)).unwrap();
                pushed.store(n, std::sync::atomic::Ordering::Relaxed);
                if n % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut recovered_total = 0;
    let mut got: Vec<u64> = Vec::new();
    let mut position = json!(null);
    // Three sessions, alternating servers; each ends after a few events.
    for (session, server) in [&b, &a, &b].into_iter().enumerate() {
        let since = json!({ "m1": position.clone() });
        let (mut peer, recovered, reply) = Peer::tracking(server, since).await;
        let state = &reply["streams"]["m1"];
        if session > 0 {
            assert_eq!(state["recovered"], json!(true), "{reply}");
        }
        recovered_total += recovered.len();
        let mut frames = recovered;
        let want = if session == 2 { usize::MAX } else { 30 };
        while frames.len() < want {
            let frame = peer.next().await;
            let last = frame["data"][0] == json!(N);
            frames.push(frame);
            if last {
                break;
            }
        }
        for frame in &frames {
            assert_eq!(frame["tag"], json!("m1"));
            assert_eq!(frame["epoch"], state["epoch"]);
            got.push(frame["data"][0].as_u64().unwrap());
        }
        position = match frames.last() {
            Some(last) => json!({"offset": last["offset"], "epoch": last["epoch"]}),
            None => json!({"offset": state["offset"], "epoch": state["epoch"]}),
        };
        if got.last() == Some(&N) {
            break;
        }
        drop(peer);
        // Away until 20 more were sent (or all were).
        let away_from = *got.last().unwrap();
        while pushed.load(std::sync::atomic::Ordering::Relaxed) < (away_from + 20).min(N) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    pusher.await.unwrap();
    assert!(recovered_total >= 20, "recovered {recovered_total}");
    // From the first event after the first subscribe to the last: each once, in order.
    let first = got[0];
    assert_eq!(got, (first..=N).collect::<Vec<_>>());
}
