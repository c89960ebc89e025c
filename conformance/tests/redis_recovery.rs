//! Events with history survive a reconnect, against a real Redis, with the
//! Rust client on every adapter: a client whose server goes away comes back
//! on the other server and gets what it missed, in order, once; a client
//! away longer than the history, or whose streams Redis lost (`FLUSHALL`),
//! is told (`ClientEvent::Resync`) and goes on with the live events.
//!
//! The client reaches the servers through a [`Switch`] (a load balancer
//! that is cut and pointed elsewhere), so "its server went away" is the
//! client's connection ending and the next one reaching the other server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance::adapter::{until_within, Adapter};
use conformance::on_every_adapter;
use conformance::switch::Switch;
use rtm_core::{ClientEvent, ClientState, HistoryConfig, Identity, RtmError, StreamOptions};
use rtm_driver::{ClientHandle, ClientOptions, Listening, ServerBuilder, Subscription};
use serde_json::{json, Value};

mod common;
use common::shared_redis::SharedRedis;

const WAIT: Duration = Duration::from_secs(15);

/// A server whose `score` events keep their `size` newest in history;
/// the token is the user id.
fn server_with_history(size: usize) -> ServerBuilder {
    ServerBuilder::new()
        .auth(|_info, data: Vec<Value>| async move {
            let user = data
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| RtmError::handler("the token is the user id"))?
                .to_owned();
            Ok(Identity::new(user.as_str(), json!({})))
        })
        .history(HistoryConfig::default().enable(
            "score",
            StreamOptions {
                size,
                ttl: Duration::from_secs(60),
            },
        ))
}

/// A client of `adapter` through `switch`, holding `score [m1]`: what it
/// got (each event's first argument, in order), and its lifecycle events.
struct Watcher {
    client: ClientHandle,
    got: Arc<Mutex<Vec<u64>>>,
    lifecycle: async_channel::Receiver<ClientEvent>,
    _sub: Subscription,
}

impl Watcher {
    async fn start(adapter: Adapter, switch: &Switch) -> Watcher {
        Watcher::start_as(adapter, switch, "alice").await
    }

    async fn start_as(adapter: Adapter, switch: &Switch, token: &str) -> Watcher {
        let options = ClientOptions::default()
            .auth(json!(token))
            .reconnect_delay(Duration::from_millis(100));
        let client = adapter.start(&switch.url(), options);
        let lifecycle = client.lifecycle();
        client.wait_open(WAIT).await.expect("the client opens");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let sub = client
            .subscribe_push("score", &["m1"], move |(n,): (u64,)| {
                sink.lock().unwrap().push(n);
            })
            .await
            .expect("subscribed");
        Watcher {
            client,
            got,
            lifecycle,
            _sub: sub,
        }
    }

    fn got(&self) -> Vec<u64> {
        self.got.lock().unwrap().clone()
    }

    async fn until_got(&self, n: usize) {
        let got = self.got.clone();
        until_within(&format!("{n} events"), WAIT, || {
            got.lock().unwrap().len() >= n
        })
        .await;
    }

    /// The resyncs told so far, as (tag, reason).
    fn resyncs(&self) -> Vec<(String, String)> {
        std::iter::from_fn(|| self.lifecycle.try_recv().ok())
            .filter_map(|e| match e {
                ClientEvent::Resync { tag, reason, .. } => Some((tag, reason)),
                _ => None,
            })
            .collect()
    }

    /// Waits for the first resyncs told; returns them as (tag, reason).
    async fn until_resync(&self) -> Vec<(String, String)> {
        let mut told = Vec::new();
        until_within("a resync", WAIT, || {
            told.extend(self.resyncs());
            !told.is_empty()
        })
        .await;
        told
    }

    /// Waits until the client lost its connection, then until it is back.
    async fn through_a_reconnect(&self, while_away: impl FnOnce()) {
        let client = self.client.clone();
        until_within("the client to see the drop", WAIT, || {
            client.state() != ClientState::Open
        })
        .await;
        while_away();
        self.client.wait_open(WAIT).await.expect("back open");
    }
}

fn push(server: &Listening, from: u64, to: u64) {
    for n in from..=to {
        server
            .handle()
            .push("score", &["m1".to_owned()], &(n,))
            .unwrap_or_else(|e| panic!("push {n}: {e}"));
    }
}

