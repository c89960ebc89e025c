//! Delivery under load, over real sockets, on every adapter (no Redis):
//! a burst reaches readers that never send without waiting for the
//! heartbeat; a reader that keeps up is never a slow consumer, however much
//! one pass delivers, while a paused one is; a chain of overlapping
//! subscribes is answered promptly and stalls no other connection; one
//! user cannot take every broker topic of the server.
//!
//! Regression tests for delivery faults (see each test's doc).

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::adapter::{soon, until, within, Adapter};
use conformance::on_every_adapter;
use conformance::raw_tcp::{next, reply_to, request, Got, RawPeer};
use futures_util::future::{join_all, select, Either};
use rtm_core::{Identity, Limits, RtmError};
use rtm_driver::broker::MemoryHub;
use rtm_driver::{CallContext, Listening, ServerBuilder, SubscribeRequest};
use serde_json::{json, Value};

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

/// `echo(x)`; `emit_others(event, n, text)`: emits `event` with `[n, text]`
/// to every connection but the caller; `emit_many_to_others(event, first,
/// count, text)`: the same for `n` in `first..first + count`, in one go
/// (one pass of the server), returning the fewest connections an emit
/// reached.
fn functions() -> ServerBuilder {
    ServerBuilder::new()
        .register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
            Ok::<_, RtmError>(x)
        })
        .register(
            "emit_others",
            |ctx: CallContext, (event, n, text): (String, u64, String)| async move {
                let me = ctx.info.id;
                ctx.server.emit(&event, |info| info.id != me, &(n, text))?;
                Ok::<_, RtmError>(())
            },
        )
        .register(
            "emit_many_to_others",
            |ctx: CallContext, (event, first, count, text): (String, u64, u64, String)| async move {
                let me = ctx.info.id;
                let mut reached = usize::MAX;
                for n in first..first + count {
                    let sent = ctx.server.emit(&event, |info| info.id != me, &(n, &text))?;
                    reached = reached.min(sent);
                }
                Ok::<_, RtmError>(reached)
            },
        )
}

async fn echo(peer: &mut RawPeer, id: &str, limit: Duration) -> Value {
    let call = json!({"id": id, "type": "invoke", "function": "echo", "data": [id]});
    peer.send(&request(&call)).await;
    reply_to(peer, id, limit).await
}

