//! RedisBroker against a real redis-server: `RTM_REDIS_URL`, or one started here.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rtm_broker::{Broker, BrokerError, BrokerEvent, BrokerState};
use rtm_core::Topic;
use rtm_redis::testing::{free_port, RedisServer, TestRedis};
use rtm_redis::RedisBroker;

fn redis() -> TestRedis {
    TestRedis::get().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_published_by_one_server_reaches_the_subscribed_server() {
    let redis = redis();
    let ns = unique_ns("roundtrip");
    let (a, mut a_events) = started_tokio(fast_config(&redis.url(), &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&redis.url(), &ns, "b")).await;
    a_events.wait_up();
    b_events.wait_up();
    assert_eq!(a.state(), BrokerState::Up);

    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    a.publish(&topic, "hello".into()).await.unwrap();
    b_events.wait_message(&topic, "hello");

    assert_eq!(a.stats().published, 1);
    assert_eq!(b.stats().received, 1);
    assert!(
        b.stats().probes_sent >= 1,
        "connecting verifies with a probe"
    );
}

#[test]
fn round_trip_works_on_smol_without_tokio() {
    let redis = redis();
    smol::block_on(async {
        let ns = unique_ns("smol");
        let (a, mut a_events) = started_smol(fast_config(&redis.url(), &ns, "a")).await;
        let (b, mut b_events) = started_smol(fast_config(&redis.url(), &ns, "b")).await;
        a_events.wait_up();
        b_events.wait_up();

        let topic = Topic::push(&ns, "score", "match-7");
        b.subscribe(&topic).await.unwrap();
        a.publish(&topic, "1:0".into()).await.unwrap();
        b_events.wait_message(&topic, "1:0");
        assert_outside_tokio();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let redis = redis();
    let ns = unique_ns("unsub");
    let (a, _a_events) = started_tokio(fast_config(&redis.url(), &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&redis.url(), &ns, "b")).await;
    let gone = Topic::user(&ns, "gone");
    let kept = Topic::user(&ns, "kept");
    b.subscribe(&gone).await.unwrap();
    b.subscribe(&kept).await.unwrap();
    a.publish(&gone, "before".into()).await.unwrap();
    b_events.wait_message(&gone, "before");

    b.unsubscribe(&gone).await.unwrap();
    a.publish(&gone, "after".into()).await.unwrap();
    // Same connection, same order: once the marker is in, "after" would be too.
    a.publish(&kept, "marker".into()).await.unwrap();
    b_events.wait_message(&kept, "marker");
    assert_eq!(b_events.payloads(), ["before", "marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_do_not_see_each_other() {
    let redis = redis();
    let (ns1, ns2) = (unique_ns("ns1"), unique_ns("ns2"));
    let (one, mut one_events) = started_tokio(fast_config(&redis.url(), &ns1, "s")).await;
    let (two, mut two_events) = started_tokio(fast_config(&redis.url(), &ns2, "s")).await;
    let (t1, t2) = (Topic::user(&ns1, "alice"), Topic::user(&ns2, "alice"));
    one.subscribe(&t1).await.unwrap();
    two.subscribe(&t2).await.unwrap();

    one.publish(&t1, "for-ns1".into()).await.unwrap();
    two.publish(&t2, "for-ns2".into()).await.unwrap();
    one_events.wait_message(&t1, "for-ns1");
    two_events.wait_message(&t2, "for-ns2");
    // Probes of the same server id in both namespaces stay apart too.
    assert_ne!(one.control_topic(), two.control_topic());
    assert_eq!(one_events.payloads(), ["for-ns1"]);
    assert_eq!(two_events.payloads(), ["for-ns2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_everything_leaves_only_the_control_topic_and_dropping_leaves_nothing() {
    let redis = redis();
    let url = redis.url();
    let ns = unique_ns("hygiene");
    let (b, _events) = started_tokio(fast_config(&url, &ns, "b")).await;
    let topics: Vec<_> = (0..3).map(|i| Topic::user(&ns, &format!("u{i}"))).collect();
    for t in &topics {
        b.subscribe(t).await.unwrap();
    }
    assert_eq!(pubsub_channels(&url, &format!("{ns}:*")).len(), 4);
    for t in &topics {
        b.unsubscribe(t).await.unwrap();
    }
    assert_eq!(
        pubsub_channels(&url, &format!("{ns}:*")),
        [b.control_topic().to_string()]
    );
    drop(b);
    eventually("no channels of the namespace left", || {
        pubsub_channels(&url, &format!("{ns}:*")).is_empty()
    });
}

/// 600 topics in one call go out as pipelines of at most 256 commands:
/// each topic is confirmed, held at Redis and delivered; topics already
/// wanted answer at once; one call unsubscribes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_subscribes_confirms_every_topic_and_each_receives() {
    const TOPICS: usize = 600;
    let redis = redis();
    let url = redis.url();
    let ns = unique_ns("batch");
    let (a, _a_events) = started_tokio(fast_config(&url, &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&url, &ns, "b")).await;
    b_events.wait_up();
    let topics: Vec<Topic> = (0..TOPICS)
        .map(|i| Topic::user(&ns, &format!("u{i}")))
        .collect();
    // The two servers' control topics.
    let before = pubsub_channels(&url, &format!("{ns}:*"));

    let results = b.subscribe_many(&topics).await;
    assert_eq!(results.len(), TOPICS);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        pubsub_channels(&url, &format!("{ns}:*")).len(),
        before.len() + TOPICS
    );

    // Ten already wanted and one new: one result each, in order.
    let late = Topic::user(&ns, "late");
    let mut again = topics[..10].to_vec();
    again.push(late.clone());
    let results = b.subscribe_many(&again).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results.len(), 11);
    assert_eq!(
        pubsub_channels(&url, &format!("{ns}:*")).len(),
        before.len() + TOPICS + 1
    );

    let sends: Vec<_> = topics
        .iter()
        .map(|t| a.publish(t, t.as_str().to_owned().into()))
        .collect();
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    while b_events.payloads().len() < TOPICS {
        b_events.wait_for("the next message", |e| {
            matches!(e, BrokerEvent::Message { .. })
        });
    }
    let mut got = b_events.payloads();
    got.sort();
    let mut want: Vec<String> = topics.iter().map(|t| t.as_str().to_owned()).collect();
    want.sort();
    assert_eq!(got, want, "each topic's message, once");

    let results = b.unsubscribe_many(&topics).await;
    assert_eq!(results.len(), TOPICS);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut left = pubsub_channels(&url, &format!("{ns}:*"));
    left.sort();
    let mut expected = before;
    expected.push(late.to_string());
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_while_down_fail_at_once_and_the_topic_is_remembered() {
    let port = free_port().unwrap(); // nothing listens there
    let ns = unique_ns("down");
    let url = format!("redis://127.0.0.1:{port}");
    let (b, mut events) = started_tokio(fast_config(&url, &ns, "b")).await;
    events.wait_down();
    assert!(matches!(b.state(), BrokerState::Down { .. }));

    let t0 = Instant::now();
    let err = b.publish(&Topic::user(&ns, "x"), "x".into()).await;
    assert!(
        matches!(err, Err(BrokerError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "must not wait for Redis"
    );
    assert_eq!(b.stats().published, 0);
    assert_eq!(b.stats().publish_errors, 1);

    // Nothing can be confirmed while down: the subscribe says so (a server
    // then tells its client rtm/broker-unavailable), yet the topic is
    // remembered and subscribed once Redis is back.
    let err = b.subscribe(&Topic::user(&ns, "x")).await;
    assert!(
        matches!(err, Err(BrokerError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(b.topics().contains(&Topic::user(&ns, "x")));
}

/// Publishes numbered messages every 5 ms until told to stop; returns (seq, ok).
fn spawn_publisher(
    broker: Arc<RedisBroker>,
    topic: Topic,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u32, bool)>> {
    tokio::spawn(async move {
        let mut results = vec![];
        for seq in 0..4000u32 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let r = broker.publish(&topic, seq.to_string().into()).await;
            results.push((seq, r.is_ok()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        results
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_with_subscriptions_restored_and_no_duplicates() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let ns = unique_ns("restart");
    let (a, mut a_events) = started_tokio(fast_config(&url, &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&url, &ns, "b")).await;
    let a = Arc::new(a);
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    a_events.wait_up();
    b_events.wait_up();

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(a.clone(), topic.clone(), stop.clone());
    b_events.wait_for("a first message", |e| {
        matches!(e, rtm_broker::BrokerEvent::Message { .. })
    });

    server.kill();
    a_events.wait_down();
    b_events.wait_down();
    let down_at = Instant::now();
    assert!(matches!(
        a.publish(&topic, "during".into()).await,
        Err(BrokerError::Unavailable { .. })
    ));

    server.restart().unwrap();
    a_events.wait_up();
    b_events.wait_up();
    assert!(
        down_at.elapsed() < Duration::from_secs(5),
        "back up within a few seconds"
    );

    // Delivery resumes: wait for a message published after b is up again.
    let resumed_from = a.stats().published;
    b_events.wait_for("delivery after the restart", |e| match e {
        rtm_broker::BrokerEvent::Message { payload, .. } => {
            std::str::from_utf8(payload)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > resumed_from
        }
        BrokerEvent::State(_) => false,
    });
    stop.store(true, Ordering::SeqCst);
    let sent = publisher.await.unwrap();

    let received: Vec<u32> = b_events
        .payloads()
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {received:?}"
    );
    let ok: std::collections::HashSet<u32> =
        sent.iter().filter(|(_, ok)| *ok).map(|(s, _)| *s).collect();
    assert!(
        received.iter().all(|s| ok.contains(s)),
        "only what was sent"
    );
    assert!(
        sent.iter().any(|(_, ok)| !ok),
        "publishes failed during the outage"
    );
    assert!(a.stats().reconnects >= 1 && b.stats().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pubsub_connection_is_replaced_and_resubscribed() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let ns = unique_ns("clientkill");
    let (a, mut a_events) = started_tokio(fast_config(&url, &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&url, &ns, "b")).await;
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    a_events.wait_up();
    b_events.wait_up();

    // Kills both brokers' pub/sub connections (this server is ours alone).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 2);
    for events in [&mut a_events, &mut b_events] {
        events.wait_down();
        events.wait_up();
    }

    a.publish(&topic, "again".into()).await.unwrap();
    b_events.wait_message(&topic, "again");
    assert_eq!(b_events.payloads(), ["again"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_detects_a_silently_dead_subscription() {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let proxy = WedgeProxy::start(server.port());
    let ns = unique_ns("wedge");
    // b reaches Redis through the proxy, a directly.
    let (a, _a_events) = started_tokio(fast_config(&server.url(), &ns, "a")).await;
    let (b, mut b_events) = started_tokio(fast_config(&proxy.url(), &ns, "b")).await;
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    b_events.wait_up();
    a.publish(&topic, "before".into()).await.unwrap();
    b_events.wait_message(&topic, "before");

    // b's sockets stay open but nothing flows: no disconnect is ever seen.
    proxy.wedge();
    b_events.wait_down();
    assert!(b.stats().probes_failed >= 1, "{:?}", b.stats());
    b_events.wait_up();

    a.publish(&topic, "after".into()).await.unwrap();
    b_events.wait_message(&topic, "after");
    assert_eq!(b_events.payloads(), ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_mode_round_trip_on_a_single_node() {
    let redis = redis();
    let ns = unique_ns("sharded");
    let config = |id| fast_config(&redis.url(), &ns, id).with_sharded(true);
    let (a, _a_events) = started_tokio(config("a")).await;
    let (b, mut b_events) = started_tokio(config("b")).await;
    b_events.wait_up();
    let topic = Topic::user(&ns, "alice");
    b.subscribe(&topic).await.unwrap();
    a.publish(&topic, "sharded".into()).await.unwrap();
    b_events.wait_message(&topic, "sharded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_twice_is_an_error() {
    let redis = redis();
    let ns = unique_ns("twice");
    let (b, _events) = started_tokio(fast_config(&redis.url(), &ns, "b")).await;
    let (sink, _) = capture();
    assert!(b.start(sink).await.is_err());
}

/// A wrong password is not "unreachable": Redis answered and refused it.
/// The broker stays down saying so (and keeps retrying: the URL or the ACL
/// may be fixed while it runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_broker_down_saying_authentication_failed() {
    let server = rtm_redis::testing::RedisServer::start_with(
        rtm_redis::testing::free_port().unwrap(),
        &["--requirepass", "right"],
    )
    .unwrap();
    let url = format!("redis://:wrong@127.0.0.1:{}/", server.port());
    let (broker, mut events) = started_tokio(fast_config(&url, &unique_ns("wrongpass"), "a")).await;
    events.wait_down();
    let BrokerState::Down { reason } = broker.state() else {
        panic!("up with a wrong password");
    };
    assert!(reason.starts_with("authentication failed"), "{reason}");
    assert!(!reason.contains("wrong"), "the password shows in {reason}");
}