/// Server A goes away while alice holds her position; she comes back on B
/// and gets the 30 events sent meanwhile, then the live ones: 1..=50, each
/// once, in order, and no resync.
async fn a_client_whose_server_went_away_recovers_on_the_other_server_exactly_once_in_order(
    adapter: Adapter,
) {
    let redis = SharedRedis::new("recover-other");
    let a = redis.server(adapter, server_with_history(100), "a").await;
    let b = redis.server(adapter, server_with_history(100), "b").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let alice = Watcher::start(adapter, &switch).await;
    push(&b, 1, 10);
    alice.until_got(10).await;
    // A is gone (its connections with it); the balancer sends her to B.
    switch.point_to(Some(b.local_addr()));
    switch.cut();
    alice.through_a_reconnect(|| push(&b, 11, 40)).await;
    alice.until_got(40).await;
    push(&a, 41, 50);
    alice.until_got(50).await;
    tokio_free_sleep(Duration::from_millis(200)).await;
    assert_eq!(alice.got(), (1..=50).collect::<Vec<_>>());
    assert_eq!(alice.resyncs(), vec![]);
    alice.client.close();
}

/// Alice is away while 60 events are sent to a stream that keeps 20: she
/// is told the stream was trimmed, gets none of the missed ones, and then
/// the live ones.
async fn a_client_away_longer_than_the_history_is_told_and_goes_on_live(adapter: Adapter) {
    let redis = SharedRedis::new("recover-trimmed");
    let a = redis.server(adapter, server_with_history(20), "a").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let alice = Watcher::start(adapter, &switch).await;
    push(&a, 1, 5);
    alice.until_got(5).await;
    switch.cut();
    alice.through_a_reconnect(|| push(&a, 6, 65)).await;
    assert_eq!(
        alice.until_resync().await,
        vec![("m1".to_owned(), "trimmed".to_owned())]
    );
    push(&a, 66, 70);
    alice.until_got(10).await;
    assert_eq!(alice.got(), vec![1, 2, 3, 4, 5, 66, 67, 68, 69, 70]);
    alice.client.close();
}

/// Redis loses everything (`FLUSHALL`) while alice is away: she is told the
/// stream's epoch changed, and goes on with the live events, whose new
/// positions she takes.
async fn a_client_whose_streams_redis_lost_is_told_the_epoch_changed(adapter: Adapter) {
    let redis = SharedRedis::new("recover-flushed");
    let a = redis.server(adapter, server_with_history(100), "a").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let alice = Watcher::start(adapter, &switch).await;
    push(&a, 1, 3);
    alice.until_got(3).await;
    switch.cut();
    let mut con = redis.connection();
    alice
        .through_a_reconnect(|| {
            let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
            push(&a, 4, 6);
        })
        .await;
    // Both of her streams were lost: the room's, and her user's (she
    // tracks it from her auth).
    let mut told = alice.until_resync().await;
    if told.len() < 2 {
        told.extend(alice.until_resync().await);
    }
    told.sort();
    assert_eq!(
        told,
        vec![
            ("m1".to_owned(), "epoch-changed".to_owned()),
            ("user".to_owned(), "epoch-changed".to_owned()),
        ]
    );
    push(&a, 7, 8);
    alice.until_got(5).await;
    assert_eq!(alice.got(), vec![1, 2, 3, 7, 8]);
    alice.client.close();
}

