//! Server features between our Client and Server, on every adapter (tokio,
//! async-std, smol): authentication timeouts and the lifecycle hooks, Emit
//! filters, Push by tag, Publish across servers sharing a broker, panicking
//! functions, and the offline queue's bound. More of the client in
//! `adapter_client.rs`.

use std::sync::Arc;
use std::time::Duration;

use conformance::adapter::{recv, soon, until, Adapter};
use conformance::on_every_adapter;
use conformance::raw_ws::{expect_close, finish, invoke, next_json, raw_connect};
use rtm_core::{ConnId, ConnInfo, ErrorCode, Identity, RtmError, Topic};
use rtm_driver::broker::MemoryHub;
use rtm_driver::{
    CallContext, ClientHandle, ClientOptions, Listening, ServerBuilder, Subscription,
};
use serde_json::{json, Value};

/// No arguments: `data: []`.
const NO_ARGS: [u8; 0] = [];

fn options() -> ClientOptions {
    ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(5))
}

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

async fn connect(adapter: Adapter, server: &Listening, options: ClientOptions) -> ClientHandle {
    soon("connect", adapter.connect(&server.url(), options))
        .await
        .unwrap()
}

/// `add(a, b)` and `note(text)` (reported on `notes`).
fn arithmetic(notes: async_channel::Sender<String>) -> ServerBuilder {
    ServerBuilder::new()
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .register("note", move |_ctx: CallContext, (text,): (String,)| {
            let notes = notes.clone();
            async move {
                let _ = notes.send(text).await;
                Ok::<_, RtmError>(())
            }
        })
}

/// Accepts `{"user": …, "role": …}` as that user with that authentication data.
fn with_roles() -> ServerBuilder {
    arithmetic(async_channel::unbounded().0)
        .auth(|_info, data: Vec<Value>| async move {
            let token = data.into_iter().next().unwrap_or(Value::Null);
            match token["user"].as_str() {
                Some(user) => Ok(Identity::new(user, json!({"role": token["role"]}))),
                None => Err(RtmError::new(ErrorCode::AuthRejected, "no user")),
            }
        })
        .register("whoami", |ctx: CallContext| async move {
            Ok::<_, RtmError>(ctx.user_id().map(str::to_owned))
        })
}

fn collect(client: &ClientHandle, event: &str) -> (Subscription, async_channel::Receiver<Value>) {
    let (tx, rx) = async_channel::unbounded();
    let sub = client.subscribe(event, move |(value,): (Value,)| {
        let _ = tx.try_send(value);
    });
    (sub, rx)
}

async fn an_unauthenticated_connection_is_closed_4008_after_the_auth_timeout(adapter: Adapter) {
    let server = listen(
        adapter,
        with_roles().auth_timeout(Duration::from_millis(200)),
    )
    .await;
    let mut silent = raw_connect(&server.url()).await;
    assert_eq!(expect_close(&mut silent).await.0, 4008);
    soon("shutdown", server.shutdown()).await;
}

