//! An acknowledgement promises delivery: a subscribe (and an auth) is
//! answered only once the broker confirmed every new topic it needs, so the
//! first event after the answer cannot be missed; and a subscribe that
//! cannot get its topic fails for its requester alone, leaving nothing.

mod common;

use common::harness::Harness;
use rtm_core::{BrokerCommand, Topic};
use serde_json::{json, Value};

fn subscribe(id: &str, tags: &[&str]) -> String {
    json!({"id": id, "type": "subscribe", "event": "score", "tags": tags}).to_string()
}

fn code(frame: &Value) -> &str {
    frame["data"]["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn a_subscribe_is_answered_only_once_each_new_topic_is_confirmed() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s", &["a", "b"]));
    assert!(h.nothing_for(c), "answered before the broker confirmed");
    assert_eq!(h.held_topics.len(), 2);
    let first = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&first, true);
    h.pump();
    assert!(h.nothing_for(c), "answered with one topic of two confirmed");
    let second = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&second, true);
    h.pump();
    assert_eq!(h.only_frame(c), json!({"id": "s", "data": true}));
}

#[test]
fn a_subscribe_joining_a_topic_another_is_waiting_for_waits_too() {
    let mut h = Harness::with_broker();
    let alice = h.open_as("alice");
    let bob = h.open_as("bob");
    h.hold_topics = true;
    h.send(alice, subscribe("a", &["t"]));
    h.send(bob, subscribe("b", &["t"]));
    assert_eq!(h.held_topics.len(), 1, "one topic, subscribed once");
    assert!(
        h.nothing_for(bob),
        "bob was told before the topic was confirmed"
    );
    let topic = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    assert_eq!(h.only_frame(alice)["data"], json!(true));
    assert_eq!(h.only_frame(bob)["data"], json!(true));
}

#[test]
fn a_topic_the_broker_could_not_subscribe_fails_its_subscribers_and_leaves_nothing() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s", &["a"]));
    let topic = h.held_topics.remove(0);
    h.take_broker_commands();
    h.server.handle_topic_subscribed(&topic, false);
    h.pump();
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/broker-unavailable", "{reply}");
    assert_eq!(h.server.index_sizes().1, 0, "the subscription was undone");
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Unsubscribe(topic)],
        "its topic released"
    );
}

#[test]
fn while_the_broker_is_down_a_subscribe_needing_a_new_topic_fails_and_one_needing_none_succeeds() {
    let mut h = Harness::with_broker();
    let alice = h.open_as("alice");
    let bob = h.open_as("bob");
    h.send(alice, subscribe("a", &["held"]));
    assert_eq!(h.only_frame(alice)["data"], json!(true));
    h.server.handle_broker_state(false);
    h.pump();
    h.take_broker_commands();
    h.send(bob, subscribe("new", &["fresh"]));
    assert_eq!(code(&h.only_frame(bob)), "rtm/broker-unavailable");
    assert!(
        !h.server
            .broker_topics()
            .any(|t| *t == Topic::push("rtm", "score", "fresh")),
        "nothing left behind"
    );
    h.send(bob, subscribe("old", &["held"]));
    assert_eq!(h.only_frame(bob)["data"], json!(true), "the topic exists");
}

#[test]
fn the_auth_reply_waits_for_the_users_topic_while_the_broker_is_up() {
    let mut h = Harness::with_broker();
    h.hold_topics = true;
    let c = h.open();
    h.send(
        c,
        r#"{"id":"a","type":"auth","data":["user:alice"]}"#.to_owned(),
    );
    assert!(
        h.nothing_for(c),
        "answered before alice's topic was confirmed"
    );
    let topic = h.held_topics.remove(0);
    assert_eq!(topic, Topic::user("rtm", "alice"));
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    assert_eq!(h.only_frame(c)["data"]["user"], json!("alice"));
}

#[test]
fn the_auth_reply_does_not_wait_while_the_broker_is_down() {
    let mut h = Harness::with_broker();
    h.server.handle_broker_state(false);
    h.hold_topics = true;
    let c = h.open();
    h.send(
        c,
        r#"{"id":"a","type":"auth","data":["user:alice"]}"#.to_owned(),
    );
    assert_eq!(h.only_frame(c)["data"]["user"], json!("alice"));
}

fn unsubscribe(id: &str, tags: &[&str]) -> String {
    json!({"id": id, "type": "unsubscribe", "event": "score", "tags": tags}).to_string()
}

/// Requests on one subscription take effect in the order they arrived: an
/// unsubscribe sent right behind its subscribe (not waiting for the answer)
/// waits for it, is answered after it, and leaves nothing subscribed.
#[test]
fn an_unsubscribe_pipelined_behind_its_subscribe_takes_effect_after_it() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s", &["t"]));
    h.send(c, unsubscribe("u", &["t", "other"]));
    assert!(h.nothing_for(c), "the unsubscribe overtook its subscribe");
    let topic = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    assert_eq!(
        h.frames(c),
        vec![
            json!({"id": "s", "data": true}),
            json!({"id": "u", "data": true})
        ]
    );
    assert_eq!(h.server.index_sizes().1, 0, "still subscribed");
}

/// Subscribe, unsubscribe, subscribe again, all pipelined: the last word
/// is the subscribe; requests on other tags do not wait.
#[test]
fn a_resubscribe_behind_a_waiting_unsubscribe_ends_subscribed_and_other_tags_go_ahead() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s1", &["t"]));
    h.send(c, unsubscribe("u", &["t"]));
    h.send(c, subscribe("s2", &["t"]));
    // Another tag: its own topic, answered without waiting for "t".
    h.send(c, subscribe("x", &["x"]));
    assert_eq!(h.held_topics.len(), 2, "t and x asked of the broker");
    let x = h.held_topics.remove(1);
    h.server.handle_topic_subscribed(&x, true);
    h.pump();
    assert_eq!(h.frames(c), vec![json!({"id": "x", "data": true})]);
    let t = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&t, true);
    h.pump();
    // s2 needs "t" again after u released it: the broker is asked anew.
    let mut frames = h.frames(c);
    while let Some(topic) = h.held_topics.pop() {
        h.server.handle_topic_subscribed(&topic, true);
        h.pump();
        frames.extend(h.frames(c));
    }
    assert_eq!(
        frames,
        vec![
            json!({"id": "s1", "data": true}),
            json!({"id": "u", "data": true}),
            json!({"id": "s2", "data": true}),
        ]
    );
    assert_eq!(h.server.index_sizes().1, 2, "subscribed to t and x");
}

/// A waiting unsubscribe is in flight: its id is taken until it is done.
#[test]
fn a_waiting_unsubscribe_holds_its_id() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s", &["t"]));
    h.send(c, unsubscribe("u", &["t"]));
    h.send(c, unsubscribe("u", &["t"]));
    let reply = h.only_frame(c);
    assert_eq!(reply["id"], json!("u"));
    assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
}
