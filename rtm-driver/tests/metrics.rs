//! What the server records through the `metrics` facade, read back from an
//! in-memory recorder (`metrics-util`'s `DebuggingRecorder`). Connections
//! are the production connection task on in-memory channels
//! (`ServerHandle::serve`) or on an in-memory byte stream
//! (`ServerHandle::accept`, for the handshake).
mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc::{unbounded, UnboundedSender};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rtm_core::{CloseCode, Identity, Rate, RateLimit, RtmError};
use rtm_driver::broker::MemoryHub;
use rtm_driver::rt::{BoxIo, Incoming, Outgoing};
use rtm_driver::{CallContext, ServerBuilder, ServerHandle, SubscribeRequest};
use rtm_runtime::{TokioIo, TokioRuntime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

/// A server built from `builder` whose instruments record into `recorder`
/// (the recorder in place when the server starts is the one it uses).
fn start(recorder: &DebuggingRecorder, builder: ServerBuilder) -> ServerHandle {
    metrics::with_local_recorder(recorder, || {
        builder.start(Arc::new(TokioRuntime::current()))
    })
}

/// A server with auth ("good" is accepted as user "u", anything else is
/// rejected) and functions that succeed, fail, panic and take a while.
fn app() -> ServerBuilder {
    ServerBuilder::new()
        .auth(|_info, (token,): (String,)| async move {
            if token == "good" {
                Ok(Identity::new("u", Value::Null))
            } else {
                Err(RtmError::new(
                    rtm_core::ErrorCode::AuthRejected,
                    "bad token",
                ))
            }
        })
        .register("ok", || async { Ok::<_, RtmError>(1) })
        .register("fail", || async {
            Err::<i32, _>(RtmError::bad_request("no"))
        })
        .register("boom", |_ctx: CallContext| async move {
            if true {
                panic!("boom");
            }
            Ok::<i32, RtmError>(0)
        })
        .register("slow", || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, RtmError>(2)
        })
        .register("limited", || async { Ok::<_, RtmError>(3) })
        .rate_limit(
            "limited",
            RateLimit::per_user(Rate::per_minute(1).with_burst(1)),
        )
        .register("once", || async { Ok::<_, RtmError>(4) })
        .rate_limit(
            "once",
            RateLimit::per_connection(Rate::per_minute(1).with_burst(1)),
        )
}

/// One in-memory connection: what its peer sends, and what the server wrote.
struct Peer {
    send: UnboundedSender<Incoming>,
    written: UnboundedReceiver<Outgoing>,
}

impl Peer {
    async fn open(server: &ServerHandle) -> Peer {
        let (send, written) = common::connect(server).await;
        Peer { send, written }
    }

    fn send(&self, frame: Value) {
        self.send
            .unbounded_send(Incoming::Text(frame.to_string().into()))
            .unwrap();
    }

    /// The next text frame, as JSON (`None`: the server closed with that code).
    async fn next(&mut self) -> Result<Value, Option<CloseCode>> {
        let next = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.written.recv().await {
                    Some(Outgoing::Text(frame)) => {
                        return Ok(serde_json::from_slice(&frame).unwrap())
                    }
                    Some(Outgoing::Close(code, _)) => return Err(Some(code)),
                    Some(_) => continue,
                    None => return Err(None),
                }
            }
        });
        next.await.expect("a frame within 5 s")
    }

    async fn auth(&mut self, token: &str) -> Result<Value, Option<CloseCode>> {
        self.send(json!({"id": "a", "type": "auth", "data": [token]}));
        self.next().await
    }

    async fn call(&mut self, id: &str, function: &str) -> Value {
        self.send(json!({"id": id, "type": "invoke", "function": function, "data": []}));
        self.next().await.expect("a reply")
    }
}

/// What was recorded so far: a `DebuggingRecorder`'s snapshots drain every
/// value (they swap it with 0), so each read adds what it drained.
struct Recorded {
    snapshotter: Snapshotter,
    counters: RefCell<HashMap<String, u64>>,
    gauges: RefCell<HashMap<String, f64>>,
    histograms: RefCell<HashMap<String, Vec<f64>>>,
}