fn error_code(reply: &Value) -> &str {
    reply["data"]["error"]["code"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------
// 1. A burst leaves readers waiting for the heartbeat.

/// How a burst is sent.
#[derive(Clone, Copy, Debug)]
enum Burst {
    /// 20 pipelined calls (one write), each emitting one event.
    PipelinedCalls,
    /// One call emitting the 20 events in one go.
    OneCall,
}

/// Five connections that only read (they send nothing after the
/// handshake), a sender, and `bursts` bursts of 20 events of 50 KB emitted
/// to every connection but the sender: every reader gets all 20 within 5 s,
/// burst after burst (the heartbeat, 25 s, is not what delivers them).
async fn bursts_reach_readers_that_never_send(adapter: Adapter, form: Burst, bursts: u64) {
    const READERS: usize = 5;
    const EVENTS: u64 = 20;
    const BYTES: usize = 50_000;
    const LIMIT: Duration = Duration::from_secs(5);
    let server = listen(adapter, functions()).await;
    let addr = server.local_addr();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(RawPeer::upgrade(addr, "/").await);
    }
    let mut sender = RawPeer::upgrade(addr, "/").await;
    let handle = server.handle().clone();
    until("every connection in the server", || {
        handle.connection_count() == READERS + 1
    })
    .await;
    let text = "x".repeat(BYTES);
    let mut slowest = Duration::ZERO;
    for burst in 0..bursts {
        let first = burst * EVENTS;
        let mut calls = Vec::new();
        let mut ids = Vec::new();
        match form {
            Burst::PipelinedCalls => {
                for n in first..first + EVENTS {
                    let id = format!("b{n}");
                    let call = json!({"id": id, "type": "invoke",
                                      "function": "emit_others", "data": ["big", n, text]});
                    calls.extend(request(&call));
                    ids.push(id);
                }
            }
            Burst::OneCall => {
                let id = format!("b{first}");
                let call = json!({"id": id, "type": "invoke", "function": "emit_many_to_others",
                                  "data": ["big", first, EVENTS, text]});
                calls.extend(request(&call));
                ids.push(id);
            }
        }
        let started = Instant::now();
        sender.send(&calls).await;
        let reads = readers.iter_mut().map(|peer| async move {
            let mut got = Vec::new();
            let outcome = within_opt(LIMIT, async {
                while (got.len() as u64) < EVENTS {
                    match next(peer, LIMIT).await {
                        Got::Json(v) if v["event"] == json!("big") => {
                            got.push(v["data"][0].as_u64().unwrap_or(u64::MAX))
                        }
                        other => return Err(format!("{other:?}")),
                    }
                }
                Ok(())
            })
            .await;
            (got, outcome)
        });
        let results = join_all(reads).await;
        slowest = slowest.max(started.elapsed());
        let mut short = Vec::new();
        for (r, (got, outcome)) in results.iter().enumerate() {
            match outcome {
                Some(Ok(())) => {
                    let want: Vec<u64> = (first..first + EVENTS).collect();
                    assert_eq!(got, &want, "burst {burst}: reader {r}: events out of order");
                }
                Some(Err(other)) => {
                    panic!(
                        "burst {burst}: reader {r} got {other} after {} events",
                        got.len()
                    )
                }
                None => short.push(format!("reader {r}: {} of {EVENTS}", got.len())),
            }
        }
        assert!(
            short.is_empty(),
            "{form:?}, burst {burst} of {bursts}: not every reader got the {EVENTS} events of \
             {BYTES} bytes within {LIMIT:?}: {}",
            short.join(", ")
        );
        for id in &ids {
            let reply = reply_to(&mut sender, id, LIMIT).await;
            assert!(
                reply.get("data").is_some() && error_code(&reply).is_empty(),
                "{reply}"
            );
        }
    }
    eprintln!("{adapter:?}: {bursts} bursts ({form:?}) reached all {READERS} readers, the slowest in {slowest:?}");
    soon("shutdown", server.shutdown()).await;
}

/// 40 bursts, each 20 calls pipelined in one write, each call emitting a
/// 50 KB event to the five readers. (Before, a reader got some events
/// promptly and the rest only when the heartbeat woke its task: its mailbox
/// is taken in 64 KiB slices, and nothing woke the task for the next slice
/// once a write completed with events still in the mailbox.)
async fn a_burst_of_pipelined_calls_reaches_readers_that_never_send(adapter: Adapter) {
    bursts_reach_readers_that_never_send(adapter, Burst::PipelinedCalls, 40).await;
}

/// 20 bursts, each one call emitting 20 events of 50 KB to the five readers
/// in one go (the same fault, more reliably shown).
async fn a_burst_emitted_by_one_call_reaches_readers_that_never_send(adapter: Adapter) {
    bursts_reach_readers_that_never_send(adapter, Burst::OneCall, 20).await;
}

/// `Some(output)` if `future` completes within `limit`.
async fn within_opt<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    conformance::adapter::timeout_opt(limit, future).await
}

// ---------------------------------------------------------------------------
// 2a. Readers that keep up are closed as slow consumers.

/// An event string of about 10 KB: 100 such events are a little over the
/// default `max_outbound_bytes` (1 MiB) in all.
const EVENT_BYTES: usize = 10_500;

