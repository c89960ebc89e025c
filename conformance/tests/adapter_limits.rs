//! Abuse limits over real sockets, on every adapter: names and
//! subscriptions bounded, big subscriptions cheap and stalling no one,
//! auth handlers cancelled with their connection, request ids unique while
//! in flight, and the listener's per-IP and handshake bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::adapter::{soon, until_within, within, Adapter};
use conformance::on_every_adapter;
use conformance::raw_tcp::{frame, upgrade_request, End, RawPeer, TEXT};
use rtm_core::{Identity, Limits, RtmError};
use rtm_driver::{CallContext, Listening, ServerBuilder, SubscribeRequest};
use serde_json::{json, Value};

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

fn functions() -> ServerBuilder {
    ServerBuilder::new()
        .register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
            Ok::<_, RtmError>(x)
        })
        .register("sleep", |ctx: CallContext, (ms,): (u64,)| async move {
            ctx.server.runtime().sleep(Duration::from_millis(ms)).await;
            Ok::<_, RtmError>(ms)
        })
        .register("big", |_ctx: CallContext, (n,): (usize,)| async move {
            Ok::<_, RtmError>("x".repeat(n))
        })
}

/// A peer that reads promptly is never a slow consumer because of its own
/// replies: 64 pipelined calls answering 17 KB each (1.1 MB together, past
/// the 1 MiB bound) and one 2 MB reply all arrive, and the connection stays
/// open. (Its requests simply wait in its socket while replies are queued.)
async fn replies_to_pipelined_calls_never_make_a_reading_peer_a_slow_consumer(adapter: Adapter) {
    let server = listen(adapter, functions()).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let mut burst = Vec::new();
    for n in 0..64 {
        let call =
            json!({"id": format!("b{n}"), "type": "invoke", "function": "big", "data": [17_000]});
        burst.extend(frame(true, TEXT, call.to_string().as_bytes()));
    }
    let call = json!({"id": "huge", "type": "invoke", "function": "big", "data": [2_000_000]});
    burst.extend(frame(true, TEXT, call.to_string().as_bytes()));
    peer.send(&burst).await;
    for n in 0..65 {
        let got = reply(&mut peer).await;
        assert!(got["data"].is_string(), "reply {n}: {got}");
    }
    assert_eq!(
        request_echo(&mut peer, 1).await["data"],
        json!(1),
        "still open"
    );
    soon("shutdown", server.shutdown()).await;
}

async fn request(peer: &mut RawPeer, request: Value) -> Value {
    peer.send(&frame(true, TEXT, request.to_string().as_bytes()))
        .await;
    reply(peer).await
}

async fn reply(peer: &mut RawPeer) -> Value {
    let frame = peer.read_frame_within(Duration::from_secs(10)).await;
    serde_json::from_slice(&frame.expect("a reply").payload).expect("JSON")
}

fn code(reply: &Value) -> &str {
    reply["data"]["error"]["code"].as_str().unwrap_or("")
}

async fn names_and_subscriptions_past_their_limits_are_refused(adapter: Adapter) {
    let limits = Limits {
        max_subscriptions: 4,
        ..Limits::default()
    };
    let server = listen(adapter, functions().limits(limits)).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let long = "n".repeat(256);
    let got = request(
        &mut peer,
        json!({"id": "1", "type": "invoke", "function": long, "data": []}),
    )
    .await;
    assert_eq!(code(&got), "rtm/bad-request", "{got}");
    let got = request(
        &mut peer,
        json!({"id": "2", "type": "subscribe", "event": long, "tags": ["t"]}),
    )
    .await;
    assert_eq!(code(&got), "rtm/bad-request", "{got}");
    let got = request(
        &mut peer,
        json!({"id": "3", "type": "subscribe", "event": "e", "tags": ["a", "b", "c"]}),
    )
    .await;
    assert_eq!(got["data"], json!(true));
    let got = request(
        &mut peer,
        json!({"id": "4", "type": "subscribe", "event": "e", "tags": ["d", "f"]}),
    )
    .await;
    assert_eq!(code(&got), "rtm/too-many-subscriptions", "{got}");
    soon("shutdown", server.shutdown()).await;
}

