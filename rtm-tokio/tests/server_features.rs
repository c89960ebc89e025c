//! Server features over real sockets: lifecycle hooks, panics, Emit filters
//! and Publish across servers sharing a broker. (Graceful shutdown, the
//! connection limit and heartbeats run on every adapter in
//! `conformance/tests/adapter_transport.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{expect_close, invoke, next_json, raw_connect, recv, soon, Ws};
use futures_util::StreamExt;
use rtm_core::broker::MemoryHub;
use rtm_tokio::{
    CallContext, Client, ClientOptions, ConnId, ErrorCode, Identity, Listening, RtmError, Server,
    ServerBuilder, ServerBuilderExt,
};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const NO_ARGS: [u8; 0] = [];

fn options() -> ClientOptions {
    ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(5))
}

async fn listen(builder: ServerBuilder) -> Listening {
    builder.listen("127.0.0.1:0").await.unwrap()
}

/// Reads to the end of a socket whose close frame was already read, so
/// tungstenite answers the close.
async fn finish(mut ws: Ws) {
    soon("the socket to end", async {
        for _ in 0..100 {
            if !matches!(ws.next().await, Some(Ok(_))) {
                return;
            }
        }
        panic!("the socket kept sending after its close");
    })
    .await;
}

#[tokio::test]
async fn lifecycle_hooks_fire_for_connect_disconnect_and_auth_timeout() {
    let (connects, mut connects_rx) = unbounded_channel::<ConnId>();
    let (disconnects, mut disconnects_rx) = unbounded_channel::<ConnId>();
    let (timeouts, mut timeouts_rx) = unbounded_channel::<ConnId>();
    let server = listen(
        Server::builder()
            .auth(|_data, _info| async { Ok(Identity::new("dave", Value::Null)) })
            .auth_timeout(Duration::from_millis(200))
            .on_connect(move |info| {
                let _ = connects.send(info.id);
            })
            .on_disconnect(move |info| {
                let _ = disconnects.send(info.id);
            })
            .on_auth_timeout(move |info| {
                let _ = timeouts.send(info.id);
            }),
    )
    .await;

    // Never authenticates: timed out, closed 4008.
    let mut idle = raw_connect(&server.url()).await;
    let idle_id = recv("on_connect", &mut connects_rx).await;
    assert_eq!(expect_close(&mut idle).await.0, 4008);
    assert_eq!(recv("on_auth_timeout", &mut timeouts_rx).await, idle_id);
    assert_eq!(recv("on_disconnect", &mut disconnects_rx).await, idle_id);
    finish(idle).await;

    // Authenticates, then leaves.
    let client = Client::connect(&server.url(), options().auth(json!("t")))
        .await
        .unwrap();
    let client_id = recv("on_connect", &mut connects_rx).await;
    assert_ne!(client_id, idle_id);
    client.close();
    assert_eq!(recv("on_disconnect", &mut disconnects_rx).await, client_id);
    assert!(
        timeouts_rx.try_recv().is_err(),
        "an authenticated connection timed out"
    );
    assert_eq!(server.handle().connection_count(), 0);
}

#[tokio::test]
async fn a_panicking_function_answers_internal_and_the_server_keeps_serving() {
    let server = listen(
        Server::builder()
            .register("panic_at_once", |_ctx: CallContext, _: Vec<Value>| {
                if std::hint::black_box(true) {
                    panic!("while building the call");
                }
                async { Ok::<_, RtmError>(()) }
            })
            .register("panic_inside", |_ctx: CallContext, _: Vec<Value>| async {
                if std::hint::black_box(true) {
                    panic!("while running the call");
                }
                Ok::<_, RtmError>(())
            })
            .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
                Ok::<_, RtmError>(a + b)
            }),
    )
    .await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    for function in ["panic_at_once", "panic_inside"] {
        let err = soon(function, client.call_wait::<Value, _>(function, &NO_ARGS))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal, "{function}");
    }
    // The same connection, and a new one, are still served.
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    let other = Client::connect(&server.url(), options()).await.unwrap();
    let seven: i64 = soon("add", other.call_wait("add", &(3, 4))).await.unwrap();
    assert_eq!(seven, 7);
    client.close();
    other.close();
}

/// Accepts `{"user": …, "role": …}` as that user with that authentication data.
fn with_roles() -> ServerBuilder {
    Server::builder().auth(|data: Vec<Value>, _info| async move {
        let token = data.into_iter().next().unwrap_or(Value::Null);
        match token["user"].as_str() {
            Some(user) => Ok(Identity::new(user, json!({"role": token["role"]}))),
            None => Err(RtmError::new(ErrorCode::AuthRejected, "no user")),
        }
    })
}

fn collect(client: &Client, event: &str) -> (rtm_tokio::Subscription, UnboundedReceiver<Value>) {
    let (tx, rx) = unbounded_channel();
    let sub = client.subscribe(event, move |(value,): (Value,)| {
        let _ = tx.send(value);
    });
    (sub, rx)
}

