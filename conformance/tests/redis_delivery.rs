//! Delivery across servers sharing a real Redis, on every adapter: a reader
//! that keeps up survives the burst a Redis pause releases; a subscribe and
//! an unsubscribe of one topic that cancel out before Redis is told lose no
//! confirmation (page reloads, subscription churn); subscription churn does
//! not starve Publish to other servers.
//!
//! Each test starts its own `redis-server` (some stall it) and two servers
//! of the adapter under test, each with a `RedisBroker` on that adapter's
//! runtime.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use conformance::adapter::{soon, until_within, within, Adapter};
use conformance::on_every_adapter;
use conformance::raw_tcp::{
    close_payload, frame, next, reply_to, request, End, Got, RawPeer, CLOSE,
};
use futures_util::future::join_all;
use rtm_core::{Identity, RtmError};
use rtm_driver::{CallContext, Listening, ServerBuilder};
use serde_json::{json, Value};

mod common;
use common::shared_redis::SharedRedis as Cluster;

/// `echo(x)`.
fn functions() -> ServerBuilder {
    ServerBuilder::new().register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
        Ok::<_, RtmError>(x)
    })
}

/// [`functions`] on a server with auth: the token is the user id.
fn functions_with_auth() -> ServerBuilder {
    functions().auth(|_info, data: Vec<Value>| async move {
        let user = data
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| RtmError::handler("the token is the user id"))?
            .to_owned();
        Ok(Identity::new(user.as_str(), json!({ "user": user })))
    })
}

/// A connection to `server` authenticated as `user`.
async fn user(server: &Listening, user: &str) -> RawPeer {
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let auth = json!({"id": "auth", "type": "auth", "data": [user]});
    peer.send(&request(&auth)).await;
    let reply = reply_to(&mut peer, "auth", Duration::from_secs(12)).await;
    assert_eq!(reply["data"], json!({ "user": user }), "{reply}");
    peer
}

async fn subscribe(peer: &mut RawPeer, id: &str, event: &str, tags: &[String]) -> Value {
    let sub = json!({"id": id, "type": "subscribe", "event": event, "tags": tags});
    peer.send(&request(&sub)).await;
    reply_to(peer, id, Duration::from_secs(12)).await
}

// ---------------------------------------------------------------------------
// 2b. After a Redis pause, a fast reader gets more than 1 MiB at once.

/// Servers A and B on one Redis; a reader on B subscribed to ("e", "t")
/// that reads as fast as it can. Redis pauses writes for 1 s (`CLIENT
/// PAUSE 1000 WRITE`: PUBLISH waits) while A pushes 150 events of ~10 KB
/// to ("e", "t"); when Redis resumes they reach B at once (~1.5 MB, past
/// the default 1 MiB `max_outbound_bytes`): the reader gets all 150 and is
/// not closed (it keeps up; it is not a slow consumer).
async fn a_reader_that_keeps_up_gets_the_burst_a_redis_pause_releases(adapter: Adapter) {
    const EVENTS: u64 = 150;
    const BYTES: usize = 10_000;
    let cluster = Cluster::new("pause");
    let a = cluster.server(adapter, functions(), "a").await;
    let b = cluster.server(adapter, functions(), "b").await;
    let mut reader = RawPeer::upgrade(b.local_addr(), "/").await;
    let reply = subscribe(&mut reader, "s", "e", &["t".to_owned()]).await;
    assert_eq!(reply["data"], json!(true), "{reply}");

    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query(&mut cluster.connection())
        .unwrap();
    let paused = Instant::now();
    let text = "z".repeat(BYTES);
    for n in 0..EVENTS {
        if let Err(err) = a.handle().push("e", &["t".to_owned()], &(n, &text)) {
            panic!("push {n} from A during the pause failed: {err}");
        }
    }
    assert!(
        paused.elapsed() < Duration::from_millis(900),
        "the pushes took {:?}: not all made during the pause",
        paused.elapsed()
    );
    let mut got = 0u64;
    let outcome = within_opt(Duration::from_secs(20), async {
        while got < EVENTS {
            match next(&mut reader, Duration::from_secs(10)).await {
                Got::Json(v) if v["event"] == json!("e") => {
                    assert_eq!(v["data"][0], json!(got), "events out of order");
                    got += 1;
                }
                other => return Err(other),
            }
        }
        Ok(())
    })
    .await;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(other)) => panic!(
            "after {got} of {EVENTS} events of {BYTES} bytes released by the Redis pause, \
             the reader on B got {other:?} (B: broker {:?}, {} broker errors, {} connection(s))",
            b.handle().broker_state(),
            b.handle().broker_errors(),
            b.handle().connection_count()
        ),
        None => panic!("only {got} of {EVENTS} events within 20 s"),
    }
    let call = json!({"id": "open", "type": "invoke", "function": "echo", "data": [1]});
    reader.send(&request(&call)).await;
    let reply = reply_to(&mut reader, "open", Duration::from_secs(5)).await;
    assert_eq!(reply["data"], json!(1), "the reader is still open");
    eprintln!(
        "{adapter:?}: {EVENTS} events released by the pause read {:?} after it began",
        paused.elapsed()
    );
    drop(reader);
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

