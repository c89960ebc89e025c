//! A client that keeps its place in a stream (`since` on subscribe, ext)
//! gets what it missed while away, on any server, all of it in order and
//! once, or is told it cannot; then every event with its position. The
//! switch from history to live has no race: live events that arrive while
//! the history is read are buffered and merged by offset. (The sans-IO
//! cluster: `ServerCore`s sharing a `QueuedBroker`, which keeps streams.)

mod common;
use common::signed_in;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtm_core::testkit::{Cluster, TokenApp};
use rtm_core::{Args, ConnId, HistoryConfig, ServerConfig, StreamOptions};

fn cluster_with(history: HistoryConfig) -> Cluster {
    let app = TokenApp::new()
        .with_token("t-alice", "alice")
        .with_token("t-bob", "bob");
    let config = ServerConfig {
        auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
        history,
        ..ServerConfig::new("sim")
    };
    Cluster::with_config(2, config, app)
}

/// `score` keeps its 5 newest events.
fn cluster() -> Cluster {
    cluster_with(HistoryConfig::default().enable(
        "score",
        StreamOptions {
            size: 5,
            ..StreamOptions::default()
        },
    ))
}

/// Sends `subscribe score [m1]` with this `since` (raw JSON).
fn subscribe_since(cluster: &mut Cluster, server: usize, conn: ConnId, since: &str) {
    cluster.send(
        server,
        conn,
        format!(r#"{{"id":"s","type":"subscribe","event":"score","tags":["m1"],"since":{since}}}"#),
    );
}

fn push(cluster: &mut Cluster, server: usize, n: u32) {
    let args = Args::encode(&[n]).unwrap();
    cluster
        .push(server, "score", &["m1".to_string()], &args)
        .unwrap();
}

fn positioned(n: u32, offset: u64, epoch: &str) -> String {
    format!(r#"{{"event":"score","data":[{n}],"tag":"m1","offset":{offset},"epoch":"{epoch}"}}"#)
}

fn texts(frames: Vec<Bytes>) -> Vec<String> {
    frames
        .into_iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect()
}

#[test]
fn a_client_without_a_position_learns_the_streams_and_then_gets_each_event_with_its_position() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    assert_eq!(
        texts(cluster.take_frames(0, alice)),
        vec![r#"{"id":"s","data":true,"streams":{"m1":{"offset":0,"epoch":"q1"}}}"#]
    );
    push(&mut cluster, 1, 1);
    push(&mut cluster, 0, 2);
    assert_eq!(
        texts(cluster.take_frames(0, alice)),
        vec![positioned(1, 1, "q1"), positioned(2, 2, "q1")]
    );
}

#[test]
fn a_client_that_was_away_gets_what_it_missed_on_another_server_in_order_once_before_the_reply() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    push(&mut cluster, 0, 1);
    push(&mut cluster, 0, 2);
    cluster.take_frames(0, alice);
    cluster.disconnect(0, alice);
    // Sent while alice is away (nobody holds m1: kept all the same).
    for n in 3..=5 {
        push(&mut cluster, 1, n);
    }
    let back = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(&mut cluster, 1, back, r#"{"m1":{"offset":2,"epoch":"q1"}}"#);
    assert_eq!(
        texts(cluster.take_frames(1, back)),
        vec![
            positioned(3, 3, "q1"),
            positioned(4, 4, "q1"),
            positioned(5, 5, "q1"),
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":5,"epoch":"q1","recovered":true}}}"#
                .to_string(),
        ]
    );
    push(&mut cluster, 0, 6);
    assert_eq!(
        texts(cluster.take_frames(1, back)),
        vec![positioned(6, 6, "q1")]
    );
}

#[test]
fn a_client_that_missed_nothing_is_recovered_with_no_event() {
    let mut cluster = cluster();
    push(&mut cluster, 0, 1);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":1,"epoch":"q1","recovered":true}}}"#
        ]
    );
}