/// `on_connect`, `on_auth_timeout` and `on_disconnect` fire with the
/// connection's id: a connection that never authenticates is timed out
/// (4008); one that authenticates and leaves only connects and disconnects.
async fn lifecycle_hooks_fire_for_connect_disconnect_and_auth_timeout(adapter: Adapter) {
    let (connects, connects_rx) = async_channel::unbounded::<ConnId>();
    let (disconnects, disconnects_rx) = async_channel::unbounded::<ConnId>();
    let (timeouts, timeouts_rx) = async_channel::unbounded::<ConnId>();
    let builder = with_roles()
        .auth_timeout(Duration::from_millis(200))
        .on_connect(move |info| {
            let _ = connects.try_send(info.id);
        })
        .on_disconnect(move |info| {
            let _ = disconnects.try_send(info.id);
        })
        .on_auth_timeout(move |info| {
            let _ = timeouts.try_send(info.id);
        });
    let server = listen(adapter, builder).await;

    // Never authenticates: timed out, closed 4008.
    let mut idle = raw_connect(&server.url()).await;
    let idle_id = recv("on_connect", &connects_rx).await;
    assert_eq!(expect_close(&mut idle).await.0, 4008);
    assert_eq!(recv("on_auth_timeout", &timeouts_rx).await, idle_id);
    assert_eq!(recv("on_disconnect", &disconnects_rx).await, idle_id);
    finish(idle).await;

    // Authenticates, then leaves.
    let client = connect(adapter, &server, options().auth(json!({"user": "dave"}))).await;
    let client_id = recv("on_connect", &connects_rx).await;
    assert_ne!(client_id, idle_id);
    client.close();
    assert_eq!(recv("on_disconnect", &disconnects_rx).await, client_id);
    assert!(
        timeouts_rx.try_recv().is_err(),
        "an authenticated connection timed out"
    );
    assert_eq!(server.handle().connection_count(), 0);
    soon("shutdown", server.shutdown()).await;
}

async fn emit_with_a_filter_reaches_only_matching_connections(adapter: Adapter) {
    let server = listen(adapter, with_roles()).await;
    let admin_auth = json!({"user": "ann", "role": "admin"});
    let admin = connect(adapter, &server, options().auth(admin_auth)).await;
    let member_auth = json!({"user": "bob", "role": "member"});
    let member = connect(adapter, &server, options().auth(member_auth)).await;
    let mut anonymous = raw_connect(&server.url()).await;
    let (_a, admin_notices) = collect(&admin, "notice");
    let (_m, member_notices) = collect(&member, "notice");
    let (_m2, member_all) = collect(&member, "everyone");

    let handle = server.handle();
    // The anonymous handshake can finish before the server holds it: only
    // once it does do the emits below show that it is no candidate.
    until("the server to hold all three", || {
        handle.connection_count() == 3
    })
    .await;
    let admins_only = |info: &ConnInfo| info.authentication()["role"] == "admin";
    let sent = handle
        .emit("notice", admins_only, &("for admins",))
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(recv("the admin notice", &admin_notices).await, "for admins");

    // Unauthenticated connections are never candidates.
    assert_eq!(handle.emit("everyone", |_| true, &("all",)).unwrap(), 2);
    assert_eq!(recv("the event for all", &member_all).await, "all");
    // Events reach a connection in order: the notice would have come first.
    assert!(
        member_notices.try_recv().is_err(),
        "the filter let a member through"
    );
    // The anonymous socket's first frame is the reply to its request: no
    // event came before.
    invoke(&mut anonymous, "1", "add", json!([1, 2])).await;
    let reply = next_json(&mut anonymous).await;
    assert_eq!(reply["data"]["error"]["code"], "rtm/unauthenticated");
    admin.close();
    member.close();
    // Gone, the raw peer needs no close grace (2 s) at shutdown.
    drop(anonymous);
    soon("shutdown", server.shutdown()).await;
}

async fn push_reaches_a_subscription_with_a_matching_tag_only(adapter: Adapter) {
    let server = listen(adapter, arithmetic(async_channel::unbounded().0)).await;
    let client = connect(adapter, &server, options()).await;
    let (scores, scores_rx) = async_channel::unbounded();
    let _sub = soon(
        "subscribe_push",
        client.subscribe_push("score", &["match-7"], move |(score,): (u32,)| {
            let _ = scores.try_send(score);
        }),
    )
    .await
    .unwrap();
    let handle = server.handle();
    assert_eq!(handle.push("score", &["match-8".into()], &(0,)).unwrap(), 0);
    assert_eq!(handle.push("score", &["match-7".into()], &(1,)).unwrap(), 1);
    assert_eq!(recv("the push", &scores_rx).await, 1);
    assert!(scores_rx.try_recv().is_err(), "another tag's push arrived");
    client.close();
    soon("shutdown", server.shutdown()).await;
}