/// Reads `count` "big" events numbered from `first`, in order; panics on a
/// close, a gap or silence.
async fn read_events(peer: &mut RawPeer, what: &str, first: u64, count: u64, limit: Duration) {
    let mut got = 0u64;
    let outcome = within_opt(limit, async {
        while got < count {
            match next(peer, Duration::from_secs(5)).await {
                Got::Json(v) if v["event"] == json!("big") => {
                    assert_eq!(v["data"][0], json!(first + got), "{what}: out of order");
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
        Some(Err(other)) => {
            panic!("{what}: after {got} of {count} events the reader got {other:?}")
        }
        None => panic!("{what}: only {got} of {count} events within {limit:?}"),
    }
}

/// One pass of the server: a call on `sender` emitting `count` events of
/// ~10 KB to every other connection, numbered from `first`; returns the
/// fewest connections one of them reached.
async fn emit_pass(sender: &mut RawPeer, first: u64, count: u64) -> u64 {
    let text = "y".repeat(EVENT_BYTES);
    let id = format!("pass{first}");
    let call = json!({"id": id, "type": "invoke", "function": "emit_many_to_others",
                      "data": ["big", first, count, text]});
    sender.send(&request(&call)).await;
    let reply = reply_to(sender, &id, Duration::from_secs(10)).await;
    reply["data"]
        .as_u64()
        .unwrap_or_else(|| panic!("emit_many_to_others: {reply}"))
}

/// With the default bound (1 MiB): a reader reading as fast as it can and a
/// paused one (a 4 KiB receive window, never read). Passes of 100 events
/// of ~10 KB, each emitted by one call (one pass of the server: a little
/// over 1 MiB at once): the fast reader gets every event of every pass and
/// is never closed; the paused one is closed 1013 `rtm/slow-consumer` once
/// more than the bound waits for it.
async fn a_reader_that_keeps_up_is_never_a_slow_consumer_while_a_paused_one_is(adapter: Adapter) {
    const PER_PASS: u64 = 100;
    const MAX_PASSES: u64 = 20;
    // Long enough to read the paused peer's close after the fact.
    let builder = functions().close_grace(Duration::from_secs(10));
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut fast = RawPeer::upgrade(addr, "/").await;
    let mut paused = RawPeer::upgrade_with_window(addr, "/", 4096).await;
    let mut sender = RawPeer::upgrade(addr, "/").await;
    let handle = server.handle().clone();
    until("every connection in the server", || {
        handle.connection_count() == 3
    })
    .await;
    let mut passes = 0;
    let mut paused_gone = false;
    for pass in 0..MAX_PASSES {
        let first = pass * PER_PASS;
        let reached = emit_pass(&mut sender, first, PER_PASS).await;
        let what = format!(
            "the fast reader, pass {pass} ({PER_PASS} events, ~{} KB in one pass)",
            PER_PASS as usize * EVENT_BYTES / 1000
        );
        read_events(&mut fast, &what, first, PER_PASS, Duration::from_secs(10)).await;
        passes += 1;
        if reached < 2 {
            paused_gone = true;
            break;
        }
    }
    assert!(
        paused_gone,
        "the paused reader is still served after {passes} passes of {PER_PASS} events of {EVENT_BYTES} bytes"
    );
    let (code, reason, _) = within(
        "the paused reader's close",
        Duration::from_secs(30),
        paused.expect_close(100_000),
    )
    .await;
    assert_eq!((code, reason.as_str()), (1013, "rtm/slow-consumer"));
    let reply = echo(&mut fast, "still-open", Duration::from_secs(5)).await;
    assert_eq!(reply["data"], json!("still-open"));
    eprintln!("{adapter:?}: the paused reader was closed after {passes} pass(es)");
    // Gone before shutdown: it would wait the 10 s close grace for them.
    drop((fast, paused, sender));
    soon("shutdown", server.shutdown()).await;
}

/// A reader that keeps up gets a one-pass burst (one call) of 2 MB, then
/// one of 8 MB, whole, and is never closed: the bound is on what waits for
/// a reader that does not read, not on what one pass delivers.
async fn a_reader_that_keeps_up_survives_one_pass_bursts_of_2_mb_and_8_mb(adapter: Adapter) {
    let server = listen(adapter, functions()).await;
    let addr = server.local_addr();
    let mut fast = RawPeer::upgrade(addr, "/").await;
    let mut sender = RawPeer::upgrade(addr, "/").await;
    let handle = server.handle().clone();
    until("both connections in the server", || {
        handle.connection_count() == 2
    })
    .await;
    let mut first = 0;
    for count in [200u64, 800] {
        let what = format!(
            "a one-pass burst of {count} events (~{} MB)",
            count as usize * EVENT_BYTES / 1_000_000
        );
        let started = Instant::now();
        let (_, ()) = futures_util::future::join(
            emit_pass(&mut sender, first, count),
            read_events(&mut fast, &what, first, count, Duration::from_secs(30)),
        )
        .await;
        eprintln!("{adapter:?}: {what} read in {:?}", started.elapsed());
        first += count;
    }
    let reply = echo(&mut fast, "still-open", Duration::from_secs(5)).await;
    assert_eq!(reply["data"], json!("still-open"));
    soon("shutdown", server.shutdown()).await;
}

// ---------------------------------------------------------------------------
// 5. Overlapping subscribes cost cubic time.

/// Lets the task it runs on be polled once more before it completes.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// This process's CPU time so far (user + system; Linux, 100 Hz ticks).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // After the command's `)`: field 3 (state) is index 0; utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// One connection pipelines a chain of 255 subscribes of 128 tags, each
/// sharing one tag with the one before, while the subscribe authorizer is
/// slow for the first 300 ms (so the others queue behind the first): the
/// whole chain is answered within 10 s, and another connection's calls are
/// answered within 1 s throughout. (Before, each answer rescanned the
/// queue against every earlier request, tag by tag: cubic in the chain's
/// length, on the connection's task.) No broker and no per-address budget:
/// the chain's 32,000 subscriptions would meet the server's budgets, which
/// are not what this checks.
async fn a_chain_of_overlapping_subscribes_is_answered_promptly_and_stalls_no_one(
    adapter: Adapter,
) {
    const CHAIN: usize = 255;
    const TAGS: usize = 128;
    const CHAIN_LIMIT: Duration = Duration::from_secs(10);
    const ECHO_LIMIT: Duration = Duration::from_secs(1);
    let limits = Limits {
        max_in_flight: 1024,
        max_subscriptions: CHAIN * TAGS,
        max_subscriptions_per_ip: None,
        ..Limits::default()
    };
    // Slow until `slow_until`: the subscribes it decides meanwhile wait for then.
    let slow_until: Arc<Mutex<Option<Instant>>> = Arc::default();
    let until_set = slow_until.clone();
    let builder =
        functions()
            .limits(limits)
            .authorize_subscriptions(move |_req: SubscribeRequest| {
                let until = *until_set.lock().unwrap();
                async move {
                    match until {
                        Some(until) if Instant::now() < until => {
                            async_io::Timer::at(until).await;
                        }
                        // Decided on a later pass of the connection's task
                        // (not the whole queue in one pass).
                        _ => yield_once().await,
                    }
                    true
                }
            });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut chain = RawPeer::upgrade(addr, "/").await;
    let mut other = RawPeer::upgrade(addr, "/").await;
    let handle = server.handle().clone();
    until("both connections in the server", || {
        handle.connection_count() == 2
    })
    .await;
    assert_eq!(
        echo(&mut other, "warm", ECHO_LIMIT).await["data"],
        json!("warm")
    );

    let mut requests = Vec::new();
    for i in 0..CHAIN {
        let start = i * (TAGS - 1);
        let tags: Vec<String> = (start..start + TAGS).map(|t| format!("t{t}")).collect();
        let sub = json!({"id": format!("s{i}"), "type": "subscribe", "event": "e", "tags": tags});
        requests.extend(request(&sub));
    }
    *slow_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(300));
    let cpu = process_cpu();
    let started = Instant::now();
    chain.send(&requests).await;

    let slowest = Cell::new(Duration::ZERO);
    let replies = Cell::new(0usize);
    let answered = async {
        let all = within_opt(CHAIN_LIMIT, async {
            for i in 0..CHAIN {
                match next(&mut chain, CHAIN_LIMIT).await {
                    Got::Json(v) => assert_eq!(v, json!({"id": format!("s{i}"), "data": true})),
                    other => panic!("subscribe {i} of the chain: got {other:?}"),
                }
                replies.set(i + 1);
            }
        })
        .await;
        assert!(
            all.is_some(),
            "only {} of the chain's {CHAIN} subscribes were answered within {CHAIN_LIMIT:?}",
            replies.get()
        );
        started.elapsed()
    };
    let pinging = async {
        for n in 0u64.. {
            let id = format!("e{n}");
            let asked = Instant::now();
            let reply = within_opt(ECHO_LIMIT, echo(&mut other, &id, 2 * ECHO_LIMIT)).await;
            let Some(reply) = reply else {
                panic!(
                    "echo {n} on another connection: no reply within {ECHO_LIMIT:?} \
                     ({} of the chain's {CHAIN} subscribes answered so far, {:?} after they were sent)",
                    replies.get(),
                    started.elapsed()
                )
            };
            assert_eq!(reply["data"], json!(id));
            slowest.set(slowest.get().max(asked.elapsed()));
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
    };
    let took = match select(std::pin::pin!(answered), std::pin::pin!(pinging)).await {
        Either::Left((took, _)) => took,
        Either::Right(_) => unreachable!("the pings never end"),
    };
    eprintln!(
        "{adapter:?}: a chain of {CHAIN} overlapping subscribes of {TAGS} tags answered in {took:?} \
         (process CPU meanwhile {:?}); another connection's slowest echo {:?}",
        process_cpu().saturating_sub(cpu),
        slowest.get()
    );
    soon("shutdown", server.shutdown()).await;
}

// ---------------------------------------------------------------------------
// 6. One address takes the whole broker-topic budget.

/// One user opens connection after connection from 127.0.0.1 and
/// subscribes to fresh tags (requests of 128, then of fewer when refused,
/// 256 per connection) until the server refuses it even one more
/// (`rtm/too-many-subscriptions`): it holds all the broker topics it can.
/// Another user (from the same address: every peer here is 127.0.0.1) can
/// then still subscribe to a new topic. (Before, `max_broker_topics` was
/// one server-wide budget that the first user took whole.)
async fn one_user_holding_all_the_topics_it_can_leaves_room_for_another_users_subscribe(
    adapter: Adapter,
) {
    const MAX_TOPICS: usize = 1_000;
    const PER_CONNECTION: usize = 256;
    const MAX_CONNECTIONS: usize = 20;
    let hub = MemoryHub::new();
    let limits = Limits {
        max_broker_topics: MAX_TOPICS,
        max_subscriptions: PER_CONNECTION,
        ..Limits::default()
    };
    let builder = functions()
        .limits(limits)
        .broker(Arc::new(hub.broker()))
        .auth(|_info, data: Vec<Value>| async move {
            let user = data
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| RtmError::handler("the token is the user id"))?
                .to_owned();
            Ok(Identity::new(user.as_str(), json!({ "user": user })))
        });
    // One user's share of the server's topics (the default, 4,096, is sized
    // for the default 100,000 topics; a server that lowers one lowers both).
    let builder = builder.max_subscriptions_per_user(Some(MAX_TOPICS / 4));
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut held: Vec<RawPeer> = Vec::new();
    let mut on_this_connection = PER_CONNECTION;
    let mut size = 128usize;
    let mut fresh = 0usize;
    let mut requests = 0usize;
    let mut last_refusal = None;
    while size > 0 {
        if on_this_connection + size > PER_CONNECTION {
            assert!(
                held.len() < MAX_CONNECTIONS,
                "one user subscribed {fresh} fresh tags on {MAX_CONNECTIONS} connections and could go on"
            );
            let mut peer = RawPeer::upgrade(addr, "/").await;
            let auth = json!({"id": "a", "type": "auth", "data": ["mallory"]});
            peer.send(&request(&auth)).await;
            let reply = reply_to(&mut peer, "a", Duration::from_secs(5)).await;
            assert_eq!(reply["data"], json!({"user": "mallory"}), "{reply}");
            held.push(peer);
            on_this_connection = 0;
        }
        let peer = held.last_mut().unwrap();
        let tags: Vec<String> = (fresh..fresh + size).map(|t| format!("m{t}")).collect();
        requests += 1;
        let id = format!("s{requests}");
        let sub = json!({"id": id, "type": "subscribe", "event": "e", "tags": tags});
        peer.send(&request(&sub)).await;
        let reply = reply_to(peer, &id, Duration::from_secs(5)).await;
        if reply["data"] == json!(true) {
            fresh += size;
            on_this_connection += size;
        } else {
            assert_eq!(error_code(&reply), "rtm/too-many-subscriptions", "{reply}");
            last_refusal = Some(reply);
            size /= 2;
        }
    }
    let topics = server.handle().broker_topics().len();
    eprintln!(
        "{adapter:?}: mallory holds {fresh} push topics on {} connections (the server {topics} topics); \
         refused: {}",
        held.len(),
        last_refusal.unwrap_or_default()
    );

    let mut victim = RawPeer::upgrade(addr, "/").await;
    let auth = json!({"id": "a", "type": "auth", "data": ["alice"]});
    victim.send(&request(&auth)).await;
    let reply = reply_to(&mut victim, "a", Duration::from_secs(5)).await;
    assert_eq!(reply["data"], json!({"user": "alice"}), "{reply}");
    let sub = json!({"id": "v", "type": "subscribe", "event": "e", "tags": ["alice-new-topic"]});
    victim.send(&request(&sub)).await;
    let reply = reply_to(&mut victim, "v", Duration::from_secs(5)).await;
    assert_eq!(
        reply["data"],
        json!(true),
        "another user's subscribe to a new topic, while one user holds all it can \
         ({fresh} push topics; the server {topics} of its {MAX_TOPICS} broker topics): {reply}"
    );
    soon("shutdown", server.shutdown()).await;
    drop(hub);
}

on_every_adapter!(
    a_burst_of_pipelined_calls_reaches_readers_that_never_send,
    a_burst_emitted_by_one_call_reaches_readers_that_never_send,
    a_reader_that_keeps_up_is_never_a_slow_consumer_while_a_paused_one_is,
    a_reader_that_keeps_up_survives_one_pass_bursts_of_2_mb_and_8_mb,
    a_chain_of_overlapping_subscribes_is_answered_promptly_and_stalls_no_one,
    one_user_holding_all_the_topics_it_can_leaves_room_for_another_users_subscribe,
);