impl Recorded {
    fn of(recorder: &DebuggingRecorder) -> Self {
        Recorded {
            snapshotter: recorder.snapshotter(),
            counters: RefCell::default(),
            gauges: RefCell::default(),
            histograms: RefCell::default(),
        }
    }

    /// `name{k=v,…}` with the labels sorted.
    fn id(name: &str, labels: impl Iterator<Item = (String, String)>) -> String {
        let mut labels: Vec<String> = labels.map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        format!("{name}{{{}}}", labels.join(","))
    }

    fn read(&self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let id = Self::id(
                key.name(),
                key.labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned())),
            );
            match value {
                DebugValue::Counter(n) => *self.counters.borrow_mut().entry(id).or_default() += n,
                // Drained to 0 too: the server only moves its gauges up and
                // down (but `broker_up`), so the sum is the value.
                DebugValue::Gauge(n) => {
                    *self.gauges.borrow_mut().entry(id).or_default() += n.into_inner()
                }
                DebugValue::Histogram(values) => self
                    .histograms
                    .borrow_mut()
                    .entry(id)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
            }
        }
    }

    fn wanted(name: &str, labels: &[(&str, &str)]) -> String {
        Self::id(
            name,
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.read();
        let id = Self::wanted(name, labels);
        *self
            .counters
            .borrow()
            .get(&id)
            .unwrap_or_else(|| panic!("no counter {id}"))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.read();
        let id = Self::wanted(name, labels);
        *self
            .gauges
            .borrow()
            .get(&id)
            .unwrap_or_else(|| panic!("no gauge {id}"))
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.read();
        let id = Self::wanted(name, labels);
        self.histograms
            .borrow()
            .get(&id)
            .unwrap_or_else(|| panic!("no histogram {id}"))
            .clone()
    }
}

/// Waits (at most 5 s) until the connection's task is over: what it wrote
/// ends once it is.
async fn ended(peer: &mut Peer) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while peer.written.recv().await.is_some() {}
    })
    .await
    .expect("the connection ended within 5 s");
}

#[tokio::test]
async fn connections_are_counted_by_state_and_closes_by_code_and_who_closed() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());

    let mut accepted = Peer::open(&server).await;
    assert!(accepted.auth("good").await.is_ok());
    let mut rejected = Peer::open(&server).await;
    let refusal = rejected.auth("bad").await.unwrap();
    assert_eq!(refusal["error"]["code"], json!("rtm/auth-rejected"));
    assert_eq!(
        rejected.next().await.unwrap_err(),
        Some(CloseCode::AUTH_REJECTED)
    );
    // It answers the close, as a client does: the server's linger ends.
    rejected
        .send
        .unbounded_send(Incoming::Closed(
            Some(CloseCode::AUTH_REJECTED),
            String::new(),
        ))
        .unwrap();
    ended(&mut rejected).await;
    let mut quitter = Peer::open(&server).await;
    quitter
        .send
        .unbounded_send(Incoming::Closed(Some(CloseCode::NORMAL), String::new()))
        .unwrap();
    ended(&mut quitter).await;

    assert_eq!(metrics.counter("rtm_connections_opened_total", &[]), 3);
    assert_eq!(
        metrics.gauge("rtm_connections", &[("state", "authenticated")]),
        1.0
    );
    assert_eq!(
        metrics.gauge("rtm_connections", &[("state", "unauthenticated")]),
        0.0
    );
    assert_eq!(
        metrics.counter("rtm_auth_total", &[("result", "accepted")]),
        1
    );
    assert_eq!(
        metrics.counter("rtm_auth_total", &[("result", "rejected")]),
        1
    );
    let closed = |code: &str, by: &str| {
        metrics.counter(
            "rtm_connections_closed_total",
            &[("code", code), ("by", by)],
        )
    };
    assert_eq!(closed("4003", "server"), 1);
    assert_eq!(closed("1000", "peer"), 1);

    // The stream ends without a close frame: 1006, by the peer.
    drop(std::mem::replace(&mut accepted.send, unbounded().0));
    ended(&mut accepted).await;
    assert_eq!(closed("1006", "peer"), 1);
    assert_eq!(
        metrics.gauge("rtm_connections", &[("state", "authenticated")]),
        0.0
    );
    assert_eq!(
        metrics
            .samples("rtm_connection_duration_seconds", &[])
            .len(),
        3
    );
}