/// A function that panics, while building its future or while running it,
/// answers `rtm/internal`; the connection and the server go on serving.
async fn a_panicking_function_answers_internal_and_the_server_keeps_serving(adapter: Adapter) {
    let builder = arithmetic(async_channel::unbounded().0)
        .register("panic_at_once", |_ctx: CallContext| {
            if std::hint::black_box(true) {
                panic!("while building the call");
            }
            async { Ok::<_, RtmError>(()) }
        })
        .register("panic_inside", |_ctx: CallContext| async {
            if std::hint::black_box(true) {
                panic!("while running the call");
            }
            Ok::<_, RtmError>(())
        });
    let server = listen(adapter, builder).await;
    let client = connect(adapter, &server, options()).await;
    for function in ["panic_at_once", "panic_inside"] {
        let err = soon(function, client.call_wait::<Value, _>(function, &NO_ARGS))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal, "{function}");
    }
    // The same connection, and a new one, are still served.
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    let other = connect(adapter, &server, options()).await;
    let seven: i64 = soon("add", other.call_wait("add", &(3, 4))).await.unwrap();
    assert_eq!(seven, 7);
    client.close();
    other.close();
    soon("shutdown", server.shutdown()).await;
}

/// Every closure shape `register` takes is served: no arguments (with and
/// without the context), typed arguments, the application's state (alone
/// and with arguments), raw JSON; the caller's identity answers
/// `rtm/unauthenticated` by itself; a state of a type the server was not
/// given is `rtm/internal` naming the type; arguments of the wrong type are
/// `rtm/bad-request` naming the argument.
async fn every_handler_shape_is_served(adapter: Adapter) {
    use rtm_driver::State;
    use std::sync::atomic::{AtomicU64, Ordering};
    type Counter = Arc<AtomicU64>;
    let builder = arithmetic(async_channel::unbounded().0)
        .with_state(Counter::default())
        .register("answer", || async { Ok::<_, RtmError>(42) })
        .register("whoami", |ctx: CallContext| async move {
            Ok::<_, RtmError>(ctx.caller()?.user_id.to_string())
        })
        .register(
            "count",
            |_ctx: CallContext, State(n): State<Counter>| async move {
                Ok::<_, RtmError>(n.fetch_add(1, Ordering::SeqCst) + 1)
            },
        )
        .register(
            "add_to",
            |_ctx: CallContext, State(n): State<Counter>, (k,): (u64,)| async move {
                Ok::<_, RtmError>(n.fetch_add(k, Ordering::SeqCst) + k)
            },
        )
        .register(
            "no_such_state",
            |_ctx: CallContext, State(s): State<String>| async move { Ok::<_, RtmError>(s) },
        )
        .register(
            "first",
            |_ctx: CallContext, args: rtm_core::Args| async move {
                let values: Vec<&serde_json::value::RawValue> =
                    serde_json::from_str(args.as_str())?;
                let first = values.first().map_or("null", |v| v.get());
                Ok::<_, RtmError>(serde_json::value::RawValue::from_string(first.to_owned())?)
            },
        );
    let server = listen(adapter, builder).await;
    let client = connect(adapter, &server, options()).await;
    let call = |function: &'static str, data: Value| {
        let client = client.clone();
        async move { soon(function, client.call_wait::<Value, _>(function, &data)).await }
    };
    assert_eq!(call("answer", json!([])).await.unwrap(), json!(42));
    assert_eq!(call("answer", json!(["ignored"])).await.unwrap(), json!(42));
    assert_eq!(call("count", json!([])).await.unwrap(), json!(1));
    assert_eq!(call("add_to", json!([10])).await.unwrap(), json!(11));
    let state = server.handle().state::<Counter>().unwrap();
    assert_eq!(
        state.load(Ordering::SeqCst),
        11,
        "the handle sees the same state"
    );
    assert_eq!(
        call("first", json!([{"b": 1, "a": [2]}, 3])).await.unwrap(),
        json!({"b": 1, "a": [2]})
    );

    let err = call("whoami", json!([])).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    let err = call("no_such_state", json!([])).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(
        err.message.contains("alloc::string::String"),
        "{}",
        err.message
    );
    let err = call("add_to", json!(["ten"])).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(
        err.message.contains("argument 1 of 1: invalid type"),
        "{}",
        err.message
    );
    client.close();
    soon("shutdown", server.shutdown()).await;
}

