//! Authentication timeouts, Emit filters, Push by tag and the offline
//! queue's bound between our Client and Server, on every adapter (tokio,
//! async-std, smol). More of the client in `adapter_client.rs`.

mod raw_ws;

use std::time::Duration;

use conformance::adapter::{recv, soon, Adapter};
use conformance::on_every_adapter;
use raw_ws::{expect_close, invoke, next_json, raw_connect};
use rtm_core::{ConnInfo, ErrorCode, Identity, RtmError};
use rtm_driver::{
    CallContext, ClientHandle, ClientOptions, Listening, ServerBuilder, Subscription,
};
use serde_json::{json, Value};

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
        .auth(|data: Vec<Value>, _info| async move {
            let token = data.into_iter().next().unwrap_or(Value::Null);
            match token["user"].as_str() {
                Some(user) => Ok(Identity::new(user, json!({"role": token["role"]}))),
                None => Err(RtmError::new(ErrorCode::AuthRejected, "no user")),
            }
        })
        .register("whoami", |ctx: CallContext, _: Vec<Value>| async move {
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
    invoke(&mut anonymous, "1", "add", json!([1, 2])).await;
    let reply = next_json(&mut anonymous).await;
    assert_eq!(reply["data"]["error"]["code"], "rtm/unauthenticated");
    admin.close();
    member.close();
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
    emit_with_a_filter_reaches_only_matching_connections,
    push_reaches_a_subscription_with_a_matching_tag_only,
);
