//! RedisBroker in sharded mode against a real 3-node Redis Cluster started here.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;

use common::*;
use rtm_broker::{Broker, BrokerError, BrokerEvent, BrokerState};
use rtm_core::Topic;
use rtm_redis::testing::RedisCluster;
use rtm_redis::{RedisBroker, RedisBrokerConfig, SmolRuntime};

fn cluster() -> RedisCluster {
    RedisCluster::start().unwrap_or_else(|e| panic!("cannot start a Redis Cluster: {e}"))
}

/// `fast_config`'s timings on a cluster configuration.
fn cluster_config(cluster: &RedisCluster, ns: &str, server_id: &str) -> RedisBrokerConfig {
    RedisBrokerConfig::cluster(cluster.urls(), ns, server_id)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_probe_interval(Duration::from_millis(200))
        .with_probe_timeout(Duration::from_millis(700))
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(700))
}

async fn started(config: RedisBrokerConfig) -> (RedisBroker, Events) {
    let (broker, mut events) = started_tokio(config).await;
    events.wait_up();
    (broker, events)
}

/// 20 topics, checked to land on every node of the cluster.
fn topics_on_every_node(cluster: &RedisCluster, ns: &str) -> Vec<Topic> {
    let topics: Vec<Topic> = (0..20).map(|i| Topic::user(ns, &format!("u{i}"))).collect();
    let owners: HashSet<u16> = topics
        .iter()
        .map(|t| {
            cluster
                .owner_port(t.as_str())
                .expect("a node owns every slot")
        })
        .collect();
    assert_eq!(owners.len(), 3, "the topics must spread over all 3 nodes");
    topics
}

/// Waits until every `(topic, payload)` arrived, in any order (topics on
/// different nodes arrive in no particular order).
fn wait_all(events: &mut Events, want: &[(Topic, String)]) {
    let mut missing: HashSet<(Topic, Bytes)> = want
        .iter()
        .map(|(t, p)| (t.clone(), Bytes::from(p.clone())))
        .collect();
    for e in &events.seen {
        if let BrokerEvent::Message { topic, payload } = e {
            missing.remove(&(topic.clone(), payload.clone()));
        }
    }
    while !missing.is_empty() {
        let got = events.wait_for(&format!("{} more messages", missing.len()), |e| {
            matches!(e, BrokerEvent::Message { topic, payload }
                if missing.contains(&(topic.clone(), payload.clone())))
        });
        if let BrokerEvent::Message { topic, payload } = got {
            missing.remove(&(topic, payload));
        }
    }
}