#[tokio::test]
async fn invocations_are_counted_by_function_and_outcome_with_their_duration() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());
    let mut peer = Peer::open(&server).await;
    assert!(peer.auth("good").await.is_ok());

    assert_eq!(peer.call("1", "ok").await["data"], json!(1));
    assert_eq!(peer.call("2", "ok").await["data"], json!(1));
    assert_eq!(
        peer.call("3", "fail").await["data"]["error"]["code"],
        json!("rtm/bad-request")
    );
    assert_eq!(
        peer.call("4", "boom").await["data"]["error"]["code"],
        json!("rtm/internal")
    );
    assert_eq!(peer.call("5", "slow").await["data"], json!(2));
    assert_eq!(peer.call("6", "limited").await["data"], json!(3));
    assert_eq!(
        peer.call("7", "limited").await["data"]["error"]["code"],
        json!("rtm/too-many-requests")
    );

    let calls = |function: &str, outcome: &str| {
        metrics.counter(
            "rtm_invocations_total",
            &[("function", function), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("ok", "ok"), 2);
    assert_eq!(calls("ok", "error"), 0);
    assert_eq!(calls("fail", "error"), 1);
    assert_eq!(calls("boom", "panic"), 1);
    assert_eq!(calls("slow", "ok"), 1);
    assert_eq!(calls("limited", "ok"), 1);
    assert_eq!(calls("limited", "too_many"), 1);
    assert_eq!(metrics.gauge("rtm_invocations_in_flight", &[]), 0.0);
    // Measured at the connection task's rounds: the slow one took its 50 ms.
    let slow = metrics.samples("rtm_invocation_duration_seconds", &[("function", "slow")]);
    assert_eq!(slow.len(), 1);
    assert!(slow[0] >= 0.045, "{slow:?}");
    assert_eq!(
        metrics
            .samples("rtm_invocation_duration_seconds", &[("function", "ok")])
            .len(),
        2
    );
}

#[tokio::test]
async fn calls_the_connection_answers_itself_are_counted_too() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());
    let mut peer = Peer::open(&server).await;
    // Before auth: rtm/unauthenticated, for a registered name and another.
    assert_eq!(
        peer.call("1", "ok").await["data"]["error"]["code"],
        json!("rtm/unauthenticated")
    );
    assert_eq!(
        peer.call("2", "nobody-has-this").await["data"]["error"]["code"],
        json!("rtm/unauthenticated")
    );
    assert!(peer.auth("good").await.is_ok());
    assert_eq!(
        peer.call("3", "nobody-has-this").await["data"]["error"]["code"],
        json!("rtm/function-not-found")
    );
    // A per-connection rate limit is the connection's own rule.
    assert_eq!(peer.call("4", "once").await["data"], json!(4));
    assert_eq!(
        peer.call("5", "once").await["data"]["error"]["code"],
        json!("rtm/too-many-requests")
    );

    let calls = |function: &str, outcome: &str| {
        metrics.counter(
            "rtm_invocations_total",
            &[("function", function), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("ok", "unauthenticated"), 1);
    assert_eq!(calls("_unknown", "unauthenticated"), 1);
    assert_eq!(calls("_unknown", "not_found"), 1);
    assert_eq!(calls("once", "ok"), 1);
    assert_eq!(calls("once", "too_many"), 1);
    assert_eq!(calls("ok", "ok"), 0);
}

#[tokio::test]
async fn sends_are_counted_with_the_connections_they_reached() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());
    let mut peers = Vec::new();
    for _ in 0..3 {
        let mut peer = Peer::open(&server).await;
        assert!(peer.auth("good").await.is_ok());
        peers.push(peer);
    }
    peers[0].send(json!({"id": "s", "type": "subscribe", "event": "score", "tags": ["m1"]}));
    assert_eq!(peers[0].next().await.unwrap()["data"], json!(true));

    assert_eq!(server.emit("hello", |_| true, &json!(["all"])).unwrap(), 3);
    assert_eq!(server.publish("u", "dm", &json!(["you"])).unwrap(), 3);
    assert_eq!(
        server
            .push("score", &["m1".to_owned()], &json!([1]))
            .unwrap(),
        1
    );
    assert_eq!(server.emit("none", |_| false, &json!([])).unwrap(), 0);

    let sends = |kind: &str| metrics.counter("rtm_sends_total", &[("kind", kind)]);
    let reached = |kind: &str| metrics.counter("rtm_deliveries_total", &[("kind", kind)]);
    assert_eq!((sends("emit"), reached("emit")), (2, 3));
    assert_eq!((sends("publish"), reached("publish")), (1, 3));
    assert_eq!((sends("push"), reached("push")), (1, 1));
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_status() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());
    // A plain GET, not an upgrade: 426.
    let (io, mut client) = tokio::io::duplex(4096);
    let io: BoxIo = Box::new(TokioIo::new(io));
    let accepting = {
        let server = server.clone();
        tokio::spawn(async move { server.accept(io, "127.0.0.1:9".parse().unwrap()).await })
    };
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
    let status = String::from_utf8_lossy(&answer[..12.min(answer.len())]).into_owned();
    assert!(status.starts_with("HTTP/1.1 4"), "{status}");
    let code = &status[9..12];
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), accepting).await;
    assert_eq!(
        metrics.counter("rtm_handshakes_rejected_total", &[("status", code)]),
        1
    );
    assert_eq!(
        metrics.counter("rtm_handshakes_rejected_total", &[("status", "none")]),
        0
    );
}