/// A typed auth handler: `data` that does not deserialize as its argument
/// type is rejected (4003) naming the argument, before the handler runs.
async fn auth_data_of_the_wrong_type_is_rejected_naming_the_argument(adapter: Adapter) {
    let builder = ServerBuilder::new()
        .auth(|_info, (user,): (String,)| async move { Ok(Identity::new(user, Value::Null)) });
    let server = listen(adapter, builder).await;
    let mut ws = raw_connect(&server.url()).await;
    conformance::raw_ws::send_json(&mut ws, json!({"type": "auth", "id": "a1", "data": [5]})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], "a1");
    assert_eq!(reply["error"]["code"], "rtm/auth-rejected", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("argument 1 of 1: invalid type"), "{reply}");
    assert_eq!(expect_close(&mut ws).await.0, 4003);
    // The right type is accepted.
    let mut ws = raw_connect(&server.url()).await;
    conformance::raw_ws::send_json(
        &mut ws,
        json!({"type": "auth", "id": "a2", "data": ["ann"]}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["data"], json!(true), "{reply}");
    drop(ws);
    soon("shutdown", server.shutdown()).await;
}

async fn connect_as(adapter: Adapter, server: &Listening, user: &str) -> ClientHandle {
    connect(adapter, server, options().auth(json!({"user": user}))).await
}

/// Collects the `dm`, `marker` and `sync` events of one connection in order,
/// as `event:text`.
fn inbox(client: &ClientHandle) -> (Vec<Subscription>, async_channel::Receiver<String>) {
    let (tx, rx) = async_channel::unbounded();
    let subs = ["dm", "marker", "sync"]
        .into_iter()
        .map(|event| {
            let tx = tx.clone();
            client.subscribe(event, move |(text,): (String,)| {
                let _ = tx.try_send(format!("{event}:{text}"));
            })
        })
        .collect();
    (subs, rx)
}

/// Receives until both markers came; returns everything received.
async fn until_markers(rx: &async_channel::Receiver<String>) -> Vec<String> {
    let mut got = Vec::new();
    while !(got.iter().any(|e| e == "marker:a") && got.iter().any(|e| e == "marker:b")) {
        got.push(recv("events up to both markers", rx).await);
        assert!(got.len() < 20, "too many events: {got:?}");
    }
    got
}