/// How many messages each topic delivered so far.
fn per_topic(events: &Events) -> HashMap<Topic, usize> {
    let mut counts = HashMap::new();
    for e in &events.seen {
        if let BrokerEvent::Message { topic, .. } = e {
            *counts.entry(topic.clone()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_publish_reaches_the_subscriber_exactly_once_on_every_node() {
    let cluster = cluster();
    let ns = unique_ns("cluster");
    let topics = topics_on_every_node(&cluster, &ns);
    let (a, _a_events) = started(cluster_config(&cluster, &ns, "a")).await;
    let (b, mut b_events) = started(cluster_config(&cluster, &ns, "b")).await;
    assert_eq!(a.state(), BrokerState::Up);

    for topic in &topics {
        b.subscribe(topic).await.unwrap();
    }
    // Published together: one batch, split by slot across the nodes.
    let sends: Vec<_> = topics
        .iter()
        .map(|t| a.publish(t, format!("to {t}").into()))
        .collect();
    for result in futures_util::future::join_all(sends).await {
        result.unwrap();
    }
    let first: Vec<_> = topics
        .iter()
        .map(|t| (t.clone(), format!("to {t}")))
        .collect();
    wait_all(&mut b_events, &first);
    // A last message on every topic, in order after the first: a duplicate
    // of the first would have arrived before it.
    for topic in &topics {
        a.publish(topic, "last".into()).await.unwrap();
        b_events.wait_message(topic, "last");
    }
    let counts = per_topic(&b_events);
    for topic in &topics {
        assert_eq!(counts.get(topic), Some(&2), "{topic}: {counts:?}");
    }
    assert_eq!(a.stats().published, 40);
    assert_eq!(a.stats().publish_errors, 0);
    assert_eq!(b.stats().received, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_on_a_cluster() {
    let cluster = cluster();
    let ns = unique_ns("cluster-unsub");
    let topics = topics_on_every_node(&cluster, &ns);
    let (a, _a_events) = started(cluster_config(&cluster, &ns, "a")).await;
    let (b, mut b_events) = started(cluster_config(&cluster, &ns, "b")).await;
    for topic in &topics {
        b.subscribe(topic).await.unwrap();
    }
    // Every other topic goes; those left cover the nodes as a barrier.
    let (gone, kept): (Vec<_>, Vec<_>) = topics.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, topic) in &gone {
        b.unsubscribe(topic).await.unwrap();
    }
    for (_, topic) in &gone {
        a.publish(topic, "unwanted".into()).await.unwrap();
    }
    for (_, topic) in &kept {
        a.publish(topic, "wanted".into()).await.unwrap();
    }
    let wanted: Vec<_> = kept
        .iter()
        .map(|(_, t)| ((*t).clone(), "wanted".to_string()))
        .collect();
    wait_all(&mut b_events, &wanted);
    assert!(
        !b_events.payloads().contains(&"unwanted".to_string()),
        "{:?}",
        b_events.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_node_marks_the_broker_down_and_it_recovers_with_subscriptions() {
    let mut cluster = cluster();
    let ns = unique_ns("cluster-kill");
    let topics = topics_on_every_node(&cluster, &ns);
    let (a, _a_events) = started(cluster_config(&cluster, &ns, "a")).await;
    let (b, mut b_events) = started(cluster_config(&cluster, &ns, "b")).await;
    for topic in &topics {
        b.subscribe(topic).await.unwrap();
    }
    let victim_port = cluster.owner_port(topics[0].as_str()).unwrap();
    let victim = cluster
        .nodes()
        .iter_mut()
        .find(|n| n.port() == victim_port)
        .unwrap();
    victim.kill();
    b_events.wait_down();
    victim.restart().unwrap();
    b_events.wait_up();

    // `a` may be down too (it lost the node as well) or hit the node while it
    // rejoins: a refused publish is retried, and each try has its own payload.
    for topic in &topics {
        let mut tries = 0;
        let payload = loop {
            tries += 1;
            let payload = format!("after-{tries}");
            match a.publish(topic, payload.clone().into()).await {
                Ok(()) => break payload,
                Err(e) => {
                    assert!(tries < 200, "publish on {topic} keeps failing: {e}");
                    // Down: wait for Up; up but refused (the node rejoining): retry shortly.
                    eventually("a back up", || a.state() == BrokerState::Up);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        b_events.wait_message(topic, &payload);
    }
    assert!(b.stats().reconnects >= 1);
}

#[test]
fn a_cluster_without_sharded_pubsub_is_rejected() {
    let config =
        RedisBrokerConfig::cluster(["redis://127.0.0.1:7000"], "ns", "a").with_sharded(false);
    match RedisBroker::new(config, SmolRuntime) {
        Err(BrokerError::Failed { reason, .. }) => assert!(reason.contains("sharded"), "{reason}"),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
}

#[test]
fn cluster_round_trip_works_on_smol_without_tokio() {
    let cluster = cluster();
    smol::block_on(async {
        let ns = unique_ns("cluster-smol");
        let topics = topics_on_every_node(&cluster, &ns);
        let (a, mut a_events) = started_smol(cluster_config(&cluster, &ns, "a")).await;
        let (b, mut b_events) = started_smol(cluster_config(&cluster, &ns, "b")).await;
        a_events.wait_up();
        b_events.wait_up();
        for topic in &topics {
            b.subscribe(topic).await.unwrap();
        }
        for topic in &topics {
            a.publish(topic, "smol".into()).await.unwrap();
        }
        let want: Vec<_> = topics
            .iter()
            .map(|t| (t.clone(), "smol".to_string()))
            .collect();
        wait_all(&mut b_events, &want);
        assert_outside_tokio();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_carries_a_probe_topic_of_the_broker() {
    let cluster = cluster();
    let ns = unique_ns("cluster-probe");
    let (a, _a_events) = started(cluster_config(&cluster, &ns, "a")).await;
    let pattern = format!("{}*", a.control_topic());
    for url in cluster.urls() {
        // PUBSUB SHARDCHANNELS lists only the channels of the node asked.
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let names: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .arg(&pattern)
            .query(&mut con)
            .unwrap();
        assert_eq!(names.len(), 1, "{url}: {names:?}");
    }
    // Probing every shard keeps the broker up, round after round.
    let sent = a.stats().probes_sent;
    eventually("three more probe rounds", || {
        a.stats().probes_sent >= sent + 3
    });
    assert_eq!(a.stats().probes_failed, 0);
    assert_eq!(a.state(), BrokerState::Up);
}

/// History on a cluster: each stream's keys and its topic share a slot, so
/// the one script appends there and publishes with SPUBLISH; streams on
/// every node keep their own offsets, in order, and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_streams_on_every_node_append_publish_and_read_back_in_order() {
    let cluster = cluster();
    let ns = unique_ns("cluster-history");
    let (a, _) = started(cluster_config(&cluster, &ns, "a")).await;
    let (b, mut b_events) = started(cluster_config(&cluster, &ns, "b")).await;
    let topics = topics_on_every_node(&cluster, &ns);
    b.subscribe_many(&topics)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let options = rtm_core::StreamOptions::default();
    let mut appends = Vec::new();
    for n in 1..=3u64 {
        for topic in &topics {
            let frame = Bytes::from(format!(r#"{{"event":"e","data":[{n}]}}"#));
            let envelope = rtm_core::Envelope::encode("a", n, None, None, &frame);
            appends.push(a.publish_to_stream(topic, envelope, options));
        }
    }
    for (i, append) in appends.into_iter().enumerate() {
        let position = append.await.unwrap();
        assert_eq!(position.offset, 1 + (i / topics.len()) as u64);
    }
    // b heard each stream's three events, in offset order.
    let want = 3 * topics.len();
    for _ in 0..want {
        b_events.wait_for("an appended event", |e| {
            matches!(e, BrokerEvent::Message { .. })
        });
    }
    let mut offsets: HashMap<Topic, Vec<u64>> = HashMap::new();
    for e in &b_events.seen {
        if let BrokerEvent::Message { topic, payload } = e {
            let position = rtm_core::Envelope::decode(payload.clone())
                .unwrap()
                .position
                .unwrap();
            offsets
                .entry(topic.clone())
                .or_default()
                .push(position.offset);
        }
    }
    for topic in &topics {
        assert_eq!(offsets[topic], vec![1, 2, 3], "{topic}");
        let read = a.read_stream(topic, 2, 10, options).await.unwrap();
        assert_eq!((read.top.offset, read.envelopes.len()), (3, 2), "{topic}");
    }
}