/// `Some(output)` if `future` completes within `limit`.
async fn within_opt<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    conformance::adapter::timeout_opt(limit, future).await
}

// ---------------------------------------------------------------------------
// 3. A broker confirmation lost when a subscribe and an unsubscribe of one
//    topic cancel out before Redis is told.

/// How long an auth reply may take: the broker confirms the user's topic
/// in milliseconds (the server's own wait for it gives up after 10 s).
const PROMPT: Duration = Duration::from_secs(2);

/// Sends `auth` as `user`; how long the reply took, or what came instead
/// (waiting up to 12 s: past the server's 10 s wait for the broker and its
/// 10 s auth timeout).
async fn auth_delay(peer: &mut RawPeer, user: &str) -> Result<Duration, String> {
    let asked = Instant::now();
    let auth = json!({"id": "auth", "type": "auth", "data": [user]});
    peer.send(&request(&auth)).await;
    auth_reply(peer, user, asked).await
}

/// The reply to the `auth` request sent at `asked`: how long it took, or
/// what came instead.
async fn auth_reply(peer: &mut RawPeer, user: &str, asked: Instant) -> Result<Duration, String> {
    loop {
        let left = Duration::from_secs(12).saturating_sub(asked.elapsed());
        match next(peer, left).await {
            Got::Json(v) if v["id"] == json!("auth") => {
                assert_eq!(v["data"], json!({ "user": user }), "{v}");
                return Ok(asked.elapsed());
            }
            Got::Json(_) => continue,
            other => return Err(format!("{other:?} after {:?}", asked.elapsed())),
        }
    }
}

fn close_frame() -> Vec<u8> {
    frame(true, CLOSE, &close_payload(1000, ""))
}

/// Whether `server` holds a connection of `user`.
fn holds_user(server: &Listening, user: &str) -> bool {
    server
        .handle()
        .connections()
        .iter()
        .any(|c| c.user_id() == Some(user))
}

/// Publishes from `from` to `user` and expects the event on `peer`.
async fn publish_reaches(from: &Listening, user: &str, peer: &mut RawPeer, marker: &str) {
    from.handle()
        .publish(user, "dm", &(marker,))
        .unwrap_or_else(|e| panic!("publish to {user}: {e}"));
    let got = within(
        &format!("the publish {marker:?} to {user}"),
        Duration::from_secs(5),
        async {
            loop {
                match next(peer, Duration::from_secs(5)).await {
                    Got::Json(v) if v["event"] == json!("dm") => return v,
                    Got::Json(_) => continue,
                    other => panic!("waiting for the publish {marker:?} to {user}, got {other:?}"),
                }
            }
        },
    )
    .await;
    assert_eq!(got, json!({"event": "dm", "data": [marker]}));
}

