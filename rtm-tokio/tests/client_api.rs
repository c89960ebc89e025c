//! Our Client against a real server: calls, errors, timeouts, events, push
//! subscriptions, auth, the offline queue and close. (The offline queue's
//! bound and the scenarios in `conformance/tests/adapter_*.rs` run on every
//! adapter.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recv, soon};
use futures_util::poll;
use rtm_tokio::{
    CallContext, Client, ClientOptions, ClientState, ErrorCode, Identity, Listening, RtmError,
    Server, ServerBuilder, ServerBuilderExt,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

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
    Server::builder()
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

async fn listen(builder: ServerBuilder) -> Listening {
    builder.listen("127.0.0.1:0").await.unwrap()
}

/// A function that reports it started, then never finishes.
fn hang(started: UnboundedSender<()>) -> ServerBuilder {
    arithmetic().register("hang", move |_ctx: CallContext, _: Vec<Value>| {
        let _ = started.send(());
        async move {
            std::future::pending::<()>().await;
            Ok::<_, RtmError>(())
        }
    })
}

#[tokio::test]
async fn call_wait_returns_the_typed_result() {
    let server = listen(arithmetic()).await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
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

#[tokio::test]
async fn call_without_waiting_reaches_the_server() {
    let (seen, mut seen_rx) = unbounded_channel();
    let server = listen(Server::builder().register(
        "note",
        move |_ctx: CallContext, (text,): (String,)| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(text);
                Ok::<_, RtmError>(())
            }
        },
    ))
    .await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    soon("call", client.call("note", &("written",)))
        .await
        .unwrap();
    assert_eq!(recv("the note", &mut seen_rx).await, "written");
    client.close();
}

