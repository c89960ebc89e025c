//! Events with history (`ServerConfig::history`) are appended to their
//! stream in the broker and published with their position in one step,
//! and every server, the sending one included, delivers them when the
//! broker hands them back: once each, in order. Events without history go
//! as before: delivered at once where they are sent. (The sans-IO cluster:
//! `ServerCore`s sharing a `QueuedBroker`, which keeps streams as a store
//! does.)

mod common;
use common::signed_in;

use bytes::Bytes;
use rtm_core::testkit::{Cluster, TokenApp};
use rtm_core::{Args, ConnId, Envelope, HistoryConfig, ServerConfig, StreamOptions, Topic};

fn cluster() -> Cluster {
    let app = TokenApp::new()
        .with_token("t-alice", "alice")
        .with_token("t-bob", "bob");
    let config = ServerConfig {
        auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
        history: HistoryConfig::default()
            .enable(
                "score",
                StreamOptions {
                    size: 3,
                    ..StreamOptions::default()
                },
            )
            .enable("dm", StreamOptions::default()),
        ..ServerConfig::new("sim")
    };
    Cluster::with_config(2, config, app)
}

fn subscribe(cluster: &mut Cluster, server: usize, conn: ConnId, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    cluster.send(
        server,
        conn,
        format!(
            r#"{{"id":"s","type":"subscribe","event":"score","tags":[{}]}}"#,
            tags.join(",")
        ),
    );
    assert_eq!(
        cluster.take_frames(server, conn),
        vec![Bytes::from_static(br#"{"id":"s","data":true}"#)]
    );
}

fn tags(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

fn args(n: u32) -> Args {
    Args::encode(&[n]).unwrap()
}

fn frame(event: &str, n: u32) -> Bytes {
    Bytes::from(format!(r#"{{"event":"{event}","data":[{n}]}}"#))
}

#[test]
fn a_push_with_history_reaches_every_holder_once_the_broker_hands_it_back() {
    let mut cluster = cluster();
    let here = signed_in(&mut cluster, 0, "t-alice");
    let there = signed_in(&mut cluster, 1, "t-bob");
    subscribe(&mut cluster, 0, here, &["m1"]);
    subscribe(&mut cluster, 1, there, &["m1"]);
    cluster.set_auto_settle(false);

    // Not delivered where it was sent: it comes back with its position.
    assert_eq!(cluster.push(0, "score", &tags(&["m1"]), &args(1)), Ok(0));
    assert!(cluster.take_frames(0, here).is_empty());
    cluster.settle();
    for (server, conn) in [(0, here), (1, there)] {
        assert_eq!(cluster.take_frames(server, conn), vec![frame("score", 1)]);
    }
    // In order, once each, and the stream keeps the newest 3 with positions.
    for n in 2..=5 {
        cluster.push(1, "score", &tags(&["m1"]), &args(n)).unwrap();
    }
    cluster.settle();
    for (server, conn) in [(0, here), (1, there)] {
        assert_eq!(
            cluster.take_frames(server, conn),
            (2..=5).map(|n| frame("score", n)).collect::<Vec<_>>()
        );
    }
    let (top, kept) = cluster
        .broker_mut()
        .read_stream(&Topic::push("rtm", "score", "m1"), 1, 10);
    assert_eq!(top.offset, 5);
    let offsets: Vec<u64> = kept
        .into_iter()
        .map(|wire| Envelope::decode(wire).unwrap().position.unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![3, 4, 5]);
}

#[test]
fn a_push_with_history_to_several_tags_one_connection_holds_is_delivered_once() {
    let mut cluster = cluster();
    let both = signed_in(&mut cluster, 0, "t-alice");
    let one = signed_in(&mut cluster, 1, "t-bob");
    subscribe(&mut cluster, 0, both, &["m1", "m2"]);
    subscribe(&mut cluster, 1, one, &["m2"]);
    assert_eq!(
        cluster.push(1, "score", &tags(&["m1", "m2"]), &args(7)),
        Ok(0)
    );
    assert_eq!(cluster.take_frames(0, both), vec![frame("score", 7)]);
    assert_eq!(cluster.take_frames(1, one), vec![frame("score", 7)]);
    // Each tag's stream has it, under its own offsets.
    for tag in ["m1", "m2"] {
        let (top, _) = cluster
            .broker_mut()
            .read_stream(&Topic::push("rtm", "score", tag), 1, 10);
        assert_eq!(top.offset, 1, "{tag}");
    }
}

#[test]
fn a_publish_with_history_reaches_the_users_connections_on_every_server_once() {
    let mut cluster = cluster();
    let a0 = signed_in(&mut cluster, 0, "t-alice");
    let a1 = signed_in(&mut cluster, 1, "t-alice");
    assert_eq!(cluster.publish(0, "alice", "dm", &args(3)), Ok(0));
    assert_eq!(cluster.take_frames(0, a0), vec![frame("dm", 3)]);
    assert_eq!(cluster.take_frames(1, a1), vec![frame("dm", 3)]);
    let (top, kept) = cluster
        .broker_mut()
        .read_stream(&Topic::user("rtm", "alice"), 1, 10);
    assert_eq!((top.offset, kept.len()), (1, 1));
}

#[test]
fn events_without_history_are_delivered_where_they_are_sent_at_once_as_before() {
    let mut cluster = cluster();
    let here = signed_in(&mut cluster, 0, "t-alice");
    let there = signed_in(&mut cluster, 1, "t-alice");
    cluster.set_auto_settle(false);
    assert_eq!(cluster.publish(0, "alice", "news", &args(1)), Ok(1));
    assert_eq!(cluster.take_frames(0, here), vec![frame("news", 1)]);
    cluster.settle();
    assert_eq!(cluster.take_frames(1, there), vec![frame("news", 1)]);
    assert!(cluster.take_frames(0, here).is_empty(), "not twice");
    let (top, _) = cluster
        .broker_mut()
        .read_stream(&Topic::user("rtm", "alice"), 1, 10);
    assert_eq!(top.offset, 0, "nothing kept");
}