#[tokio::test]
async fn emit_filter_selects_by_authentication_data_among_authenticated_connections() {
    let server = listen(with_roles()).await;
    let admin = Client::connect(
        &server.url(),
        options().auth(json!({"user": "ann", "role": "admin"})),
    )
    .await
    .unwrap();
    let member = Client::connect(
        &server.url(),
        options().auth(json!({"user": "bob", "role": "member"})),
    )
    .await
    .unwrap();
    let mut anonymous = raw_connect(&server.url()).await;
    let (_a1, mut admin_notices) = collect(&admin, "notice");
    let (_m1, mut member_notices) = collect(&member, "notice");
    let (_m2, mut member_all) = collect(&member, "everyone");

    let handle = server.handle();
    let sent = handle
        .emit(
            "notice",
            |info| info.authentication()["role"] == "admin",
            &("for admins",),
        )
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(
        recv("the admin notice", &mut admin_notices).await,
        "for admins"
    );

    // Unauthenticated connections are never candidates.
    assert_eq!(handle.emit("everyone", |_| true, &("all",)).unwrap(), 2);
    assert_eq!(recv("the event for all", &mut member_all).await, "all");
    assert!(
        member_notices.try_recv().is_err(),
        "the filter let a member through"
    );
    // The anonymous socket's first frame is the reply to its request: no event came before.
    invoke(&mut anonymous, "1", "anything", json!([])).await;
    let reply = next_json(&mut anonymous).await;
    assert_eq!(reply["data"]["error"]["code"], "rtm/unauthenticated");
    admin.close();
    member.close();
}

/// Yields until `condition` holds (state with no event to await), loudly bounded.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::SOON;
    for _ in 0..1_000_000 {
        if condition() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting for {what}");
}

async fn connect_as(server: &Listening, user: &str) -> Client {
    Client::connect(&server.url(), options().auth(json!({"user": user})))
        .await
        .unwrap()
}

/// Collects `dm` and `marker` events of one connection in order.
fn inbox(client: &Client) -> (Vec<rtm_tokio::Subscription>, UnboundedReceiver<String>) {
    let (tx, rx) = unbounded_channel();
    let subs = ["dm", "marker", "sync"]
        .into_iter()
        .map(|event| {
            let tx: UnboundedSender<String> = tx.clone();
            client.subscribe(event, move |(text,): (String,)| {
                let _ = tx.send(format!("{event}:{text}"));
            })
        })
        .collect();
    (subs, rx)
}

/// Receives until both markers came; returns everything received.
async fn until_markers(rx: &mut UnboundedReceiver<String>) -> Vec<String> {
    let mut got = Vec::new();
    while !(got.iter().any(|e| e == "marker:a") && got.iter().any(|e| e == "marker:b")) {
        got.push(recv("events up to both markers", rx).await);
        assert!(got.len() < 20, "too many events: {got:?}");
    }
    got
}

#[tokio::test]
async fn publish_across_two_servers_sharing_a_broker_reaches_each_connection_once() {
    let hub = MemoryHub::new();
    let a = listen(with_roles().server_id("a").broker(Arc::new(hub.broker()))).await;
    let b = listen(with_roles().server_id("b").broker(Arc::new(hub.broker()))).await;
    let topic = rtm_core::Topic::user("rtm", "alice");

    let alice_a = connect_as(&a, "alice").await;
    // The broker has no event for "subscribed"; only A holds alice so far.
    until("A's subscription to alice", || {
        hub.topics().contains(&topic)
    })
    .await;
    let alice_b1 = connect_as(&b, "alice").await;
    let alice_b2 = connect_as(&b, "alice").await;
    let bob_a = connect_as(&a, "bob").await;
    let (_s1, mut in_a) = inbox(&alice_a);
    let (_s2, mut in_b1) = inbox(&alice_b1);
    let (_s3, mut in_b2) = inbox(&alice_b2);
    let (_s4, mut in_bob) = inbox(&bob_a);

    // B's broker commands run in order: once B's publish reaches A, B's
    // subscription (sent before it) is in place.
    assert_eq!(b.handle().publish("alice", "sync", &("b",)).unwrap(), 2);
    assert_eq!(recv("B's sync at A", &mut in_a).await, "sync:b");
    assert_eq!(recv("B's sync at B1", &mut in_b1).await, "sync:b");
    assert_eq!(recv("B's sync at B2", &mut in_b2).await, "sync:b");

    assert_eq!(a.handle().publish("alice", "dm", &("hi",)).unwrap(), 1);
    assert_eq!(recv("the dm at B1", &mut in_b1).await, "dm:hi");
    assert_eq!(recv("the dm at B2", &mut in_b2).await, "dm:hi");
    // Markers from both sides, after the dm: any duplicate of the dm would
    // be delivered before the marker that travels the same way.
    b.handle().publish("alice", "marker", &("b",)).unwrap();
    a.handle().publish("alice", "marker", &("a",)).unwrap();

    let at_a = until_markers(&mut in_a).await;
    assert_eq!(
        at_a.iter().filter(|e| *e == "dm:hi").count(),
        1,
        "A: {at_a:?}"
    );
    for (name, rx) in [("B1", &mut in_b1), ("B2", &mut in_b2)] {
        let rest = until_markers(rx).await;
        assert!(
            !rest.iter().any(|e| e == "dm:hi"),
            "{name} got the dm twice: {rest:?}"
        );
    }
    // Bob, on the publishing server, got nothing meant for alice.
    assert_eq!(a.handle().emit("marker", |_| true, &("end",)).unwrap(), 2);
    assert_eq!(recv("bob's marker", &mut in_bob).await, "marker:end");
    for client in [alice_a, alice_b1, alice_b2, bob_a] {
        client.close();
    }
}