/// 40,000 tags subscribed then unsubscribed in one frame each (limits raised
/// for it): both take milliseconds, and another connection's calls are
/// answered meanwhile (the subscription lists were rescanned per tag under
/// one server-wide lock before: 5.7 s for 40,000).
async fn a_subscription_of_40000_tags_is_cheap_and_stalls_no_one(adapter: Adapter) {
    const TAGS: usize = 40_000;
    let limits = Limits {
        max_tags_per_request: TAGS,
        max_subscriptions: TAGS,
        max_subscriptions_per_ip: None,
        max_frame_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let server = listen(adapter, functions().limits(limits)).await;
    let addr = server.local_addr();
    let mut big = RawPeer::upgrade(addr, "/").await;
    let mut other = RawPeer::upgrade(addr, "/").await;
    let tags: Vec<String> = (0..TAGS).map(|t| format!("t{t}")).collect();
    let mut slowest = Duration::ZERO;
    let mut took = Vec::new();
    for (id, kind) in [("s", "subscribe"), ("u", "unsubscribe")] {
        let started = Instant::now();
        let request = json!({"id": id, "type": kind, "event": "e", "tags": tags});
        big.send(&frame(true, TEXT, request.to_string().as_bytes()))
            .await;
        // Meanwhile, the other connection's calls.
        for n in 0..5 {
            let asked = Instant::now();
            let got = request_echo(&mut other, n).await;
            assert_eq!(got["data"], json!(n));
            slowest = slowest.max(asked.elapsed());
        }
        assert_eq!(reply(&mut big).await, json!({"id": id, "data": true}));
        took.push(started.elapsed());
    }
    eprintln!("{adapter:?}: {TAGS} tags: subscribe {:?}, unsubscribe {:?}; another connection's slowest echo meanwhile {slowest:?}", took[0], took[1]);
    assert!(took.iter().all(|t| *t < Duration::from_secs(2)), "{took:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    soon("shutdown", server.shutdown()).await;
}

async fn request_echo(peer: &mut RawPeer, n: u64) -> Value {
    request(
        peer,
        json!({"id": format!("e{n}"), "type": "invoke", "function": "echo", "data": [n]}),
    )
    .await
}

/// 200 connections send `auth` to a 30 s handler and close: every handler
/// is cancelled with its connection (none keeps running, holding the
/// connection's data).
async fn auth_handlers_of_closed_connections_are_cancelled(adapter: Adapter) {
    const CONNECTIONS: usize = 200;
    let running = Arc::new(AtomicUsize::new(0));
    struct Running(Arc<AtomicUsize>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let counter = running.clone();
    let builder = functions().auth(move |info, _data: Vec<Value>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let _running = Running(counter);
            futures_util::future::pending::<()>().await;
            Ok(Identity::new(info.id.to_string(), Value::Null))
        }
    });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let auth = frame(true, TEXT, br#"{"id":"a","type":"auth","data":["token"]}"#);
    for _ in 0..CONNECTIONS {
        let mut peer = RawPeer::upgrade(addr, "/").await;
        peer.send(&auth).await;
        drop(peer);
    }
    until_within("every auth handler to end", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 0 && server.handle().connection_count() == 0
    })
    .await;
    soon("shutdown", server.shutdown()).await;
}

async fn a_request_id_reused_while_in_flight_is_bad_request(adapter: Adapter) {
    let server = listen(adapter, functions()).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let sleep = json!({"id": "x", "type": "invoke", "function": "sleep", "data": [200]});
    peer.send(&frame(true, TEXT, sleep.to_string().as_bytes()))
        .await;
    let again = request(&mut peer, sleep.clone()).await;
    assert_eq!(code(&again), "rtm/bad-request", "{again}");
    assert_eq!(reply(&mut peer).await, json!({"id": "x", "data": 200}));
    soon("shutdown", server.shutdown()).await;
}

/// Upgrades, retrying a refused handshake (429) for up to 5 s: a slot is
/// given back a moment after the socket that held it is gone.
async fn upgrade_once_there_is_room(addr: std::net::SocketAddr) -> RawPeer {
    within("room for one more", Duration::from_secs(5), async {
        loop {
            match RawPeer::try_upgrade(addr, "/").await {
                Ok(peer) => break peer,
                Err(_) => {
                    async_io::Timer::after(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await
}

async fn connections_past_max_connections_per_ip_get_429(adapter: Adapter) {
    let server = listen(adapter, functions().max_connections_per_ip(3)).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawPeer::upgrade(addr, "/").await);
    }
    let mut fourth = RawPeer::connect(addr).await;
    fourth.send(upgrade_request(addr, "/").as_bytes()).await;
    let (answer, end) = fourth.read_to_end().await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert_eq!(end, End::Eof);
    // One leaves: room again once its socket is gone (a closing connection
    // counts until then).
    drop(held.pop());
    held.push(upgrade_once_there_is_room(addr).await);
    soon("shutdown", server.shutdown()).await;
}

async fn handshakes_in_flight_are_bounded(adapter: Adapter) {
    let server = listen(adapter, functions().max_handshakes(4)).await;
    let addr = server.local_addr();
    // Four sockets that connect and say nothing hold every handshake slot.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(RawPeer::connect(addr).await);
    }
    async_io::Timer::after(Duration::from_millis(100)).await;
    // The next is closed at once.
    let mut fifth = RawPeer::connect(addr).await;
    let end = within(
        "the fifth to be closed",
        Duration::from_secs(5),
        fifth.end_within(Duration::from_secs(5)),
    )
    .await;
    assert_ne!(end, End::Timeout, "a handshake past the bound was kept");
    // Once they go, handshakes are served again.
    drop(silent);
    async_io::Timer::after(Duration::from_millis(100)).await;
    let mut peer = RawPeer::upgrade(addr, "/").await;
    assert_eq!(request_echo(&mut peer, 1).await["data"], json!(1));
    soon("shutdown", server.shutdown()).await;
}

/// One address holds at most `max_handshakes_per_ip` handshake slots:
/// past it a new connection from that address gets 429 while the
/// server-wide `max_handshakes` has room; a handshake that finishes gives
/// its slot back.
async fn handshakes_from_one_address_past_their_limit_get_429(adapter: Adapter) {
    let server = listen(adapter, functions().max_handshakes_per_ip(Some(3))).await;
    let addr = server.local_addr();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(RawPeer::connect(addr).await);
    }
    async_io::Timer::after(Duration::from_millis(100)).await;
    let mut fourth = RawPeer::connect(addr).await;
    fourth.send(upgrade_request(addr, "/").as_bytes()).await;
    let (answer, end) = fourth.read_to_end().await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("too many handshakes"), "{answer}");
    assert_eq!(end, End::Eof);
    // The first finishes its handshake: its slot is free again.
    let first = &mut silent[0];
    first.send(upgrade_request(addr, "/").as_bytes()).await;
    let head = first.read_http_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut peer = upgrade_once_there_is_room(addr).await;
    assert_eq!(request_echo(&mut peer, 1).await["data"], json!(1));
    soon("shutdown", server.shutdown()).await;
}

/// An unsubscribe sent right behind its subscribe (while the authorizer
/// still decides) takes effect after it: answered second, and nothing is
/// left subscribed, so a Push to the pair reaches nobody.
async fn an_unsubscribe_pipelined_behind_its_subscribe_leaves_nothing_subscribed(adapter: Adapter) {
    let builder = functions()
        .authorize_subscriptions(|_req: SubscribeRequest| async move {
            async_io::Timer::after(Duration::from_millis(50)).await;
            true
        })
        .register("push", |ctx: CallContext, (tag,): (String,)| async move {
            ctx.server.push("score", &[tag], &("pushed",))
        });
    let server = listen(adapter, builder).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let subscribe = json!({"id": "s", "type": "subscribe", "event": "score", "tags": ["t"]});
    let unsubscribe = json!({"id": "u", "type": "unsubscribe", "event": "score", "tags": ["t"]});
    let mut both = frame(true, TEXT, subscribe.to_string().as_bytes());
    both.extend(frame(true, TEXT, unsubscribe.to_string().as_bytes()));
    peer.send(&both).await;
    assert_eq!(reply(&mut peer).await, json!({"id": "s", "data": true}));
    assert_eq!(reply(&mut peer).await, json!({"id": "u", "data": true}));
    let push = json!({"id": "p", "type": "invoke", "function": "push", "data": ["t"]});
    assert_eq!(
        request(&mut peer, push).await["data"],
        json!(0),
        "still subscribed"
    );
    soon("shutdown", server.shutdown()).await;
}

/// Before authentication a frame is held to an `auth` request's size
/// (`max_auth_bytes` + 1 KiB): a peer that never authenticates cannot make
/// the server buffer a whole `max_frame_bytes` for it, it gets 1009 at the
/// frame's header. After authentication the full size is read.
async fn before_authentication_frames_are_held_to_an_auth_requests_size(adapter: Adapter) {
    let builder = functions().auth(|_info, data: Vec<Value>| async move {
        let name = data
            .first()
            .and_then(Value::as_str)
            .unwrap_or("x")
            .to_owned();
        Ok(Identity::new(name, Value::Null))
    });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut stalled = RawPeer::upgrade(addr, "/").await;
    // The header of a 1 MiB text frame and a little of it, then nothing.
    let big = frame(true, TEXT, &vec![b' '; 1024 * 1024]);
    stalled.send(&big[..4096]).await;
    let (code, _, _) = stalled.expect_close(0).await;
    assert_eq!(code, 1009);
    // Authenticated, a frame of 100 KB is served.
    let mut peer = RawPeer::upgrade(addr, "/").await;
    let auth = json!({"id": "a", "type": "auth", "data": ["alice"]});
    assert_eq!(request(&mut peer, auth).await["id"], json!("a"));
    let big = "y".repeat(100_000);
    let got = request(
        &mut peer,
        json!({"id": "e", "type": "invoke", "function": "echo", "data": [big]}),
    )
    .await;
    assert_eq!(got["data"].as_str().map(str::len), Some(100_000));
    soon("shutdown", server.shutdown()).await;
}

/// Rate limits per function, on the real driver: per connection and per
/// user (two connections of one user share it), `rtm/too-many-requests`
/// past them; sign-ins per address, the auth rejected (4003) past them.
async fn rate_limits_hold_per_connection_per_user_and_for_sign_ins(adapter: Adapter) {
    use rtm_core::{Rate, RateLimit};
    let builder = functions()
        .rate_limit(
            "echo",
            RateLimit::per_connection(Rate::per_minute(3)).and_per_user(Rate::per_minute(4)),
        )
        .sign_ins_per_ip(Some(Rate::per_minute(3)))
        .auth(|_info, data: Vec<Value>| async move {
            let user = data
                .first()
                .and_then(Value::as_str)
                .unwrap_or("anon")
                .to_owned();
            Ok(Identity::new(user.as_str(), json!(null)))
        });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut signed_in = Vec::new();
    for _ in 0..2 {
        let mut peer = RawPeer::upgrade(addr, "/").await;
        let auth = request(
            &mut peer,
            json!({"id": "a", "type": "auth", "data": ["alice"]}),
        )
        .await;
        assert_eq!(auth["data"], json!(true), "{auth}");
        signed_in.push(peer);
    }
    let echo =
        |n: u32| json!({"id": format!("e{n}"), "type": "invoke", "function": "echo", "data": [n]});
    let (tab1, tab2) = signed_in.split_at_mut(1);
    let (tab1, tab2) = (&mut tab1[0], &mut tab2[0]);
    for n in 0..3 {
        assert_eq!(request(tab1, echo(n)).await["data"], json!(n));
    }
    let past_connection = request(tab1, echo(3)).await;
    assert_eq!(
        code(&past_connection),
        "rtm/too-many-requests",
        "{past_connection}"
    );
    // The user's fourth call (from its other connection) fits; the fifth not.
    assert_eq!(request(tab2, echo(4)).await["data"], json!(4));
    let past_user = request(tab2, echo(5)).await;
    assert_eq!(code(&past_user), "rtm/too-many-requests", "{past_user}");
    // A third sign-in from this address fits; a fourth is rejected.
    let mut third = RawPeer::upgrade(addr, "/").await;
    let auth = request(
        &mut third,
        json!({"id": "a", "type": "auth", "data": ["bob"]}),
    )
    .await;
    assert_eq!(auth["data"], json!(true), "{auth}");
    let mut fourth = RawPeer::upgrade(addr, "/").await;
    let refused = request(
        &mut fourth,
        json!({"id": "a", "type": "auth", "data": ["carol"]}),
    )
    .await;
    assert_eq!(
        refused["error"]["code"],
        json!("rtm/auth-rejected"),
        "{refused}"
    );
    soon("shutdown", server.shutdown()).await;
}

on_every_adapter!(
    before_authentication_frames_are_held_to_an_auth_requests_size,
    replies_to_pipelined_calls_never_make_a_reading_peer_a_slow_consumer,
    names_and_subscriptions_past_their_limits_are_refused,
    a_subscription_of_40000_tags_is_cheap_and_stalls_no_one,
    auth_handlers_of_closed_connections_are_cancelled,
    a_request_id_reused_while_in_flight_is_bad_request,
    connections_past_max_connections_per_ip_get_429,
    handshakes_in_flight_are_bounded,
    handshakes_from_one_address_past_their_limit_get_429,
    an_unsubscribe_pipelined_behind_its_subscribe_leaves_nothing_subscribed,
    rate_limits_hold_per_connection_per_user_and_for_sign_ins,
);