/// Publish to a user from either of two servers sharing a broker reaches
/// each of the user's connections, on both servers, exactly once, and no
/// one else.
async fn publish_across_two_servers_sharing_a_broker_reaches_each_connection_once(
    adapter: Adapter,
) {
    let hub = MemoryHub::new();
    let on_hub = |id: &str| with_roles().server_id(id).broker(Arc::new(hub.broker()));
    let a = listen(adapter, on_hub("a")).await;
    let b = listen(adapter, on_hub("b")).await;
    let topic = Topic::user("rtm", "alice");

    let alice_a = connect_as(adapter, &a, "alice").await;
    // The broker has no event for "subscribed"; only A holds alice so far.
    until("A's subscription to alice", || {
        hub.topics().contains(&topic)
    })
    .await;
    let alice_b1 = connect_as(adapter, &b, "alice").await;
    let alice_b2 = connect_as(adapter, &b, "alice").await;
    let bob_a = connect_as(adapter, &a, "bob").await;
    let (_s1, in_a) = inbox(&alice_a);
    let (_s2, in_b1) = inbox(&alice_b1);
    let (_s3, in_b2) = inbox(&alice_b2);
    let (_s4, in_bob) = inbox(&bob_a);

    // B's broker commands run in order: once B's publish reaches A, B's
    // subscription (sent before it) is in place.
    assert_eq!(b.handle().publish("alice", "sync", &("b",)).unwrap(), 2);
    assert_eq!(recv("B's sync at A", &in_a).await, "sync:b");
    assert_eq!(recv("B's sync at B1", &in_b1).await, "sync:b");
    assert_eq!(recv("B's sync at B2", &in_b2).await, "sync:b");

    assert_eq!(a.handle().publish("alice", "dm", &("hi",)).unwrap(), 1);
    assert_eq!(recv("the dm at B1", &in_b1).await, "dm:hi");
    assert_eq!(recv("the dm at B2", &in_b2).await, "dm:hi");
    // Markers from both sides, after the dm: any duplicate of the dm would
    // be delivered before the marker that travels the same way.
    b.handle().publish("alice", "marker", &("b",)).unwrap();
    a.handle().publish("alice", "marker", &("a",)).unwrap();

    let at_a = until_markers(&in_a).await;
    let dms = at_a.iter().filter(|e| *e == "dm:hi").count();
    assert_eq!(dms, 1, "A: {at_a:?}");
    for (name, rx) in [("B1", &in_b1), ("B2", &in_b2)] {
        let rest = until_markers(rx).await;
        assert!(
            !rest.iter().any(|e| e == "dm:hi"),
            "{name} got the dm twice: {rest:?}"
        );
    }
    // Bob, on the publishing server, got nothing meant for alice.
    assert_eq!(a.handle().emit("marker", |_| true, &("end",)).unwrap(), 2);
    assert_eq!(recv("bob's marker", &in_bob).await, "marker:end");
    for client in [alice_a, alice_b1, alice_b2, bob_a] {
        client.close();
    }
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

/// An address nothing listens on (bound, then released).
fn dead_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Offline, a client queues up to `offline_queue` calls and refuses one more
/// with `rtm/queue-full`; closing fails what is still queued.
async fn offline_queue_accepts_its_bound_and_refuses_one_more_with_queue_full(adapter: Adapter) {
    const BOUND: usize = 4;
    let url = format!("ws://{}/", dead_address());
    let client = adapter.start(&url, options().offline_queue(BOUND));
    for n in 0..BOUND - 1 {
        soon("a queued call", client.call("note", &(n,)))
            .await
            .unwrap();
    }
    // The last slot goes to a call that waits for its reply.
    let mut last = Box::pin(client.call_wait::<Value, _>("note", &(BOUND,)));
    assert!(futures_util::poll!(last.as_mut()).is_pending());

    let err = soon("call over the bound", client.call("note", &(99,)))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::QueueFull);
    let err = soon(
        "call_wait over the bound",
        client.call_wait::<Value, _>("note", &(99,)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::QueueFull);

    client.close();
    assert_eq!(
        soon("the queued call", last).await.unwrap_err().code,
        ErrorCode::Closed
    );
}

on_every_adapter!(
    offline_queue_accepts_its_bound_and_refuses_one_more_with_queue_full,
    an_unauthenticated_connection_is_closed_4008_after_the_auth_timeout,
    lifecycle_hooks_fire_for_connect_disconnect_and_auth_timeout,
    emit_with_a_filter_reaches_only_matching_connections,
    push_reaches_a_subscription_with_a_matching_tag_only,
    publish_across_two_servers_sharing_a_broker_reaches_each_connection_once,
    a_panicking_function_answers_internal_and_the_server_keeps_serving,
    every_handler_shape_is_served,
    auth_data_of_the_wrong_type_is_rejected_naming_the_argument,
);
