//! Our Client against a real server, on every adapter (tokio, async-std,
//! smol): calls, errors, timeouts, events, push subscriptions, auth, the
//! offline queue and close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{unbounded, Receiver, Sender};
use conformance::adapter::{recv, recv_n, soon, until, Adapter};
use conformance::on_every_adapter;
use futures_util::poll;
use rtm_core::{ClientState, ErrorCode, Identity, RtmError};
use rtm_driver::{
    CallContext, ClientHandle, ClientOptions, Listening, ServerBuilder, SubscribeRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sum {
    total: i64,
    terms: usize,
}

/// No arguments: `data: []` (`()` would serialize as `null`, which is not an array).
const NO_ARGS: [u8; 0] = [];

fn options() -> ClientOptions {
    ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(5))
}

fn arithmetic() -> ServerBuilder {
    ServerBuilder::new()
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        })
        .register(
            "sum",
            |_ctx: CallContext, (terms,): (Vec<i64>,)| async move {
                Ok::<_, RtmError>(Sum {
                    total: terms.iter().sum(),
                    terms: terms.len(),
                })
            },
        )
}

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

/// A function that reports it started, then never finishes.
fn hang(started: Sender<()>) -> ServerBuilder {
    arithmetic().register("hang", move |_ctx: CallContext| {
        let _ = started.try_send(());
        async move {
            std::future::pending::<()>().await;
            Ok::<_, RtmError>(())
        }
    })
}

async fn call_wait_returns_the_typed_result(adapter: Adapter) {
    let server = listen(adapter, arithmetic()).await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    let sum: Sum = soon("sum", client.call_wait("sum", &(vec![1, 2, 3],)))
        .await
        .unwrap();
    assert_eq!(sum, Sum { total: 6, terms: 3 });
    // A result that does not fit the asked type is an error, not a panic.
    let wrong: Result<String, _> = soon("add as string", client.call_wait("add", &(1, 2))).await;
    assert!(wrong.is_err());
    client.close();
}

async fn call_without_waiting_reaches_the_server(adapter: Adapter) {
    let (seen, seen_rx) = unbounded();
    let server = listen(
        adapter,
        ServerBuilder::new().register("note", move |_ctx: CallContext, (text,): (String,)| {
            let seen = seen.clone();
            async move {
                let _ = seen.try_send(text);
                Ok::<_, RtmError>(())
            }
        }),
    )
    .await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    soon("call", client.call("note", &("written",)))
        .await
        .unwrap();
    assert_eq!(recv("the note", &seen_rx).await, "written");
    client.close();
}

async fn server_errors_fail_call_wait_with_their_wire_code(adapter: Adapter) {
    let server = listen(
        adapter,
        ServerBuilder::new()
            .register("refuse", |_ctx: CallContext| async move {
                Err::<(), _>("out of stock")
            })
            .register("custom", |_ctx: CallContext| async move {
                Err::<(), _>(RtmError::new(
                    ErrorCode::Other("shop/closed".into()),
                    "come back tomorrow",
                ))
            }),
    )
    .await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();

    let err = soon("refuse", client.call_wait::<Value, _>("refuse", &NO_ARGS))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HandlerError);
    assert_eq!(err.message, "out of stock");

    let err = soon("missing", client.call_wait::<Value, _>("missing", &NO_ARGS))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FunctionNotFound);

    let err = soon("custom", client.call_wait::<Value, _>("custom", &NO_ARGS))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Other("shop/closed".into()));
    assert_eq!(err.code.as_str(), "shop/closed");
    assert_eq!(err.message, "come back tomorrow");
    client.close();
}