/// A page reload while Redis is busy: user u1's only connection on A
/// closes and a new one authenticates as u1 while another subscribe is in
/// flight at a Redis stalled for 400 ms (so the unsubscribe of u1's topic
/// and its subscribe again meet before Redis is told, and cancel out). The
/// new connection's auth is answered promptly (not after the server's 10 s
/// wait for a confirmation that never comes), four reloads in a row; then
/// a Publish to u1 from server B reaches it.
async fn a_reload_while_redis_stalls_is_authenticated_promptly(adapter: Adapter) {
    let cluster = Cluster::new("reload-stall");
    let a = cluster.server(adapter, functions_with_auth(), "a").await;
    let b = cluster.server(adapter, functions_with_auth(), "b").await;
    let mut page = user(&a, "u1").await;
    let mut delays = Vec::new();
    for round in 0..4 {
        let mut helper = user(&a, &format!("helper{round}")).await;
        let mut reloaded = RawPeer::upgrade(a.local_addr(), "/").await;
        let stall = cluster.stall(Duration::from_millis(400));
        async_io::Timer::after(Duration::from_millis(50)).await;
        // Another subscribe: at the broker, waiting for the stalled Redis.
        let sub = json!({"id": "h", "type": "subscribe", "event": "s", "tags": [format!("stall{round}")]});
        helper.send(&request(&sub)).await;
        async_io::Timer::after(Duration::from_millis(20)).await;
        // The reload: the page's connection goes, the new one authenticates.
        page.send(&close_frame()).await;
        until_within(
            "the old connection to leave A",
            Duration::from_millis(300),
            || !holds_user(&a, "u1"),
        )
        .await;
        let delay = auth_delay(&mut reloaded, "u1").await.unwrap_or_else(|got| {
            panic!("reload {round} (during a stall): no auth reply, the new connection got {got}")
        });
        delays.push(delay);
        assert!(
            delay < PROMPT,
            "reload {round} (during a stall): the new connection's auth was answered after {delay:?} \
             (reloads so far: {delays:?})"
        );
        let reply = reply_to(&mut helper, "h", Duration::from_secs(12)).await;
        assert_eq!(
            reply["data"],
            json!(true),
            "round {round}: the helper's subscribe: {reply}"
        );
        stall.join().unwrap();
        drop(page);
        page = reloaded;
    }
    assert!(holds_user(&a, "u1"));
    publish_reaches(&b, "u1", &mut page, "after the reloads").await;
    eprintln!("{adapter:?}: auth replies after a reload during a stall: {delays:?}");
    drop(page);
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

/// Two hundred plain reloads (no stall): the page's connection closes
/// and, at the same moment, a new connection authenticates as the same
/// user; each auth is answered promptly, and a Publish from server B
/// reaches the last one. (A race: when the old connection's unsubscribe of
/// the user's topic still waits for the broker as the new one subscribes
/// it, the two cancel out; before, the new connection then waited for a
/// confirmation that never came.)
async fn plain_reloads_are_authenticated_promptly(adapter: Adapter) {
    let cluster = Cluster::new("reload");
    let a = cluster.server(adapter, functions_with_auth(), "a").await;
    let b = cluster.server(adapter, functions_with_auth(), "b").await;
    let mut page = user(&a, "u1").await;
    let mut delays = Vec::new();
    for round in 0..200 {
        let mut reloaded = RawPeer::upgrade(a.local_addr(), "/").await;
        let asked = Instant::now();
        let auth = json!({"id": "auth", "type": "auth", "data": ["u1"]});
        // At the same moment: the old one's close, the new one's auth.
        page.send(&close_frame()).await;
        reloaded.send(&request(&auth)).await;
        let delay = auth_reply(&mut reloaded, "u1", asked)
            .await
            .unwrap_or_else(|got| {
                panic!("reload {round}: no auth reply, the new connection got {got}")
            });
        delays.push(delay);
        assert!(
            delay < PROMPT,
            "reload {round}: the new connection's auth was answered after {delay:?}"
        );
        drop(page);
        page = reloaded;
    }
    publish_reaches(&b, "u1", &mut page, "after the reloads").await;
    let slowest = delays.iter().max().copied().unwrap_or_default();
    eprintln!("{adapter:?}: 200 reloads, the slowest auth reply {slowest:?}");
    drop(page);
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

/// Four connections on A pipeline `subscribe` / `unsubscribe` of the same
/// 16 tags (8 of their own, 8 shared), 120 times each, two of them ending
/// subscribed (962 requests). Every request is answered exactly once, `true`,
/// within 5 s; a Push (from server B, all along) reaches no connection
/// after its last unsubscribe was acknowledged; afterwards a fresh
/// subscriber to one of those tags is acknowledged promptly (not
/// `rtm/broker-unavailable` after 10 s) and receives a Push from B.
async fn subscription_churn_answers_every_request_once_and_loses_no_confirmation(adapter: Adapter) {
    const CONNS: usize = 4;
    const ROUNDS: usize = 120;
    const LIMIT: Duration = Duration::from_secs(5);
    let cluster = Cluster::new("churn");
    let a = cluster.server(adapter, functions(), "a").await;
    let b = cluster.server(adapter, functions(), "b").await;
    let tags_of = |c: usize| -> Vec<String> {
        (0..8)
            .map(|k| format!("p{c}-{k}"))
            .chain((0..8).map(|k| format!("s{k}")))
            .collect()
    };
    let all_tags: Vec<String> = (0..CONNS).flat_map(tags_of).collect();
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(RawPeer::upgrade(a.local_addr(), "/").await);
    }
    let done = Cell::new(false);
    let pushes = Cell::new(0u64);
    let pusher = async {
        while !done.get() {
            let n = pushes.get();
            b.handle()
                .push("churn", &all_tags, &(n,))
                .unwrap_or_else(|e| panic!("push {n} from B: {e}"));
            pushes.set(n + 1);
            async_io::Timer::after(Duration::from_millis(10)).await;
        }
    };
    let churn = conns.iter_mut().enumerate().map(|(c, peer)| {
        let tags = tags_of(c);
        async move {
            let ends_subscribed = c < 2;
            let mut ids = Vec::new();
            let mut requests = Vec::new();
            for r in 0..ROUNDS {
                for (kind, id) in [("subscribe", format!("s{r}")), ("unsubscribe", format!("u{r}"))] {
                    let req = json!({"id": id, "type": kind, "event": "churn", "tags": tags});
                    requests.extend(request(&req));
                    ids.push(id);
                }
            }
            if ends_subscribed {
                let id = "final".to_owned();
                let req = json!({"id": id, "type": "subscribe", "event": "churn", "tags": tags});
                requests.extend(request(&req));
                ids.push(id);
            }
            let last = ids.last().cloned().unwrap();
            let sent = Instant::now();
            peer.send(&requests).await;
            let mut answered: Vec<String> = Vec::new();
            let mut after_last = 0;
            while answered.len() < ids.len() {
                let left = LIMIT.saturating_sub(sent.elapsed());
                match next(peer, left).await {
                    Got::Json(v) if v.get("event").is_some() => {
                        if !ends_subscribed && answered.last() == Some(&last) {
                            after_last += 1;
                        }
                    }
                    Got::Json(v) => {
                        let id = v["id"].as_str().unwrap_or_default().to_owned();
                        assert!(
                            !answered.contains(&id),
                            "connection {c}: request {id:?} answered twice: {v}"
                        );
                        assert_eq!(v["data"], json!(true), "connection {c}: request {id:?}: {v}");
                        answered.push(id);
                    }
                    Got::Ended(End::Timeout) => {
                        let missing: Vec<&String> =
                            ids.iter().filter(|id| !answered.contains(id)).collect();
                        panic!(
                            "connection {c}: {} of {} requests unanswered {LIMIT:?} after they were sent \
                             (first unanswered: {:?})",
                            missing.len(),
                            ids.len(),
                            &missing[..missing.len().min(5)]
                        );
                    }
                    other => panic!("connection {c}: got {other:?}"),
                }
            }
            assert_eq!(answered, ids, "connection {c}: replies out of order");
            if !ends_subscribed {
                // Pushes keep coming from B: none may reach it now.
                match next(peer, Duration::from_millis(500)).await {
                    Got::Ended(End::Timeout) => {}
                    other => panic!(
                        "connection {c} got {other:?} after its last unsubscribe was acknowledged"
                    ),
                }
                assert_eq!(after_last, 0, "connection {c}: pushes after its last unsubscribe");
            }
            sent.elapsed()
        }
    });
    let churned = async {
        let took = join_all(churn).await;
        done.set(true);
        took
    };
    let (took, ()) = futures_util::future::join(churned, pusher).await;
    eprintln!(
        "{adapter:?}: churn of {} requests answered in {took:?}; {} pushes from B meanwhile",
        CONNS * 2 * ROUNDS + 2,
        pushes.get()
    );

    // A fresh subscriber to a tag the churn left subscribed (connection 0's own, and a shared one).
    let mut fresh = RawPeer::upgrade(a.local_addr(), "/").await;
    for (n, tag) in ["p0-0", "s0"].into_iter().enumerate() {
        let asked = Instant::now();
        let reply = subscribe(&mut fresh, &format!("f{n}"), "churn", &[tag.to_owned()]).await;
        let delay = asked.elapsed();
        assert!(
            reply["data"] == json!(true) && delay < PROMPT,
            "a fresh subscriber to {tag:?} after the churn was answered after {delay:?}: {reply}"
        );
        b.handle()
            .push("churn", &[tag.to_owned()], &(format!("after-{tag}"),))
            .unwrap();
        let want = json!({"event": "churn", "data": [format!("after-{tag}")]});
        loop {
            let got = next(&mut fresh, Duration::from_secs(5)).await;
            // A churn push B sent just before may still be on its way
            // through Redis to A, which kept the topic: it may arrive first.
            let late_churn =
                matches!(&got, Got::Json(v) if v["event"] == "churn" && v["data"][0].is_number());
            if late_churn {
                continue;
            }
            assert!(
                matches!(&got, Got::Json(v) if *v == want),
                "the fresh subscriber to {tag:?}: a Push from B got {got:?}"
            );
            break;
        }
    }
    drop((conns, fresh));
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

// ---------------------------------------------------------------------------
// 4. Subscription churn starves cross-server delivery.

/// Two servers on Redis; 20 connections on A each loop `subscribe` of 128
/// fresh tags and `unsubscribe` of them (pipelined in pairs) while A
/// publishes to a user on B every 100 ms for 4 s: each publish reaches B
/// within 1 s of being sent, during the churn, and none fails
/// `rtm/broker-unavailable`. (Before, topic changes went to the broker
/// before any publish, so publishes waited for the churn to stop.)
async fn subscription_churn_does_not_hold_up_publishes_to_other_servers(adapter: Adapter) {
    const CHURNERS: usize = 20;
    const TAGS: usize = 128;
    const PUBLISHES: u64 = 40;
    const EVERY: Duration = Duration::from_millis(100);
    const LATENCY: Duration = Duration::from_secs(1);
    let cluster = Cluster::new("starve");
    let a = cluster.server(adapter, functions_with_auth(), "a").await;
    let b = cluster.server(adapter, functions_with_auth(), "b").await;
    let mut bob = user(&b, "bob").await;
    let mut churners = Vec::new();
    for c in 0..CHURNERS {
        churners.push(user(&a, &format!("churner{c}")).await);
    }
    // Bob's topic is confirmed (the auth reply waited for it): a first
    // publish arrives.
    publish_reaches(&a, "bob", &mut bob, "warm-up").await;

    let stop = Cell::new(false);
    let rounds = Cell::new(0u64);
    let churn_errors = RefCell::new(Vec::new());
    let churn = churners.iter_mut().enumerate().map(|(c, peer)| {
        let (stop, rounds, churn_errors) = (&stop, &rounds, &churn_errors);
        async move {
            let mut round = 0;
            while !stop.get() {
                let tags: Vec<String> = (0..TAGS).map(|t| format!("{c}-{round}-{t}")).collect();
                let mut pair = request(
                    &json!({"id": "s", "type": "subscribe", "event": "churn", "tags": tags}),
                );
                pair.extend(request(
                    &json!({"id": "u", "type": "unsubscribe", "event": "churn", "tags": tags}),
                ));
                peer.send(&pair).await;
                for id in ["s", "u"] {
                    let reply = reply_to(peer, id, Duration::from_secs(15)).await;
                    if reply["data"] != json!(true) {
                        churn_errors
                            .borrow_mut()
                            .push(format!("churner {c}: {reply}"));
                    }
                }
                round += 1;
                rounds.set(rounds.get() + 1);
            }
        }
    });
    let sent_at = RefCell::new(Vec::new());
    let failed = RefCell::new(Vec::new());
    let publisher = async {
        // The churn gets going first.
        async_io::Timer::after(Duration::from_millis(300)).await;
        let start = Instant::now();
        for n in 0..PUBLISHES {
            async_io::Timer::at(start + EVERY * n as u32).await;
            sent_at.borrow_mut().push(Instant::now());
            if let Err(err) = a.handle().publish("bob", "tick", &(n,)) {
                failed.borrow_mut().push(format!("publish {n}: {err}"));
            }
        }
    };
    let arrived = RefCell::new(vec![None; PUBLISHES as usize]);
    let reader = async {
        // Until every publish arrived, or 8 s after the last was sent.
        let deadline = Instant::now()
            + Duration::from_millis(300)
            + EVERY * PUBLISHES as u32
            + Duration::from_secs(8);
        while arrived.borrow().iter().any(Option::is_none) && Instant::now() < deadline {
            match next(&mut bob, Duration::from_millis(200)).await {
                Got::Json(v) if v["event"] == json!("tick") => {
                    let n = v["data"][0].as_u64().unwrap_or(u64::MAX) as usize;
                    if let Some(slot) = arrived.borrow_mut().get_mut(n) {
                        slot.get_or_insert(Instant::now());
                    }
                }
                Got::Json(_) | Got::Ended(End::Timeout) => {}
                other => panic!("bob's connection on B: {other:?}"),
            }
        }
    };
    let publish_then_stop = async {
        publisher.await;
        // The churn stops with the last publish (the reader waits on for
        // late ones, to show how late).
        stop.set(true);
    };
    let ((), (), _) = futures_util::future::join3(publish_then_stop, reader, join_all(churn)).await;

    let sent_at = sent_at.into_inner();
    let arrived = arrived.into_inner();
    let latencies: Vec<Option<Duration>> = sent_at
        .iter()
        .zip(&arrived)
        .map(|(sent, got)| got.map(|got| got.saturating_duration_since(*sent)))
        .collect();
    let shown: Vec<String> = latencies
        .iter()
        .map(|l| l.map_or("lost".to_owned(), |l| format!("{}", l.as_millis())))
        .collect();
    let late = latencies
        .iter()
        .filter(|l| l.is_none_or(|l| l > LATENCY))
        .count();
    eprintln!(
        "{adapter:?}: {} churn rounds; publish latencies (ms): {}",
        rounds.get(),
        shown.join(" ")
    );
    let failed = failed.into_inner();
    assert!(
        failed.is_empty(),
        "publishes from A failed during the churn: {failed:?}"
    );
    assert_eq!(
        late,
        0,
        "{late} of {PUBLISHES} publishes from A did not reach B within {LATENCY:?} during \
         the churn of {CHURNERS} connections ({} rounds); latencies (ms): {}",
        rounds.get(),
        shown.join(" ")
    );
    let churn_errors = churn_errors.into_inner();
    assert!(
        churn_errors.is_empty(),
        "churn requests failed: {:?}",
        &churn_errors[..churn_errors.len().min(5)]
    );
    drop((bob, churners));
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

// ---------------------------------------------------------------------------
// History: events kept in Redis streams reach every holder once, in order.

/// Servers A and B on one Redis, with history for "score" and "dm": 20
/// pushes from A to ("score", "m1") reach a holder on A and one on B, once
/// each, in order (A delivers its own when Redis hands them back); a
/// Publish from B to alice reaches her connections on both; Redis keeps
/// both streams with their positions.
async fn events_with_history_reach_every_holder_once_in_order_through_redis(adapter: Adapter) {
    const PUSHES: u64 = 20;
    let cluster = Cluster::new("history");
    let history = || {
        rtm_core::HistoryConfig::default()
            .enable("score", rtm_core::StreamOptions::default())
            .enable("dm", rtm_core::StreamOptions::default())
    };
    let a = cluster
        .server(adapter, functions_with_auth().history(history()), "a")
        .await;
    let b = cluster
        .server(adapter, functions_with_auth().history(history()), "b")
        .await;
    let (mut here, mut there) = (user(&a, "alice").await, user(&b, "alice").await);
    for peer in [&mut here, &mut there] {
        let reply = subscribe(peer, "s", "score", &["m1".to_owned()]).await;
        assert_eq!(reply["data"], json!(true), "{reply}");
    }
    for n in 1..=PUSHES {
        assert_eq!(
            a.handle().push("score", &["m1".to_owned()], &(n,)).unwrap(),
            0
        );
    }
    assert_eq!(b.handle().publish("alice", "dm", &("hi",)).unwrap(), 0);
    for peer in [&mut here, &mut there] {
        let mut scores = Vec::new();
        let mut dms = 0;
        while scores.len() < PUSHES as usize || dms < 1 {
            match next(peer, Duration::from_secs(10)).await {
                Got::Json(v) if v["event"] == json!("score") => scores.push(v["data"][0].clone()),
                Got::Json(v) if v["event"] == json!("dm") => dms += 1,
                other => panic!("after {} scores and {dms} dm: {other:?}", scores.len()),
            }
        }
        assert_eq!(scores, (1..=PUSHES).map(|n| json!(n)).collect::<Vec<_>>());
        if let Got::Json(v) = next(peer, Duration::from_millis(200)).await {
            panic!("a duplicate or stray event: {v}");
        }
    }
    let mut redis = cluster.connection();
    let topic = rtm_core::Topic::push(&cluster.namespace, "score", "m1");
    let kept: u64 = redis::cmd("XLEN")
        .arg(format!("{{{}}}:s", topic.as_str()))
        .query(&mut redis)
        .unwrap();
    assert_eq!(kept, PUSHES);
    let dm = rtm_core::Topic::user(&cluster.namespace, "alice");
    let top: u64 = redis::cmd("HGET")
        .arg(format!("{{{}}}:m", dm.as_str()))
        .arg("s")
        .query(&mut redis)
        .unwrap();
    assert_eq!(top, 1);
    drop((here, there));
    soon("shutdown A", a.shutdown()).await;
    soon("shutdown B", b.shutdown()).await;
}

on_every_adapter!(
    a_reader_that_keeps_up_gets_the_burst_a_redis_pause_releases,
    a_reload_while_redis_stalls_is_authenticated_promptly,
    plain_reloads_are_authenticated_promptly,
    subscription_churn_answers_every_request_once_and_loses_no_confirmation,
    subscription_churn_does_not_hold_up_publishes_to_other_servers,
    events_with_history_reach_every_holder_once_in_order_through_redis,
);
