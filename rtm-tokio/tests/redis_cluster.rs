//! Servers sharing one Redis form a cluster: Publish and Push cross servers
//! exactly once per connection, namespaces stay apart, and a Redis restart
//! is survived without restarting any server.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_redis::testing::{RedisServer, TestRedis};
use rtm_redis::{RedisBroker, RedisBrokerConfig};
use rtm_tokio::broker::BrokerState;
use rtm_tokio::{
    Client, ClientOptions, Identity, Listening, RtmError, Server, ServerBuilderExt, TokioRuntime,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn server(redis_url: &str, namespace: &str) -> Listening {
    let builder = Server::builder().auth(|_info, data: Vec<Value>| async move {
        let user = data
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| RtmError::handler("token must be a user id"))?
            .to_owned();
        Ok(Identity::new(user.as_str(), json!({ "user": user })))
    });
    let id = builder.config().server_id.clone();
    let config = RedisBrokerConfig::new(redis_url, namespace, &id)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_probe_interval(Duration::from_millis(200))
        .with_probe_timeout(Duration::from_millis(300));
    let broker = RedisBroker::new(config, TokioRuntime::current()).expect("broker");
    let server = builder
        .namespace(namespace)
        .broker(Arc::new(broker))
        .listen("127.0.0.1:0")
        .await
        .expect("listen");
    wait_broker(&server, true).await;
    server
}

async fn wait_broker(server: &Listening, up: bool) {
    let deadline = Instant::now() + WAIT;
    while (server.handle().broker_state() == Some(BrokerState::Up)) != up {
        assert!(Instant::now() < deadline, "broker never became up={up}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Events = mpsc::UnboundedReceiver<(String, i64)>;

/// A client authenticated as `user`, recording ("dm" | "score", n) events.
async fn client(server: &Listening, user: &str) -> (Client, Events, Vec<rtm_tokio::Subscription>) {
    let options = ClientOptions::default().auth(json!(user));
    let client = Client::connect(&server.url(), options)
        .await
        .expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut guards = Vec::new();
    for event in ["dm", "score"] {
        let tx = tx.clone();
        guards.push(client.subscribe(event, move |(n,): (i64,)| {
            let _ = tx.send((event.to_owned(), n));
        }));
    }
    (client, rx, guards)
}

async fn next(rx: &mut Events) -> (String, i64) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("channel closed")
}

/// Publishes warm-up markers (negative numbers) until every receiver got one:
/// subscriptions travel to Redis asynchronously, and pub/sub is at most once.
async fn warm_up(publish: impl Fn(i64) -> Result<usize, RtmError>, rxs: &mut [&mut Events]) {
    let deadline = Instant::now() + WAIT;
    let mut marker = -1;
    for rx in rxs.iter_mut() {
        loop {
            assert!(
                Instant::now() < deadline,
                "cross-server delivery never started"
            );
            let _ = publish(marker);
            marker -= 1;
            match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                Ok(Some((_, n))) if n < 0 => break,
                Ok(Some(other)) => panic!("unexpected {other:?} during warm-up"),
                _ => {}
            }
        }
    }
    // Let the remaining markers arrive, then drop them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for rx in rxs.iter_mut() {
        while let Ok((_, n)) = rx.try_recv() {
            assert!(n < 0, "unexpected {n} during warm-up");
        }
    }
}