#[test]
fn live_events_that_arrive_while_the_history_is_read_are_merged_without_a_duplicate_or_a_gap() {
    let mut cluster = cluster();
    for n in 1..=2 {
        push(&mut cluster, 0, n);
    }
    cluster.set_auto_read(false);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    assert_eq!(cluster.unanswered_reads(), 1);
    // Live events after the topic is subscribed, before the read: held back.
    cluster.set_auto_settle(false);
    push(&mut cluster, 0, 3);
    push(&mut cluster, 0, 4);
    cluster.settle();
    assert!(
        cluster.take_frames(1, alice).is_empty(),
        "nothing before the merge"
    );
    // The read sees 2..=4 too: each is delivered once.
    assert!(cluster.answer_read(0));
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            positioned(2, 2, "q1"),
            positioned(3, 3, "q1"),
            positioned(4, 4, "q1"),
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":4,"epoch":"q1","recovered":true}}}"#
                .to_string(),
        ]
    );
    push(&mut cluster, 0, 5);
    cluster.settle();
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![positioned(5, 5, "q1")]
    );
}

#[test]
fn live_events_newer_than_the_history_read_follow_the_recovered_ones() {
    let mut cluster = cluster();
    push(&mut cluster, 0, 1);
    push(&mut cluster, 0, 2);
    cluster.set_auto_read(false);
    cluster.set_auto_settle(false);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    cluster.settle();
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    // The read happens first (it sees up to 2), the live 3 arrives after it.
    push(&mut cluster, 0, 3);
    let read_before_3 = {
        // Answer with what the store held before 3: the read raced ahead.
        cluster.answer_read(0)
    };
    assert!(read_before_3);
    cluster.settle();
    let frames = texts(cluster.take_frames(1, alice));
    assert_eq!(
        frames,
        vec![
            positioned(2, 2, "q1"),
            positioned(3, 3, "q1"),
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":3,"epoch":"q1","recovered":true}}}"#
                .to_string(),
        ],
        "the read found 2 and 3 (3 was appended before it); 3's live copy is not sent again"
    );
}

#[test]
fn a_lost_stream_is_not_recovered_the_client_is_told_the_epoch_changed() {
    let mut cluster = cluster();
    push(&mut cluster, 0, 1);
    cluster.broker_mut().lose_streams();
    push(&mut cluster, 0, 2);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":1,"epoch":"q2","recovered":false,"reason":"epoch-changed"}}}"#
        ]
    );
    push(&mut cluster, 0, 3);
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![positioned(3, 2, "q2")]
    );
}

#[test]
fn a_client_away_longer_than_the_history_is_told_it_was_trimmed_and_gets_none_of_it() {
    let mut cluster = cluster();
    for n in 1..=8 {
        push(&mut cluster, 0, n);
    }
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":8,"epoch":"q1","recovered":false,"reason":"trimmed"}}}"#
        ]
    );
}