async fn call_without_reply_within_the_call_timeout_fails_with_timeout(adapter: Adapter) {
    let (started, started_rx) = unbounded();
    let server = listen(adapter, hang(started)).await;
    let client = adapter
        .connect(
            &server.url(),
            options().call_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let err = soon(
        "the call timeout",
        client.call_wait::<Value, _>("hang", &NO_ARGS),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout);
    recv("the function to have run", &started_rx).await;
    // The connection is still usable.
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    client.close();
}

async fn subscribe_gets_events_and_dropping_the_guard_unsubscribes(adapter: Adapter) {
    let server = listen(adapter, ServerBuilder::new()).await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    // Without auth nothing from the server marks the open: the client may be
    // open before the server holds the connection.
    until("the server to hold the connection", || {
        server.handle().connection_count() == 1
    })
    .await;
    let (alerts, alerts_rx) = unbounded();
    let (markers, markers_rx) = unbounded();
    let alert = client.subscribe("alert", move |(text, n): (String, u32)| {
        let _ = alerts.try_send((text, n));
    });
    let _marker = client.subscribe("marker", move |(n,): (u32,)| {
        let _ = markers.try_send(n);
    });

    let handle = server.handle();
    assert_eq!(handle.emit("alert", |_| true, &("hello", 1)).unwrap(), 1);
    assert_eq!(
        recv("the first alert", &alerts_rx).await,
        ("hello".to_owned(), 1)
    );

    drop(alert);
    handle.emit("alert", |_| true, &("again", 2)).unwrap();
    handle.emit("marker", |_| true, &(1,)).unwrap();
    // Events arrive in order: once the marker is here, the second alert was
    // dispatched too, to no one.
    assert_eq!(recv("the marker", &markers_rx).await, 1);
    assert!(
        alerts_rx.try_recv().is_err(),
        "a dropped subscription got an event"
    );
    client.close();
}

async fn subscribe_push_is_allowed_or_forbidden_by_the_authorizer(adapter: Adapter) {
    let server = listen(
        adapter,
        arithmetic().authorize_subscriptions(|req: SubscribeRequest| async move {
            req.tags.iter().all(|t| t.starts_with("public-"))
        }),
    )
    .await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    let (scores, scores_rx) = unbounded();
    let sub = soon(
        "an allowed subscription",
        client.subscribe_push("score", &["public-7"], move |(score,): (u32,)| {
            let _ = scores.try_send(score);
        }),
    )
    .await
    .unwrap();

    let handle = server.handle();
    let tags = ["public-7".to_owned()];
    assert_eq!(handle.push("score", &tags, &(3,)).unwrap(), 1);
    assert_eq!(recv("the pushed score", &scores_rx).await, 3);

    let denied = soon(
        "a denied subscription",
        client.subscribe_push("score", &["secret"], |(_,): (u32,)| {}),
    )
    .await;
    assert_eq!(denied.err().map(|e| e.code), Some(ErrorCode::Forbidden));

    // Dropping the guard tells the server; a call after it is answered after
    // the server handled the unsubscribe (frames are read in order).
    drop(sub);
    let _: i64 = soon("add", client.call_wait("add", &(1, 1))).await.unwrap();
    assert_eq!(handle.push("score", &tags, &(4,)).unwrap(), 0);
    client.close();
}

/// A server whose auth handler accepts the token "letmein" as user "alice",
/// and reports every call.
fn authenticated(calls: Sender<Value>) -> ServerBuilder {
    arithmetic()
        .auth(move |_info, data: Vec<Value>| {
            let calls = calls.clone();
            async move {
                let token = data.first().cloned().unwrap_or(Value::Null);
                let _ = calls.try_send(token.clone());
                if token == json!("letmein") {
                    Ok(Identity::new("alice", json!({"role": "admin"})))
                } else {
                    Err(RtmError::new(ErrorCode::AuthRejected, "bad token"))
                }
            }
        })
        .register("whoami", |ctx: CallContext| async move {
            Ok::<_, RtmError>(ctx.user_id().map(str::to_owned))
        })
}

async fn accepted_auth_opens_the_client_with_its_identity(adapter: Adapter) {
    let (calls, calls_rx) = unbounded();
    let server = listen(adapter, authenticated(calls)).await;
    let client = adapter
        .connect(&server.url(), options().auth(json!("letmein")))
        .await
        .unwrap();
    assert_eq!(client.state(), ClientState::Open);
    soon("wait_open", client.wait_open(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(recv("the auth call", &calls_rx).await, json!("letmein"));
    let me: Option<String> = soon("whoami", client.call_wait("whoami", &NO_ARGS))
        .await
        .unwrap();
    assert_eq!(me.as_deref(), Some("alice"));
    client.close();
}

async fn wait_open_after_a_rejection_already_happened_still_says_auth_rejected(adapter: Adapter) {
    let (calls, _calls_rx) = unbounded();
    let server = listen(adapter, authenticated(calls)).await;
    let client = adapter.start(&server.url(), options().auth(json!("wrong")));
    // The rejection and the close happen before anyone waits for them.
    soon("the client to close", async {
        while client.state() != ClientState::Closed {
            async_io::Timer::after(Duration::from_millis(2)).await;
        }
    })
    .await;
    let err = soon("wait_open", client.wait_open(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthRejected);
}

async fn rejected_auth_fails_connect_with_auth_rejected_and_does_not_reconnect(adapter: Adapter) {
    let (calls, calls_rx) = unbounded();
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let server = listen(
        adapter,
        authenticated(calls).on_connect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await;
    let reconnect = Duration::from_millis(20);
    let err = adapter
        .connect(
            &server.url(),
            options().auth(json!("wrong")).reconnect_delay(reconnect),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::AuthRejected);
    assert_eq!(recv("the auth call", &calls_rx).await, json!("wrong"));

    // The same through `start`: the client ends Closed and refuses calls.
    let client = adapter.start(
        &server.url(),
        options().auth(json!("wrong")).reconnect_delay(reconnect),
    );
    let err = soon("wait_open", client.wait_open(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthRejected);
    assert_eq!(client.state(), ClientState::Closed);
    let after = soon(
        "a call after rejection",
        client.call_wait::<i64, _>("add", &(1, 2)),
    )
    .await;
    assert_eq!(after.unwrap_err().code, ErrorCode::Closed);
    recv("the second auth call", &calls_rx).await;

    // Proving an absence needs some time to pass: ten reconnect delays.
    async_io::Timer::after(reconnect * 10).await;
    assert_eq!(
        connects.load(Ordering::SeqCst),
        2,
        "a rejected client reconnected"
    );
    assert!(
        calls_rx.try_recv().is_err(),
        "a rejected client authenticated again"
    );
}

/// A server URL no retry can fix fails `connect` at once with
/// `rtm/bad-request`, long before the connect timeout, and fails the calls
/// queued on a started client with the same error.
async fn a_url_that_is_not_ws_fails_at_once_with_bad_request(adapter: Adapter) {
    let patient = options().connect_timeout(Duration::from_secs(60));
    for url in [
        "http://127.0.0.1:7070/",
        "ftp://127.0.0.1:7070/",
        "ws://",
        "ws:///no-host",
        "not a url",
        "",
    ] {
        let err = soon(url, adapter.connect(url, patient.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{url:?} connected"));
        assert_eq!(err.code, ErrorCode::BadRequest, "{url:?}: {err}");
        assert!(err.message.contains(url), "{url:?}: {err}");
    }
    // A call on a started client fails with the reason, whether it was queued
    // before the attempt (`rtm/bad-request`) or made after it (`rtm/closed`).
    let client = adapter.start("http://127.0.0.1:7070/", patient);
    let call = soon("a call", client.call_wait::<i64, _>("add", &(1, 2))).await;
    let err = call.unwrap_err();
    assert!(
        [ErrorCode::BadRequest, ErrorCode::Closed].contains(&err.code),
        "{err}"
    );
    assert!(err.message.contains("only ws:// and wss://"), "{err}");
    assert_eq!(client.state(), ClientState::Closed);
}

/// A client that gives up (no reconnect) or runs out of time says why its
/// last attempt failed, not just that it is closed or late.
async fn a_client_that_never_opens_says_why_its_last_attempt_failed(adapter: Adapter) {
    // Port 1 (tcpmux): nothing listens there on a test machine, and no test
    // can be handed it, as it is outside the ephemeral range.
    let url = "ws://127.0.0.1:1/";
    let give_up = options().reconnect_delay(Duration::ZERO);
    let err = soon("connect", adapter.connect(url, give_up))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Closed, "{err}");
    assert!(err.message.contains("connect to 127.0.0.1:1"), "{err}");
    let impatient = options().connect_timeout(Duration::from_millis(300));
    let err = soon("connect", adapter.connect(url, impatient))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(err.message.contains("connect to 127.0.0.1:1"), "{err}");
}

/// `ws://host:port` without a path means the root path, as in a browser.
async fn a_url_without_a_path_means_the_root(adapter: Adapter) {
    let server = listen(adapter, arithmetic()).await;
    let url = server.url();
    let bare = url.strip_suffix('/').expect("the server serves /");
    let client = adapter.connect(bare, options()).await.unwrap();
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    client.close();
}

async fn calls_made_before_open_are_queued_and_flushed_once_open(adapter: Adapter) {
    // The auth handler holds the connection in Authenticating until released.
    let (auth_seen, auth_seen_rx) = unbounded();
    let (opener, gate) = unbounded::<()>();
    let (notes, notes_rx) = unbounded();
    let server = listen(
        adapter,
        arithmetic()
            .auth(move |_info, _data: Vec<Value>| {
                let gate = gate.clone();
                let auth_seen = auth_seen.clone();
                async move {
                    let _ = auth_seen.try_send(());
                    let _ = gate.recv().await;
                    Ok(Identity::new("bob", Value::Null))
                }
            })
            .register("note", move |_ctx: CallContext, (n,): (u32,)| {
                let notes = notes.clone();
                async move {
                    let _ = notes.try_send(n);
                    Ok::<_, RtmError>(())
                }
            }),
    )
    .await;
    let client = adapter.start(&server.url(), options().auth(json!("any")));
    recv("the auth handler", &auth_seen_rx).await;
    assert_ne!(client.state(), ClientState::Open);

    let mut first = Box::pin(client.call_wait::<i64, _>("add", &(1, 2)));
    assert!(poll!(first.as_mut()).is_pending());
    soon("a queued call", client.call("note", &(7,)))
        .await
        .unwrap();
    let mut second = Box::pin(client.call_wait::<i64, _>("add", &(3, 4)));
    assert!(poll!(second.as_mut()).is_pending());
    assert_ne!(client.state(), ClientState::Open);

    opener.try_send(()).unwrap();
    assert_eq!(soon("the first queued call", first).await.unwrap(), 3);
    assert_eq!(soon("the second queued call", second).await.unwrap(), 7);
    assert_eq!(recv("the queued note", &notes_rx).await, 7);
    client.close();
}

async fn close_fails_pending_calls_with_closed(adapter: Adapter) {
    let (started, started_rx) = unbounded();
    let server = listen(adapter, hang(started)).await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    let (waiting, waiting_rx) = unbounded();
    let caller = client.clone();
    adapter.runtime().spawn(Box::pin(async move {
        let _ = waiting
            .send(caller.call_wait::<Value, _>("hang", &NO_ARGS).await)
            .await;
    }));
    recv("the function to start", &started_rx).await;
    client.close();
    let err = recv("the pending call", &waiting_rx).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    let err = soon(
        "a call after close",
        client.call_wait::<i64, _>("add", &(1, 2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    assert_eq!(client.state(), ClientState::Closed);
}

async fn dropping_one_of_two_equal_push_subscriptions_keeps_the_other(adapter: Adapter) {
    let server = listen(adapter, arithmetic()).await;
    let client = adapter.connect(&server.url(), options()).await.unwrap();
    let (scores, scores_rx) = unbounded();
    let first = soon(
        "the first subscription",
        client.subscribe_push("score", &["m1"], |(_,): (u32,)| {}),
    )
    .await
    .unwrap();
    let _second = soon(
        "the second subscription",
        client.subscribe_push("score", &["m1"], move |(score,): (u32,)| {
            let _ = scores.try_send(score);
        }),
    )
    .await
    .unwrap();
    drop(first);
    // Frames are handled in order: after this reply, any unsubscribe is done.
    let _: i64 = soon("add", client.call_wait("add", &(1, 1))).await.unwrap();
    let tags = ["m1".to_owned()];
    assert_eq!(server.handle().push("score", &tags, &(5,)).unwrap(), 1);
    assert_eq!(recv("a push to the remaining guard", &scores_rx).await, 5);
    client.close();
}

/// A loopback listener whose connections have a 64 KiB receive buffer
/// (autotuning lets a loopback socket take tens of MiB: filling that costs
/// seconds of CPU in a debug build, which starves the scenarios running
/// alongside).
fn small_buffer_listener() -> async_net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // Set before listen: accepted sockets inherit it.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(16).unwrap();
    async_net::TcpListener::try_from(std::net::TcpListener::from(socket)).unwrap()
}

/// A WebSocket server that upgrades one connection, then never reads (its
/// socket fills up) but keeps it open; our client connected to it.
async fn client_of_a_server_that_stops_reading(
    adapter: Adapter,
    options: ClientOptions,
) -> ClientHandle {
    let listener = small_buffer_listener();
    let addr = listener.local_addr().unwrap();
    let (held, held_rx) = unbounded();
    adapter.runtime().spawn(Box::pin(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = async_tungstenite::accept_async(tcp).await.unwrap();
        let _ = held.try_send(());
        std::future::pending::<()>().await;
        drop(ws);
    }));
    let client = adapter
        .connect(&format!("ws://{addr}/"), options)
        .await
        .unwrap();
    recv("the upgrade", &held_rx).await;
    client
}

/// Starts `count` calls of `f(big)` at once, each in its own task; their
/// outcomes arrive on the returned channel.
fn call_big_many_times(
    adapter: Adapter,
    client: &ClientHandle,
    count: usize,
    big: &str,
) -> Receiver<Result<Value, RtmError>> {
    let (outcomes, outcomes_rx) = unbounded();
    for _ in 0..count {
        let (client, big, outcomes) = (client.clone(), big.to_owned(), outcomes.clone());
        adapter.runtime().spawn(Box::pin(async move {
            let _ = outcomes
                .send(client.call_wait::<Value, _>("f", &(big,)).await)
                .await;
        }));
    }
    outcomes_rx
}

async fn call_timeout_fires_even_when_the_server_stops_reading(adapter: Adapter) {
    let options = options().call_timeout(Duration::from_millis(300));
    let client = client_of_a_server_that_stops_reading(adapter, options).await;
    let outcomes_rx = call_big_many_times(adapter, &client, 40, &"x".repeat(512 * 1024));
    for _ in 0..40 {
        let err = recv("the call timeout", &outcomes_rx).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout);
    }
    client.close();
    assert_eq!(
        soon(
            "a call after close",
            client.call_wait::<Value, _>("f", &NO_ARGS)
        )
        .await
        .unwrap_err()
        .code,
        ErrorCode::Closed
    );
}

/// A server that stops reading cannot make the client grow memory without
/// bound: past `offline_queue` unsent frames the connection counts as lost,
/// and its calls fail `rtm/disconnected`.
async fn frames_for_a_server_that_stopped_reading_are_bounded_by_the_offline_queue(
    adapter: Adapter,
) {
    const CALLS: usize = 64;
    let options = ClientOptions::default()
        .offline_queue(4)
        .reconnect_delay(Duration::ZERO)
        .call_timeout(Duration::from_secs(20));
    let client = client_of_a_server_that_stops_reading(adapter, options).await;
    // 16 MiB of arguments in all: four times what the socket buffers hold
    // (a loopback send buffer grows to 4 MiB; the server's receive buffer is
    // 64 KiB), so frames pile up unsent.
    let outcomes_rx = call_big_many_times(adapter, &client, CALLS, &"x".repeat(256 * 1024));
    let outcomes = recv_n(
        "every call to fail: unsent frames were not bounded",
        CALLS,
        Duration::from_secs(10),
        &outcomes_rx,
    )
    .await;
    let codes: Vec<ErrorCode> = outcomes
        .into_iter()
        .map(|r| r.expect_err("no server reply can arrive").code)
        .collect();
    assert!(
        codes.contains(&ErrorCode::Disconnected),
        "the stalled connection was not dropped: {codes:?}"
    );
    client.close();
}

on_every_adapter!(
    call_wait_returns_the_typed_result,
    call_without_waiting_reaches_the_server,
    server_errors_fail_call_wait_with_their_wire_code,
    call_without_reply_within_the_call_timeout_fails_with_timeout,
    subscribe_gets_events_and_dropping_the_guard_unsubscribes,
    subscribe_push_is_allowed_or_forbidden_by_the_authorizer,
    accepted_auth_opens_the_client_with_its_identity,
    wait_open_after_a_rejection_already_happened_still_says_auth_rejected,
    rejected_auth_fails_connect_with_auth_rejected_and_does_not_reconnect,
    calls_made_before_open_are_queued_and_flushed_once_open,
    close_fails_pending_calls_with_closed,
    dropping_one_of_two_equal_push_subscriptions_keeps_the_other,
    call_timeout_fires_even_when_the_server_stops_reading,
    frames_for_a_server_that_stopped_reading_are_bounded_by_the_offline_queue,
    a_url_that_is_not_ws_fails_at_once_with_bad_request,
    a_url_without_a_path_means_the_root,
    a_client_that_never_opens_says_why_its_last_attempt_failed,
);