/// Two `rtm-fixture` processes share Redis with history for `score`; the
/// one alice is on is killed (SIGKILL: no close, no goodbye) while she
/// holds her position, and the balancer sends her to the other: she gets
/// the 30 events sent meanwhile, then the live ones, each once, in order.
async fn a_client_whose_server_process_was_killed_recovers_on_the_other(adapter: Adapter) {
    let redis = SharedRedis::new("recover-killed");
    let url = redis.redis.url();
    let flags = [
        "--auth",
        "--redis",
        url.as_str(),
        "--namespace",
        redis.namespace.as_str(),
        "--history-events",
        "score",
    ];
    let a = common::fixture_on(adapter, &flags);
    let b = common::fixture_on(adapter, &flags);
    let at = |f: &conformance::Fixture| -> std::net::SocketAddr {
        format!("127.0.0.1:{}", f.port()).parse().unwrap()
    };
    let switch = Switch::start(Some(at(&a))).unwrap();
    let alice = Watcher::start_as(adapter, &switch, "user:alice").await;
    let pusher = adapter
        .connect(
            &format!("ws://{}/", at(&b)),
            ClientOptions::default().auth(json!("user:bob")),
        )
        .await
        .expect("the pusher opens");
    let push_via_b = |from: u64, to: u64| {
        let pusher = pusher.clone();
        async move {
            for n in from..=to {
                pusher
                    .call_wait::<Value, _>("push", &json!(["score", ["m1"], n]))
                    .await
                    .unwrap_or_else(|e| panic!("push {n}: {e}"));
            }
        }
    };
    push_via_b(1, 10).await;
    alice.until_got(10).await;
    let b_addr = at(&b);
    drop(a);
    switch.point_to(Some(b_addr));
    let client = alice.client.clone();
    until_within("alice to see her server die", WAIT, || {
        client.state() != ClientState::Open
    })
    .await;
    push_via_b(11, 40).await;
    alice.client.wait_open(WAIT).await.expect("back open, on B");
    alice.until_got(40).await;
    push_via_b(41, 50).await;
    alice.until_got(50).await;
    tokio_free_sleep(Duration::from_millis(200)).await;
    assert_eq!(alice.got(), (1..=50).collect::<Vec<_>>());
    assert_eq!(alice.resyncs(), vec![]);
    alice.client.close();
    pusher.close();
}

/// Direct messages (Publish to a user, with history) sent while alice was
/// away reach her when she is back on the other server: before her auth
/// is answered, each once, in order; then the live ones.
async fn a_user_back_on_the_other_server_gets_the_publishes_it_missed(adapter: Adapter) {
    let redis = SharedRedis::new("recover-dm");
    let with_dm = || {
        server_with_history(100)
            .history(HistoryConfig::default().enable("dm", StreamOptions::default()))
    };
    let a = redis.server(adapter, with_dm(), "a").await;
    let b = redis.server(adapter, with_dm(), "b").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let options = ClientOptions::default()
        .auth(json!("alice"))
        .reconnect_delay(Duration::from_millis(100));
    let client = adapter.start(&switch.url(), options);
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let _dms = client.subscribe("dm", move |(n,): (u64,)| sink.lock().unwrap().push(n));
    client.wait_open(WAIT).await.expect("the client opens");
    let dm = |server: &Listening, from: u64, to: u64| {
        for n in from..=to {
            server
                .handle()
                .publish("alice", "dm", &(n,))
                .unwrap_or_else(|e| panic!("dm {n}: {e}"));
        }
    };
    let until = |n: usize| {
        let got = got.clone();
        async move {
            until_within(&format!("{n} dms"), WAIT, || got.lock().unwrap().len() >= n).await;
        }
    };
    dm(&b, 1, 5);
    until(5).await;
    switch.point_to(Some(b.local_addr()));
    switch.cut();
    let watching = client.clone();
    until_within("alice to see the drop", WAIT, || {
        watching.state() != ClientState::Open
    })
    .await;
    dm(&b, 6, 20);
    client.wait_open(WAIT).await.expect("back open, on B");
    until(20).await;
    dm(&a, 21, 25);
    until(25).await;
    tokio_free_sleep(Duration::from_millis(200)).await;
    assert_eq!(*got.lock().unwrap(), (1..=25).collect::<Vec<_>>());
    client.close();
}

