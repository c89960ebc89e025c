//! History in Redis (`rtm-redis/src/history.rs`) against a real
//! redis-server: offsets per stream under an epoch, appended and published
//! by one script in call order, read back within size and limit, new
//! epochs when Redis lost the stream, and recovery through `rtm_core`.
//! The same rules as the in-memory hub's (`rtm-broker/tests/memory_history.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rtm_broker::{Broker, BrokerEvent};
use rtm_core::recovery::{recover, HistoryPage, Recovery};
use rtm_core::{Envelope, HistoryConfig, StreamOptions, StreamPosition, Topic};
use rtm_redis::testing::{RedisServer, TestRedis};
use rtm_redis::RedisBroker;

fn redis() -> TestRedis {
    TestRedis::get().unwrap_or_else(|e| panic!("{e}"))
}

fn envelope(n: u64) -> Bytes {
    let frame = Bytes::from(format!(r#"{{"event":"score","data":[{n}]}}"#));
    Envelope::encode("s1", n, None, None, &frame)
}

fn options(size: usize) -> StreamOptions {
    StreamOptions {
        size,
        ttl: Duration::from_secs(60),
    }
}

async fn broker(url: &str, ns: &str, id: &str) -> (RedisBroker, Events) {
    let (broker, mut events) = started_tokio(fast_config(url, ns, id)).await;
    events.wait_up();
    (broker, events)
}

/// The positions of the messages `events` received on `topic`, in order.
fn positions(events: &Events, topic: &Topic) -> Vec<StreamPosition> {
    events
        .seen
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::Message { topic: t, payload } if t == topic => {
                Envelope::decode(payload.clone()).unwrap().position
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_gets_the_next_offset_and_subscribers_get_it_with_its_position() {
    let redis = redis();
    let ns = unique_ns("history-order");
    let (listener, mut heard) = broker(&redis.url(), &ns, "a").await;
    let (sender, _) = broker(&redis.url(), &ns, "b").await;
    let topic = Topic::push(&ns, "score", "m1");
    listener.subscribe(&topic).await.unwrap();
    assert!(sender.has_history());

    // Started together, they still reach Redis in call order.
    let appends: Vec<_> = (1..=20)
        .map(|n| sender.publish_to_stream(&topic, envelope(n), options(100)))
        .collect();
    let mut got = Vec::new();
    for append in appends {
        got.push(append.await.unwrap());
    }
    let epoch = got[0].epoch.clone();
    assert!(StreamPosition::is_valid_epoch(&epoch), "{epoch}");
    let want: Vec<StreamPosition> = (1..=20)
        .map(|n| StreamPosition::new(n, epoch.clone()))
        .collect();
    assert_eq!(got, want);
    heard.wait_for("the 20th event", |e| match e {
        BrokerEvent::Message { payload, .. } => Envelope::decode(payload.clone())
            .is_ok_and(|env| env.position.is_some_and(|p| p.offset == 20)),
        BrokerEvent::State(_) => false,
    });
    assert_eq!(positions(&heard, &topic), want);
    // The published envelope is the one a client would get: the frame intact.
    let read = sender
        .read_stream(&topic, 20, 1, options(100))
        .await
        .unwrap();
    let kept = Envelope::decode(read.envelopes[0].clone()).unwrap();
    assert_eq!(&kept.frame[..], br#"{"event":"score","data":[20]}"#);
    assert_eq!((kept.origin.as_str(), kept.seq), ("s1", 20));
}

/// Appends to several streams and plain publishes, started together, go in
/// one pipeline (each run of appends in one script call): every stream
/// gets its own next offsets, and subscribers get everything in call order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_several_streams_between_plain_publishes_keep_call_order() {
    let redis = redis();
    let ns = unique_ns("history-runs");
    let (listener, mut heard) = broker(&redis.url(), &ns, "a").await;
    let (sender, _) = broker(&redis.url(), &ns, "b").await;
    let (m1, m2, plain) = (
        Topic::push(&ns, "score", "m1"),
        Topic::push(&ns, "score", "m2"),
        Topic::push(&ns, "chat", "r"),
    );
    for topic in [&m1, &m2, &plain] {
        listener.subscribe(topic).await.unwrap();
    }
    let mut appends = Vec::new();
    let mut publishes = Vec::new();
    let mut want_order = Vec::new();
    for n in 1..=10 {
        appends.push(sender.publish_to_stream(&m1, envelope(n), options(100)));
        appends.push(sender.publish_to_stream(&m2, envelope(100 + n), options(100)));
        publishes.push(sender.publish(&plain, envelope(200 + n)));
        want_order.extend([n, 100 + n, 200 + n]);
    }
    let mut got = Vec::new();
    for append in appends {
        got.push(append.await.unwrap().offset);
    }
    for publish in publishes {
        publish.await.unwrap();
    }
    let want: Vec<u64> = (1..=10).flat_map(|n| [n, n]).collect();
    assert_eq!(got, want, "each stream's offsets, in call order");
    heard.wait_for("the last publish", |e| match e {
        BrokerEvent::Message { payload, .. } => {
            Envelope::decode(payload.clone()).is_ok_and(|env| env.seq == 210)
        }
        BrokerEvent::State(_) => false,
    });
    let order: Vec<u64> = heard
        .seen
        .iter()
        .filter_map(|e| match e {
            BrokerEvent::Message { payload, .. } => {
                Some(Envelope::decode(payload.clone()).unwrap().seq)
            }
            BrokerEvent::State(_) => None,
        })
        .collect();
    assert_eq!(order, want_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_gives_the_top_and_the_kept_events_from_an_offset_within_limit() {
    let redis = redis();
    let ns = unique_ns("history-read");
    let (broker, _) = broker(&redis.url(), &ns, "a").await;
    let topic = Topic::push(&ns, "score", "m1");
    for n in 1..=8 {
        broker
            .publish_to_stream(&topic, envelope(n), options(100))
            .await
            .unwrap();
    }
    let read = broker
        .read_stream(&topic, 3, 100, options(100))
        .await
        .unwrap();
    assert_eq!(read.top.offset, 8);
    let page = HistoryPage::decode(read.top.clone(), read.envelopes).unwrap();
    let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (3..=8).collect::<Vec<_>>());
    let limited = broker
        .read_stream(&topic, 6, 2, options(100))
        .await
        .unwrap();
    assert_eq!(limited.envelopes.len(), 2);
    assert_eq!(limited.top, read.top);
    // MAXLEN ~ trims in whole nodes: a long stream keeps at least its size.
    let long = Topic::push(&ns, "score", "long");
    for n in 1..=300 {
        broker
            .publish_to_stream(&long, envelope(n), options(10))
            .await
            .unwrap();
    }
    let read = broker
        .read_stream(&long, 1, 1000, options(10))
        .await
        .unwrap();
    assert!(
        (10..300).contains(&read.envelopes.len()),
        "{} kept",
        read.envelopes.len()
    );
    let page = HistoryPage::decode(read.top, read.envelopes).unwrap();
    assert_eq!(page.events.last().map(|e| e.offset), Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_redis_lost_starts_again_under_a_new_epoch() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let ns = unique_ns("history-lost");
    let (broker, mut events) = broker(&server.url(), &ns, "a").await;
    let topic = Topic::push(&ns, "score", "m1");
    let never = broker.read_stream(&topic, 1, 10, options(5)).await.unwrap();
    assert_eq!(never.top.offset, 0);
    let first = broker
        .publish_to_stream(&topic, envelope(1), options(5))
        .await
        .unwrap();
    // The epoch a read made holds until the first event.
    assert_eq!(first, StreamPosition::new(1, never.top.epoch));

    // A restart without persistence: Redis lost everything.
    server.kill();
    events.wait_down();
    server.restart().unwrap();
    events.wait_up();
    let after = broker
        .publish_to_stream(&topic, envelope(2), options(5))
        .await
        .unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, first.epoch);

    // Expired: the stream and its position live ttl after the last event.
    let short = StreamOptions {
        size: 5,
        ttl: Duration::from_secs(1),
    };
    let expiring = Topic::push(&ns, "score", "short");
    let kept = broker
        .publish_to_stream(&expiring, envelope(1), short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let gone = broker.read_stream(&expiring, 1, 10, short).await.unwrap();
    assert_eq!(gone.top.offset, 0);
    assert_ne!(gone.top.epoch, kept.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_changes_the_epoch_and_drops_the_events_keeping_the_offset() {
    let redis = redis();
    let ns = unique_ns("history-reset");
    let (broker, _) = broker(&redis.url(), &ns, "a").await;
    let topic = Topic::push(&ns, "score", "m1");
    for n in 1..=3 {
        broker
            .publish_to_stream(&topic, envelope(n), options(5))
            .await
            .unwrap();
    }
    let before = broker.read_stream(&topic, 1, 10, options(5)).await.unwrap();
    let reset = broker.reset_stream(&topic, options(5)).await.unwrap();
    assert_ne!(reset.epoch, before.top.epoch);
    assert_eq!(reset.offset, 3);
    let after = broker.read_stream(&topic, 1, 10, options(5)).await.unwrap();
    assert_eq!(after.top, reset);
    assert!(after.envelopes.is_empty());
    let next = broker
        .publish_to_stream(&topic, envelope(4), options(5))
        .await
        .unwrap();
    assert_eq!(next, StreamPosition::new(4, reset.epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_while_redis_is_down_fail_and_nothing_is_half_kept() {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let ns = unique_ns("history-down");
    let (broker, mut events) = broker(&server.url(), &ns, "a").await;
    let topic = Topic::push(&ns, "score", "m1");
    server.kill();
    events.wait_down();
    let refused = broker
        .publish_to_stream(&topic, envelope(1), options(5))
        .await;
    assert!(refused.is_err_and(|e| e.is_unavailable()));
    assert!(broker
        .read_stream(&topic, 1, 10, options(5))
        .await
        .is_err_and(|e| e.is_unavailable()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_events_recovers_them_from_redis() {
    let redis = redis();
    let ns = unique_ns("history-recover");
    let (broker, _) = broker(&redis.url(), &ns, "a").await;
    let broker = Arc::new(broker);
    let topic = Topic::push(&ns, "score", "m1");
    let mut seen = None;
    for n in 1..=10 {
        let position = broker
            .publish_to_stream(&topic, envelope(n), options(100))
            .await
            .unwrap();
        if n == 4 {
            seen = Some(position);
        }
    }
    let since = seen.unwrap();
    let read = broker
        .read_stream(&topic, since.offset + 1, 301, options(100))
        .await
        .unwrap();
    let page = HistoryPage::decode(read.top, read.envelopes).unwrap();
    let got = recover(&since, page, Vec::new(), &HistoryConfig::default(), 0);
    let Recovery::Recovered { events, position } = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        events.iter().map(|e| e.offset).collect::<Vec<_>>(),
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(position, StreamPosition::new(10, since.epoch));
}