#[test]
fn more_missed_than_max_recovery_is_not_recovered() {
    let mut history = HistoryConfig::default().enable("score", StreamOptions::default());
    history.max_recovery = 2;
    let mut cluster = cluster_with(history);
    for n in 1..=4 {
        push(&mut cluster, 0, n);
    }
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":1,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":4,"epoch":"q1","recovered":false,"reason":"too-many"}}}"#
        ]
    );
    // Exactly max_recovery missed: recovered.
    let bob = signed_in(&mut cluster, 1, "t-bob");
    subscribe_since(&mut cluster, 1, bob, r#"{"m1":{"offset":2,"epoch":"q1"}}"#);
    let frames = texts(cluster.take_frames(1, bob));
    assert_eq!(frames.len(), 3);
    assert!(frames[2].ends_with(r#""recovered":true}}}"#), "{frames:?}");
}

#[test]
fn a_client_without_since_gets_the_event_as_before_beside_one_that_tracks_it() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    let bob = signed_in(&mut cluster, 0, "t-bob");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    cluster.send(
        0,
        bob,
        r#"{"id":"s","type":"subscribe","event":"score","tags":["m1"]}"#,
    );
    cluster.take_frames(0, alice);
    assert_eq!(
        texts(cluster.take_frames(0, bob)),
        vec![r#"{"id":"s","data":true}"#]
    );
    push(&mut cluster, 1, 7);
    assert_eq!(
        texts(cluster.take_frames(0, alice)),
        vec![positioned(7, 1, "q1")]
    );
    assert_eq!(
        texts(cluster.take_frames(0, bob)),
        vec![r#"{"event":"score","data":[7]}"#]
    );
}

#[test]
fn since_for_an_event_without_history_is_answered_as_a_plain_subscribe() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    cluster.send(
        0,
        alice,
        r#"{"id":"s","type":"subscribe","event":"chat","tags":["r"],"since":{"r":null}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(0, alice)),
        vec![r#"{"id":"s","data":true}"#]
    );
}

#[test]
fn a_bad_since_is_a_bad_request_and_subscribes_nothing() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    for since in [
        r#"[1]"#,
        r#"{"m2":null}"#,
        r#"{"m1":{"offset":-1,"epoch":"q1"}}"#,
        r#"{"m1":{"offset":1,"epoch":"no spaces"}}"#,
        r#"{"m1":{"offset":1}}"#,
        r#"{"m1":{"offset":1,"epoch":"q1","extra":1}}"#,
        r#"{"m1":[1,"q1"]}"#,
        r#"{"m1":null,"m1":{"offset":1,"epoch":"q1"}}"#,
        r#"{"m1":{"offset":1.5,"epoch":"q1"}}"#,
        r#"{"m1":{"offset":18446744073709551616,"epoch":"q1"}}"#,
    ] {
        subscribe_since(&mut cluster, 0, alice, since);
        let frames = texts(cluster.take_frames(0, alice));
        assert_eq!(frames.len(), 1, "{since}");
        assert!(
            frames[0].starts_with(r#"{"id":"s","data":{"error":{"code":"rtm/bad-request""#),
            "{since}: {frames:?}"
        );
    }
    assert_eq!(cluster.server(0).index_sizes().1, 0);
    // The message says what is wrong, in the protocol's terms.
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":[1,"q1"]}"#);
    let frames = texts(cluster.take_frames(0, alice));
    assert!(
        frames[0].contains(
            r#"the position for \"m1\" must be null or {\"offset\": <u64>, \"epoch\": <string>}"#
        ),
        "{frames:?}"
    );
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null,"m1":null}"#);
    let frames = texts(cluster.take_frames(0, alice));
    assert!(
        frames[0].contains(r#"since names \"m1\" twice"#),
        "{frames:?}"
    );
}

#[test]
fn a_history_read_that_fails_fails_the_subscribe_and_leaves_nothing_held() {
    let mut cluster = cluster();
    cluster.set_auto_read(false);
    let alice = signed_in(&mut cluster, 0, "t-alice");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    assert!(cluster.fail_read(0));
    let frames = texts(cluster.take_frames(0, alice));
    assert_eq!(frames.len(), 1);
    assert!(
        frames[0].starts_with(r#"{"id":"s","data":{"error":{"code":"rtm/broker-unavailable""#),
        "{frames:?}"
    );
    assert_eq!(cluster.server(0).index_sizes().1, 0);
    push(&mut cluster, 1, 1);
    assert!(cluster.take_frames(0, alice).is_empty());
}

#[test]
fn a_history_read_that_never_answers_fails_the_subscribe_at_twice_the_confirm_timeout() {
    let mut cluster = cluster();
    cluster.set_auto_read(false);
    let alice = signed_in(&mut cluster, 0, "t-alice");
    let start = cluster.now();
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    let timeout = ServerConfig::DEFAULT_BROKER_CONFIRM_TIMEOUT * 2;
    cluster.advance(start + timeout - Duration::from_millis(1));
    assert!(cluster.take_frames(0, alice).is_empty());
    cluster.advance(start + timeout + Duration::from_millis(1));
    let frames = texts(cluster.take_frames(0, alice));
    assert!(
        frames[0].starts_with(r#"{"id":"s","data":{"error":{"code":"rtm/broker-unavailable""#),
        "{frames:?}"
    );
    // The late answer finds nothing to settle.
    assert!(cluster.answer_read(0));
    assert!(cluster.take_frames(0, alice).is_empty());
    assert_eq!(cluster.server(0).index_sizes().1, 0);
}

#[test]
fn the_broker_going_down_while_the_history_is_read_fails_the_subscribe() {
    let mut cluster = cluster();
    cluster.set_auto_read(false);
    let alice = signed_in(&mut cluster, 0, "t-alice");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    cluster.with_server(0, |server| server.handle_broker_state(false));
    let frames = texts(cluster.take_frames(0, alice));
    assert!(
        frames[0].starts_with(r#"{"id":"s","data":{"error":{"code":"rtm/broker-unavailable""#),
        "{frames:?}"
    );
}

#[test]
fn a_connection_that_closes_while_its_history_is_read_leaves_nothing_behind() {
    let mut cluster = cluster();
    cluster.set_auto_read(false);
    let alice = signed_in(&mut cluster, 0, "t-alice");
    subscribe_since(&mut cluster, 0, alice, r#"{"m1":null}"#);
    assert_eq!(cluster.server(0).sync_count(), 1);
    cluster.disconnect(0, alice);
    assert_eq!(cluster.server(0).sync_count(), 0);
    assert!(cluster.answer_read(0));
    push(&mut cluster, 1, 1);
    assert_eq!(cluster.server(0).index_sizes().1, 0);
}

#[test]
fn a_push_to_two_tracked_tags_comes_once_per_stream_with_the_same_push_id_live_and_recovered() {
    let mut cluster = cluster();
    let alice = signed_in(&mut cluster, 0, "t-alice");
    let bob = signed_in(&mut cluster, 0, "t-bob");
    cluster.send(
        0,
        alice,
        r#"{"id":"s","type":"subscribe","event":"score","tags":["m1","m2"],"since":{"m1":null,"m2":null}}"#,
    );
    cluster.send(
        0,
        bob,
        r#"{"id":"s","type":"subscribe","event":"score","tags":["m1","m2"]}"#,
    );
    cluster.take_frames(0, alice);
    cluster.take_frames(0, bob);
    let both = ["m1".to_string(), "m2".to_string()];
    cluster
        .push(1, "score", &both, &Args::encode(&[9]).unwrap())
        .unwrap();
    let got = texts(cluster.take_frames(0, alice));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().all(|f| f.contains(r#""push":"sim-1:1""#)),
        "{got:?}"
    );
    assert!(got[0].contains(r#""tag":"m1""#) != got[1].contains(r#""tag":"m1""#));
    // Without positions: once, as before.
    assert_eq!(
        texts(cluster.take_frames(0, bob)),
        vec![r#"{"event":"score","data":[9]}"#]
    );
    // Recovered from m2's stream: the same push id, so a client that had it drops it.
    let carol = signed_in(&mut cluster, 1, "t-bob");
    cluster.send(
        1,
        carol,
        r#"{"id":"s","type":"subscribe","event":"score","tags":["m2"],"since":{"m2":{"offset":0,"epoch":"q2"}}}"#,
    );
    let recovered = texts(cluster.take_frames(1, carol));
    assert_eq!(
        recovered[0],
        r#"{"event":"score","data":[9],"push":"sim-1:1","tag":"m2","offset":1,"epoch":"q2"}"#
    );
}

/// `HistoryConfig::max_sync_buffer` live events are buffered while the
/// history is read; past it the events not kept are lost to the
/// connection unless the read covers them: then the recovery ends `gap`
/// at the last one kept (the client resyncs when it sees the next jump).
#[test]
fn live_events_past_the_sync_buffer_end_the_recovery_with_a_gap_unless_the_read_has_them() {
    // (live events after the read, recovered?)
    for (live, recovered) in [(2, true), (3, false)] {
        let mut history = HistoryConfig::default().enable("score", StreamOptions::default());
        history.max_sync_buffer = 2;
        let mut cluster = cluster_with(history);
        push(&mut cluster, 0, 1);
        cluster.set_auto_read(false);
        cluster.set_auto_settle(false);
        let alice = signed_in(&mut cluster, 1, "t-alice");
        cluster.settle();
        subscribe_since(
            &mut cluster,
            1,
            alice,
            r#"{"m1":{"offset":0,"epoch":"q1"}}"#,
        );
        // The store is read (it has 1), then the live ones come, then the answer.
        assert!(cluster.read_now(0));
        for n in 2..2 + live {
            push(&mut cluster, 0, n);
        }
        cluster.settle();
        assert!(cluster.deliver_read());
        let frames = texts(cluster.take_frames(1, alice));
        let reply = frames.last().unwrap();
        if recovered {
            assert_eq!(frames.len(), 4, "{frames:?}");
            assert!(
                reply.ends_with(r#""offset":3,"epoch":"q1","recovered":true}}}"#),
                "{reply}"
            );
        } else {
            assert!(
                reply.contains(r#""offset":3,"epoch":"q1","recovered":false,"reason":"gap""#),
                "{reply}"
            );
        }
    }
    // Past the buffer, but the read has them all: recovered.
    let mut history = HistoryConfig::default().enable("score", StreamOptions::default());
    history.max_sync_buffer = 2;
    let mut cluster = cluster_with(history);
    cluster.set_auto_read(false);
    cluster.set_auto_settle(false);
    push(&mut cluster, 0, 1);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    cluster.settle();
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":0,"epoch":"q1"}}"#,
    );
    for n in 2..=5 {
        push(&mut cluster, 0, n);
    }
    cluster.settle();
    assert!(cluster.answer_read(0));
    let frames = texts(cluster.take_frames(1, alice));
    assert_eq!(frames.len(), 6, "{frames:?}");
    assert!(
        frames[5].ends_with(r#""offset":5,"epoch":"q1","recovered":true}}}"#),
        "{frames:?}"
    );
}

/// A client past the stream's top under the same epoch (the store lost its
/// newest events, as in a failover): the stream gets a new epoch (its
/// offset kept) before the answer, so no offset will name two events; the
/// client is told `ahead` and goes on under the new epoch.
#[test]
fn a_client_ahead_of_the_stream_is_told_so_under_the_same_epoch_by_default() {
    let mut cluster = cluster();
    for n in 1..=3 {
        push(&mut cluster, 0, n);
    }
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":9,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":3,"epoch":"q1","recovered":false,"reason":"ahead"}}}"#
        ]
    );
    // No reset: the stream goes on under its epoch.
    push(&mut cluster, 0, 4);
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![positioned(4, 4, "q1")]
    );
}

#[test]
fn with_reset_when_ahead_a_client_ahead_gives_the_stream_a_new_epoch() {
    let mut history = HistoryConfig::default().enable(
        "score",
        StreamOptions {
            size: 5,
            ..StreamOptions::default()
        },
    );
    history.reset_when_ahead = true;
    let mut cluster = cluster_with(history);
    for n in 1..=5 {
        push(&mut cluster, 0, n);
    }
    let topic = rtm_core::Topic::push("rtm", "score", "m1");
    cluster.broker_mut().lose_newest(&topic, 2);
    let alice = signed_in(&mut cluster, 1, "t-alice");
    subscribe_since(
        &mut cluster,
        1,
        alice,
        r#"{"m1":{"offset":5,"epoch":"q1"}}"#,
    );
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![
            r#"{"id":"s","data":true,"streams":{"m1":{"offset":3,"epoch":"q2","recovered":false,"reason":"ahead"}}}"#
        ]
    );
    // The next event: offset 4 of the new epoch, never 4 of the old one.
    push(&mut cluster, 0, 6);
    assert_eq!(
        texts(cluster.take_frames(1, alice)),
        vec![positioned(6, 4, "q2")]
    );
}

// ----- the user's stream (Publish) -----

fn dm_cluster() -> Cluster {
    cluster_with(HistoryConfig::default().enable("dm", StreamOptions::default()))
}

/// Signs in with `since` for the user's stream (raw JSON); returns the
/// connection and every frame up to and with the auth reply.
fn signed_in_since(
    cluster: &mut Cluster,
    server: usize,
    token: &str,
    since: &str,
) -> (ConnId, Vec<String>) {
    let conn = cluster.connect(server, Instant::now()).unwrap();
    cluster.send(
        server,
        conn,
        format!(r#"{{"id":"a","type":"auth","data":["{token}"],"since":{{"user":{since}}}}}"#),
    );
    let frames = texts(cluster.take_frames(server, conn));
    (conn, frames)
}

fn dm(cluster: &mut Cluster, server: usize, n: u32) {
    let args = Args::encode(&[n]).unwrap();
    cluster.publish(server, "alice", "dm", &args).unwrap();
}

#[test]
fn an_auth_with_since_tracks_the_users_stream_and_its_publishes_carry_positions() {
    let mut cluster = dm_cluster();
    let (alice, frames) = signed_in_since(&mut cluster, 0, "t-alice", "null");
    assert_eq!(
        frames,
        vec![r#"{"id":"a","data":{"user":"alice"},"streams":{"user":{"offset":0,"epoch":"q1"}}}"#]
    );
    dm(&mut cluster, 1, 1);
    assert_eq!(
        texts(cluster.take_frames(0, alice)),
        vec![r#"{"event":"dm","data":[1],"offset":1,"epoch":"q1"}"#]
    );
}

#[test]
fn a_user_back_on_another_server_gets_the_publishes_it_missed_before_the_auth_reply() {
    let mut cluster = dm_cluster();
    let (alice, _) = signed_in_since(&mut cluster, 0, "t-alice", "null");
    dm(&mut cluster, 1, 1);
    cluster.take_frames(0, alice);
    cluster.disconnect(0, alice);
    for n in 2..=3 {
        dm(&mut cluster, 0, n);
    }
    let (_, frames) = signed_in_since(&mut cluster, 1, "t-alice", r#"{"offset":1,"epoch":"q1"}"#);
    assert_eq!(
        frames,
        vec![
            r#"{"event":"dm","data":[2],"offset":2,"epoch":"q1"}"#.to_owned(),
            r#"{"event":"dm","data":[3],"offset":3,"epoch":"q1"}"#.to_owned(),
            r#"{"id":"a","data":{"user":"alice"},"streams":{"user":{"offset":3,"epoch":"q1","recovered":true}}}"#.to_owned(),
        ]
    );
}

#[test]
fn an_auth_without_since_and_a_plain_tab_of_the_same_user_get_publishes_as_before() {
    let mut cluster = dm_cluster();
    let (tracked, _) = signed_in_since(&mut cluster, 0, "t-alice", "null");
    let plain = signed_in(&mut cluster, 0, "t-alice");
    dm(&mut cluster, 1, 7);
    assert_eq!(
        texts(cluster.take_frames(0, tracked)),
        vec![r#"{"event":"dm","data":[7],"offset":1,"epoch":"q1"}"#]
    );
    assert_eq!(
        texts(cluster.take_frames(0, plain)),
        vec![r#"{"event":"dm","data":[7]}"#]
    );
}

#[test]
fn a_bad_since_on_auth_is_a_bad_request_and_nothing_is_authenticated() {
    let mut cluster = dm_cluster();
    for since in [
        r#"[1]"#,
        r#"{"other":null}"#,
        r#"{"user":{"offset":"1","epoch":"q1"}}"#,
    ] {
        let conn = cluster.connect(0, Instant::now()).unwrap();
        cluster.send(
            0,
            conn,
            format!(r#"{{"id":"a","type":"auth","data":["t-alice"],"since":{since}}}"#),
        );
        let frames = texts(cluster.take_frames(0, conn));
        assert!(
            frames[0].starts_with(r#"{"id":"a","data":{"error":{"code":"rtm/bad-request""#),
            "{since}: {frames:?}"
        );
        // Not authenticated: a call is refused.
        cluster.send(0, conn, r#"{"id":"w","type":"invoke","function":"whoami"}"#);
        let frames = texts(cluster.take_frames(0, conn));
        assert!(frames[0].contains("rtm/unauthenticated"), "{frames:?}");
    }
}