#[tokio::test]
async fn the_prefix_names_every_metric_and_no_label_comes_from_a_user() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app().metrics_prefix("chat_"));
    let mut peer = Peer::open(&server).await;
    assert!(peer.auth("good").await.is_ok());
    let unregistered = "no-such-function-4711";
    assert_eq!(
        peer.call("1", unregistered).await["data"]["error"]["code"],
        json!("rtm/function-not-found")
    );
    assert_eq!(peer.call("2", "ok").await["data"], json!(1));

    let snapshot = metrics.snapshotter.snapshot().into_vec();
    assert!(!snapshot.is_empty());
    for (key, _, _, _) in &snapshot {
        let key = key.key();
        assert!(key.name().starts_with("chat_"), "{}", key.name());
        for label in key.labels() {
            for user_value in [unregistered, "u", "good"] {
                assert_ne!(label.value(), user_value, "{}", key.name());
            }
        }
    }
}

#[tokio::test]
async fn subscriptions_are_a_gauge_and_subscribes_are_counted_by_result() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let hub = MemoryHub::new();
    let server = start(
        &recorder,
        app()
            .broker(Arc::new(hub.broker()))
            .max_subscriptions_per_user(Some(3))
            .authorize_subscriptions(|request: SubscribeRequest| async move {
                if request.event == "secret" {
                    Err(RtmError::new(rtm_core::ErrorCode::Forbidden, "no"))
                } else {
                    Ok(())
                }
            }),
    );
    let mut stranger = Peer::open(&server).await;
    let mut peer = Peer::open(&server).await;
    assert!(peer.auth("good").await.is_ok());
    let subscribe = |peer: &mut Peer, id: &str, event: &str, tags: &[&str]| {
        peer.send(json!({"id": id, "type": "subscribe", "event": event, "tags": tags}));
    };
    subscribe(&mut peer, "1", "score", &["m1", "m2"]);
    assert_eq!(peer.next().await.unwrap()["data"], json!(true));
    subscribe(&mut peer, "2", "secret", &["x"]);
    assert_eq!(
        peer.next().await.unwrap()["data"]["error"]["code"],
        json!("rtm/forbidden")
    );
    subscribe(&mut peer, "3", "score", &["m3", "m4"]);
    assert_eq!(
        peer.next().await.unwrap()["data"]["error"]["code"],
        json!("rtm/too-many-subscriptions")
    );
    subscribe(&mut stranger, "4", "score", &["m1"]);
    assert_eq!(
        stranger.next().await.unwrap()["data"]["error"]["code"],
        json!("rtm/unauthenticated")
    );
    let result = |r: &str| metrics.counter("rtm_subscribes_total", &[("result", r)]);
    assert_eq!(result("ok"), 1);
    assert_eq!(result("denied"), 1);
    assert_eq!(result("too_many"), 1);
    assert_eq!(result("unauthenticated"), 1);
    assert_eq!(result("broker_unavailable"), 0);
    // Two (event, tag) pairs held; the server needs their two topics and
    // the signed-in user's.
    assert_eq!(metrics.gauge("rtm_subscriptions", &[]), 2.0);
    assert_eq!(metrics.gauge("rtm_broker_topics", &[]), 3.0);

    peer.send(json!({"id": "5", "type": "unsubscribe", "event": "score", "tags": ["m1"]}));
    assert_eq!(peer.next().await.unwrap()["data"], json!(true));
    assert_eq!(metrics.gauge("rtm_subscriptions", &[]), 1.0);
    // The connection's end releases the rest, and the user's topic.
    drop(std::mem::replace(&mut peer.send, unbounded().0));
    ended(&mut peer).await;
    assert_eq!(metrics.gauge("rtm_subscriptions", &[]), 0.0);
    assert_eq!(metrics.gauge("rtm_broker_topics", &[]), 0.0);
}