/// Pushes to two tags alice holds both of reach her once each, live and
/// after a recovery of both streams (each stream brings every push again:
/// its push id shows it once).
async fn a_push_to_two_tags_held_by_one_client_is_shown_once_live_and_recovered(adapter: Adapter) {
    let redis = SharedRedis::new("recover-two-tags");
    let a = redis.server(adapter, server_with_history(100), "a").await;
    let b = redis.server(adapter, server_with_history(100), "b").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let options = ClientOptions::default()
        .auth(json!("alice"))
        .reconnect_delay(Duration::from_millis(100));
    let client = adapter.start(&switch.url(), options);
    client.wait_open(WAIT).await.expect("the client opens");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let _sub = client
        .subscribe_push("score", &["m1", "m2"], move |(n,): (u64,)| {
            sink.lock().unwrap().push(n);
        })
        .await
        .expect("subscribed");
    let both = ["m1".to_owned(), "m2".to_owned()];
    let push_both = |server: &Listening, from: u64, to: u64| {
        for n in from..=to {
            server.handle().push("score", &both, &(n,)).unwrap();
        }
    };
    let until = |n: usize| {
        let got = got.clone();
        async move {
            until_within(&format!("{n} pushes"), WAIT, || {
                got.lock().unwrap().len() >= n
            })
            .await;
        }
    };
    push_both(&b, 1, 5);
    until(5).await;
    switch.point_to(Some(b.local_addr()));
    switch.cut();
    let watching = client.clone();
    until_within("alice to see the drop", WAIT, || {
        watching.state() != ClientState::Open
    })
    .await;
    push_both(&a, 6, 15);
    client.wait_open(WAIT).await.expect("back open, on B");
    until(15).await;
    push_both(&b, 16, 20);
    until(20).await;
    tokio_free_sleep(Duration::from_millis(200)).await;
    assert_eq!(*got.lock().unwrap(), (1..=20).collect::<Vec<_>>());
    client.close();
}

/// Redis goes down while alice is away, and is still down when she comes
/// back: her subscribe is refused for a while (`rtm/broker-unavailable`)
/// and her client sends it again on its reconnect schedule; Redis comes
/// back without its data, so she is told the streams' epochs changed,
/// then gets the live events.
async fn a_subscribe_refused_while_redis_is_down_is_retried_and_recovers_when_it_is_back(
    adapter: Adapter,
) {
    let mut redis = SharedRedis::new("recover-redis-down");
    let a = redis.server(adapter, server_with_history(100), "a").await;
    let switch = Switch::start(Some(a.local_addr())).unwrap();
    let alice = Watcher::start(adapter, &switch).await;
    push(&a, 1, 3);
    alice.until_got(3).await;
    switch.cut();
    let client = alice.client.clone();
    until_within("alice to see the drop", WAIT, || {
        client.state() != ClientState::Open
    })
    .await;
    redis.redis.kill();
    let handle = a.handle().clone();
    until_within("the server to see Redis down", WAIT, || {
        handle.broker_state() != Some(rtm_driver::broker::BrokerState::Up)
    })
    .await;
    // Back on the server while Redis is down: signed in (auth goes on
    // without the user's topic), the subscribe refused and retried.
    alice.client.wait_open(WAIT).await.expect("signed in again");
    let lifecycle = alice.lifecycle.clone();
    let mut retries = 0;
    until_within("a subscribe retry", WAIT, || {
        retries += std::iter::from_fn(|| lifecycle.try_recv().ok())
            .filter(|e| matches!(e, ClientEvent::SubscribeRetry { .. }))
            .count();
        retries > 0
    })
    .await;
    redis.redis.restart().expect("Redis back");
    until_within("the server to see Redis up", WAIT, || {
        handle.broker_state() == Some(rtm_driver::broker::BrokerState::Up)
    })
    .await;
    let told = alice.until_resync().await;
    assert!(
        told.contains(&("m1".to_owned(), "epoch-changed".to_owned())),
        "{told:?}"
    );
    push(&a, 4, 6);
    alice.until_got(6).await;
    assert_eq!(alice.got(), (1..=6).collect::<Vec<_>>());
    alice.client.close();
}

/// A runtime-free sleep (the tests run on three runtimes).
async fn tokio_free_sleep(duration: Duration) {
    async_io::Timer::after(duration).await;
}

on_every_adapter!(
    a_client_whose_server_went_away_recovers_on_the_other_server_exactly_once_in_order,
    a_client_away_longer_than_the_history_is_told_and_goes_on_live,
    a_client_whose_streams_redis_lost_is_told_the_epoch_changed,
    a_client_whose_server_process_was_killed_recovers_on_the_other,
    a_user_back_on_the_other_server_gets_the_publishes_it_missed,
    a_push_to_two_tags_held_by_one_client_is_shown_once_live_and_recovered,
    a_subscribe_refused_while_redis_is_down_is_retried_and_recovers_when_it_is_back,
);