/// Receives exactly `1..=count` in order, then nothing but the end marker.
async fn expect_sequence(rx: &mut Events, event: &str, count: i64) {
    for expected in 1..=count {
        let (name, n) = next(rx).await;
        assert_eq!((name.as_str(), n), (event, expected), "order or duplicate");
    }
    let (_, end) = next(rx).await;
    assert_eq!(
        end,
        i64::MAX,
        "an extra delivery arrived before the end marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_the_user_on_every_server_once_per_connection_in_order() {
    let redis = TestRedis::get().expect("redis");
    let ns = format!("t{}", std::process::id());
    let (s1, s2) = (
        server(&redis.url(), &ns).await,
        server(&redis.url(), &ns).await,
    );
    let (_a1, mut on_s1, _g1) = client(&s1, "alice").await;
    let (_a2, mut on_s2, _g2) = client(&s2, "alice").await;
    let (_a3, mut on_s2b, _g3) = client(&s2, "alice").await;
    let publish = |n: i64| s1.handle().publish("alice", "dm", &(n,));
    warm_up(publish, &mut [&mut on_s2, &mut on_s2b]).await;
    while on_s1.try_recv().is_ok() {}
    for n in 1..=200 {
        publish(n).expect("publish");
    }
    publish(i64::MAX).expect("publish");
    for rx in [&mut on_s1, &mut on_s2, &mut on_s2b] {
        expect_sequence(rx, "dm", 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_crosses_servers_once_per_connection_even_with_several_matching_tags() {
    let redis = TestRedis::get().expect("redis");
    let ns = format!("p{}", std::process::id());
    let (s1, s2) = (
        server(&redis.url(), &ns).await,
        server(&redis.url(), &ns).await,
    );
    let (bob, mut rx, _g) = client(&s2, "bob").await;
    let _held = bob
        .subscribe_push("score", &["a", "b"], |_: Vec<Value>| {})
        .await
        .expect("subscribe");
    let tags = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let push = |n: i64| s1.handle().push("score", &tags, &(n,));
    warm_up(push, &mut [&mut rx]).await;
    for n in 1..=50 {
        push(n).expect("push");
    }
    push(i64::MAX).expect("push");
    expect_sequence(&mut rx, "score", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_namespaces_do_not_see_each_other() {
    let redis = TestRedis::get().expect("redis");
    let id = std::process::id();
    let (red, blue) = (
        server(&redis.url(), &format!("red{id}")).await,
        server(&redis.url(), &format!("blue{id}")).await,
    );
    let red2 = server(&redis.url(), &format!("red{id}")).await;
    let (_c, mut on_blue, _g) = client(&blue, "carol").await;
    let (_d, mut on_red2, _g2) = client(&red2, "carol").await;
    warm_up(
        |n| red.handle().publish("carol", "dm", &(n,)),
        &mut [&mut on_red2],
    )
    .await;
    red.handle().publish("carol", "dm", &(7,)).expect("publish");
    assert_eq!(next(&mut on_red2).await, ("dm".to_owned(), 7));
    // Same user id, other namespace: nothing may arrive.
    let silent = tokio::time::timeout(Duration::from_millis(300), on_blue.recv()).await;
    assert!(silent.is_err(), "blue namespace received {silent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_with_errors_during_the_outage_and_no_duplicates() {
    let mut redis = RedisServer::start().expect("redis-server");
    let ns = format!("f{}", std::process::id());
    let (s1, s2) = (
        server(&redis.url(), &ns).await,
        server(&redis.url(), &ns).await,
    );
    let (_a, mut on_s2, _g) = client(&s2, "dave").await;
    let (_b, mut on_s1, _g1) = client(&s1, "erin").await;
    warm_up(
        |n| s1.handle().publish("dave", "dm", &(n,)),
        &mut [&mut on_s2],
    )
    .await;
    warm_up(
        |n| s2.handle().publish("erin", "dm", &(n,)),
        &mut [&mut on_s1],
    )
    .await;

    let start = Instant::now();
    let mut seq = 0;
    let mut sent = Vec::new();
    for _ in 0..20 {
        seq += 1;
        if s1.handle().publish("dave", "dm", &(seq,)).is_ok() {
            sent.push(seq);
        }
    }
    redis.kill();
    let killed = start.elapsed();
    // Publish every 5 ms through the outage; count the refusals.
    let mut errors = 0;
    let outage_end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < outage_end {
        seq += 1;
        match s1.handle().publish("dave", "dm", &(seq,)) {
            Ok(_) => sent.push(seq),
            Err(err) => {
                assert_eq!(err.code, rtm_tokio::ErrorCode::BrokerUnavailable);
                errors += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(errors > 0, "no publish was refused while Redis was down");
    redis.restart().expect("restart redis");
    let restarted = start.elapsed();
    wait_broker(&s1, true).await;
    wait_broker(&s2, true).await;
    let both_up = start.elapsed();

    // Deliveries resume both ways, without restarting a server.
    let resume_from = seq + 1;
    let deadline = Instant::now() + WAIT;
    let mut resumed = None;
    let mut seen: HashMap<i64, usize> = HashMap::new();
    while resumed.is_none() {
        assert!(Instant::now() < deadline, "deliveries did not resume");
        seq += 1;
        s1.handle()
            .publish("dave", "dm", &(seq,))
            .expect("publish after restart");
        if let Ok(Some((_, n))) =
            tokio::time::timeout(Duration::from_millis(50), on_s2.recv()).await
        {
            *seen.entry(n).or_default() += 1;
            if n >= resume_from {
                resumed = Some(start.elapsed());
            }
        }
    }
    warm_up(
        |n| s2.handle().publish("erin", "dm", &(n,)),
        &mut [&mut on_s1],
    )
    .await;
    // Drain the rest and check: nothing twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok((_, n)) = on_s2.try_recv() {
        *seen.entry(n).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
    println!(
        "fault timeline: killed at {killed:?}, {errors} publishes refused during the outage, \
         restarted at {restarted:?}, both brokers up at {both_up:?}, deliveries resumed at {:?}",
        resumed.unwrap_or_default()
    );
}