#[tokio::test]
async fn frames_and_bytes_are_counted_by_direction_and_kind() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let server = start(&recorder, app());
    let mut peer = Peer::open(&server).await;
    let auth = json!({"id": "a", "type": "auth", "data": ["good"]}).to_string();
    let call = json!({"id": "c", "type": "invoke", "function": "ok", "data": []}).to_string();
    peer.send(serde_json::from_str(&auth).unwrap());
    let auth_reply = peer.next().await.unwrap().to_string();
    peer.send(serde_json::from_str(&call).unwrap());
    let call_reply = peer.next().await.unwrap().to_string();
    assert_eq!(server.emit("hello", |_| true, &json!(["all"])).unwrap(), 1);
    let event = peer.next().await.unwrap().to_string();

    assert_eq!(metrics.counter("rtm_frames_received_total", &[]), 2);
    assert_eq!(
        metrics.counter("rtm_received_bytes_total", &[]),
        (auth.len() + call.len()) as u64
    );
    let sent = |kind: &str| metrics.counter("rtm_frames_sent_total", &[("kind", kind)]);
    let bytes = |kind: &str| metrics.counter("rtm_sent_bytes_total", &[("kind", kind)]);
    assert_eq!((sent("reply"), sent("event")), (2, 1));
    // The server's frames are compact JSON, as serde_json writes them here.
    assert_eq!(bytes("reply"), (auth_reply.len() + call_reply.len()) as u64);
    assert_eq!(bytes("event"), event.len() as u64);
}

#[tokio::test]
async fn events_from_another_server_record_their_lag() {
    let recorder = DebuggingRecorder::new();
    let metrics = Recorded::of(&recorder);
    let hub = MemoryHub::new();
    let sender = start(&recorder, app().broker(Arc::new(hub.broker())));
    let receiver = start(&recorder, app().broker(Arc::new(hub.broker())));
    let mut peer = Peer::open(&receiver).await;
    assert!(peer.auth("good").await.is_ok());
    assert_eq!(sender.publish("u", "dm", &json!(["hi"])).unwrap(), 0);
    assert_eq!(peer.next().await.unwrap()["event"], json!("dm"));

    assert_eq!(metrics.counter("rtm_broker_messages_total", &[]), 1);
    assert_eq!(metrics.counter("rtm_broker_deliveries_total", &[]), 1);
    let lag = metrics.samples("rtm_broker_lag_seconds", &[]);
    assert_eq!(lag.len(), 1, "{lag:?}");
    // In-process: well under a second, never negative.
    assert!((0.0..1.0).contains(&lag[0]), "{lag:?}");
}