#[tokio::test]
async fn server_errors_fail_call_wait_with_their_wire_code() {
    let server = listen(
        Server::builder()
            .register("refuse", |_ctx: CallContext, _: Vec<Value>| async move {
                Err::<(), _>("out of stock")
            })
            .register("custom", |_ctx: CallContext, _: Vec<Value>| async move {
                Err::<(), _>(RtmError::new(
                    ErrorCode::Other("shop/closed".into()),
                    "come back tomorrow",
                ))
            }),
    )
    .await;
    let client = Client::connect(&server.url(), options()).await.unwrap();

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

#[tokio::test]
async fn call_without_reply_within_the_call_timeout_fails_with_timeout() {
    let (started, mut started_rx) = unbounded_channel();
    let server = listen(hang(started)).await;
    let client = Client::connect(
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
    recv("the function to have run", &mut started_rx).await;
    // The connection is still usable.
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    client.close();
}

#[tokio::test]
async fn subscribe_gets_events_and_dropping_the_guard_unsubscribes() {
    let server = listen(Server::builder()).await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    let (alerts, mut alerts_rx) = unbounded_channel();
    let (markers, mut markers_rx) = unbounded_channel();
    let alert = client.subscribe("alert", move |(text, n): (String, u32)| {
        let _ = alerts.send((text, n));
    });
    let _marker = client.subscribe("marker", move |(n,): (u32,)| {
        let _ = markers.send(n);
    });

    let handle = server.handle();
    assert_eq!(handle.emit("alert", |_| true, &("hello", 1)).unwrap(), 1);
    assert_eq!(
        recv("the first alert", &mut alerts_rx).await,
        ("hello".to_owned(), 1)
    );

    drop(alert);
    handle.emit("alert", |_| true, &("again", 2)).unwrap();
    handle.emit("marker", |_| true, &(1,)).unwrap();
    // Events arrive in order: once the marker is here, the second alert was
    // dispatched too, to no one.
    assert_eq!(recv("the marker", &mut markers_rx).await, 1);
    assert!(
        alerts_rx.try_recv().is_err(),
        "a dropped subscription got an event"
    );
    client.close();
}

#[tokio::test]
async fn subscribe_push_is_allowed_or_forbidden_by_the_authorizer() {
    let server = listen(
        arithmetic().authorize_subscriptions(|_info, _event, tags: Vec<String>| async move {
            tags.iter().all(|t| t.starts_with("public-"))
        }),
    )
    .await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    let (scores, mut scores_rx) = unbounded_channel();
    let sub = soon(
        "an allowed subscription",
        client.subscribe_push("score", &["public-7"], move |(score,): (u32,)| {
            let _ = scores.send(score);
        }),
    )
    .await
    .unwrap();

    let handle = server.handle();
    let tags = ["public-7".to_owned()];
    assert_eq!(handle.push("score", &tags, &(3,)).unwrap(), 1);
    assert_eq!(recv("the pushed score", &mut scores_rx).await, 3);

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
fn authenticated(calls: UnboundedSender<Value>) -> ServerBuilder {
    arithmetic()
        .auth(move |data: Vec<Value>, _info| {
            let calls = calls.clone();
            async move {
                let token = data.first().cloned().unwrap_or(Value::Null);
                let _ = calls.send(token.clone());
                if token == json!("letmein") {
                    Ok(Identity::new("alice", json!({"role": "admin"})))
                } else {
                    Err(RtmError::new(ErrorCode::AuthRejected, "bad token"))
                }
            }
        })
        .register("whoami", |ctx: CallContext, _: Vec<Value>| async move {
            Ok::<_, RtmError>(ctx.user_id().map(str::to_owned))
        })
}

#[tokio::test]
async fn accepted_auth_opens_the_client_with_its_identity() {
    let (calls, mut calls_rx) = unbounded_channel();
    let server = listen(authenticated(calls)).await;
    let client = Client::connect(&server.url(), options().auth(json!("letmein")))
        .await
        .unwrap();
    assert_eq!(client.state(), ClientState::Open);
    soon("wait_open", client.wait_open(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(recv("the auth call", &mut calls_rx).await, json!("letmein"));
    let me: Option<String> = soon("whoami", client.call_wait("whoami", &NO_ARGS))
        .await
        .unwrap();
    assert_eq!(me.as_deref(), Some("alice"));
    client.close();
}

#[tokio::test]
async fn wait_open_after_a_rejection_already_happened_still_says_auth_rejected() {
    let (calls, _calls_rx) = unbounded_channel();
    let server = listen(authenticated(calls)).await;
    let client = Client::start(&server.url(), options().auth(json!("wrong")));
    // The rejection and the close happen before anyone waits for them.
    soon("the client to close", async {
        while client.state() != ClientState::Closed {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let err = soon("wait_open", client.wait_open(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthRejected);
}

#[tokio::test]
async fn rejected_auth_fails_connect_with_auth_rejected_and_does_not_reconnect() {
    let (calls, mut calls_rx) = unbounded_channel();
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let server = listen(authenticated(calls).on_connect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }))
    .await;
    let reconnect = Duration::from_millis(20);
    let err = Client::connect(
        &server.url(),
        options().auth(json!("wrong")).reconnect_delay(reconnect),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code, ErrorCode::AuthRejected);
    assert_eq!(recv("the auth call", &mut calls_rx).await, json!("wrong"));

    // The same through `start`: the client ends Closed and refuses calls.
    let client = Client::start(
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
    recv("the second auth call", &mut calls_rx).await;

    // Proving an absence needs some time to pass: ten reconnect delays.
    tokio::time::sleep(reconnect * 10).await;
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

#[tokio::test]
async fn calls_made_before_open_are_queued_and_flushed_once_open() {
    // The auth handler holds the connection in Authenticating until released.
    let (auth_seen, mut auth_seen_rx) = unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let opener = gate.clone();
    let (notes, mut notes_rx) = unbounded_channel();
    let server = listen(
        arithmetic()
            .auth(move |_data, _info| {
                let gate = gate.clone();
                let auth_seen = auth_seen.clone();
                async move {
                    let _ = auth_seen.send(());
                    let _permit = gate.acquire().await;
                    Ok(Identity::new("bob", Value::Null))
                }
            })
            .register("note", move |_ctx: CallContext, (n,): (u32,)| {
                let notes = notes.clone();
                async move {
                    let _ = notes.send(n);
                    Ok::<_, RtmError>(())
                }
            }),
    )
    .await;
    let client = Client::start(&server.url(), options().auth(json!("any")));
    recv("the auth handler", &mut auth_seen_rx).await;
    assert_ne!(client.state(), ClientState::Open);

    let mut first = Box::pin(client.call_wait::<i64, _>("add", &(1, 2)));
    assert!(poll!(first.as_mut()).is_pending());
    soon("a queued call", client.call("note", &(7,)))
        .await
        .unwrap();
    let mut second = Box::pin(client.call_wait::<i64, _>("add", &(3, 4)));
    assert!(poll!(second.as_mut()).is_pending());
    assert_ne!(client.state(), ClientState::Open);

    opener.add_permits(1);
    assert_eq!(soon("the first queued call", first).await.unwrap(), 3);
    assert_eq!(soon("the second queued call", second).await.unwrap(), 7);
    assert_eq!(recv("the queued note", &mut notes_rx).await, 7);
    client.close();
}

#[tokio::test]
async fn close_fails_pending_calls_with_closed() {
    let (started, mut started_rx) = unbounded_channel();
    let server = listen(hang(started)).await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.call_wait::<Value, _>("hang", &NO_ARGS).await }
    });
    recv("the function to start", &mut started_rx).await;
    client.close();
    let err = soon("the pending call", waiting)
        .await
        .unwrap()
        .unwrap_err();
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

#[tokio::test]
async fn dropping_one_of_two_equal_push_subscriptions_keeps_the_other() {
    let server = listen(arithmetic()).await;
    let client = Client::connect(&server.url(), options()).await.unwrap();
    let (scores, mut scores_rx) = unbounded_channel();
    let first = soon(
        "the first subscription",
        client.subscribe_push("score", &["m1"], |(_,): (u32,)| {}),
    )
    .await
    .unwrap();
    let _second = soon(
        "the second subscription",
        client.subscribe_push("score", &["m1"], move |(score,): (u32,)| {
            let _ = scores.send(score);
        }),
    )
    .await
    .unwrap();
    drop(first);
    // Frames are handled in order: after this reply, any unsubscribe is done.
    let _: i64 = soon("add", client.call_wait("add", &(1, 1))).await.unwrap();
    let tags = ["m1".to_owned()];
    assert_eq!(server.handle().push("score", &tags, &(5,)).unwrap(), 1);
    assert_eq!(
        recv("a push to the remaining guard", &mut scores_rx).await,
        5
    );
    client.close();
}

#[tokio::test]
async fn call_timeout_fires_even_when_the_server_stops_reading() {
    // A WebSocket server that upgrades, then never reads: the socket fills up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held, mut held_rx) = unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _ = held.send(());
        std::future::pending::<()>().await;
        drop(ws);
    });
    let client = Client::connect(
        &format!("ws://{addr}/"),
        options().call_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    recv("the upgrade", &mut held_rx).await;
    let big = "x".repeat(512 * 1024);
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            let big = big.clone();
            tokio::spawn(async move { client.call_wait::<Value, _>("f", &(big,)).await })
        })
        .collect();
    for call in calls {
        let err = soon("the call timeout", call).await.unwrap().unwrap_err();
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
