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

fn auth(id: &str, user: &str) -> String {
    json!({"id": id, "type": "auth", "data": [format!("user:{user}")]}).to_string()
}

/// A page reload: the user's last connection closes and a new one signs in
/// while the unsubscribe of the user's topic is still on its way. The new
/// auth is answered once the broker has the topic again — never before
/// (the unsubscribe could land after a subscribe sent at once) and never
/// lost (no confirmation swallowed by a cancel-out).
#[test]
fn a_reload_while_the_users_unsubscribe_travels_is_answered_once_the_topic_is_back() {
    let mut h = Harness::with_broker();
    let old = h.open_as("alice");
    h.hold_topics = true;
    h.hold_unsubscribes = true;
    h.close(old);
    let topic = Topic::user("rtm", "alice");
    assert_eq!(h.held_unsubscribes, vec![topic.clone()]);
    let new = h.open();
    h.send(new, auth("a", "alice"));
    assert!(h.nothing_for(new), "answered while the unsubscribe travels");
    assert!(
        h.held_topics.is_empty(),
        "a subscribe sent beside its unsubscribe"
    );
    // The unsubscribe lands; then the subscribe goes, and its confirmation
    // answers the auth.
    h.held_unsubscribes.clear();
    h.server.handle_topic_unsubscribed(&topic);
    h.pump();
    assert_eq!(h.held_topics, vec![topic.clone()]);
    assert!(h.nothing_for(new));
    h.held_topics.clear();
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    assert_eq!(h.only_frame(new)["data"]["user"], json!("alice"));
}

/// A subscribe whose topic the broker never answers fails at the confirm
/// timeout (10 s), not a millisecond before, and is undone; one that needs
/// nothing new is answered at once meanwhile.
#[test]
fn a_subscribe_the_broker_never_confirms_fails_at_the_confirm_timeout_and_is_undone() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.hold_topics = true;
    h.send(c, subscribe("s", &["t"]));
    h.advance(9_999);
    assert!(h.nothing_for(c), "failed before the timeout");
    h.advance(1);
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/broker-unavailable", "{reply}");
    assert_eq!(h.server.index_sizes().1, 0, "the subscription was undone");
    // A late confirmation changes nothing for the request, and the topic,
    // no longer needed, is unsubscribed.
    let topic = h.held_topics.remove(0);
    h.take_broker_commands();
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    assert!(h.nothing_for(c), "answered twice");
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Unsubscribe(topic)]
    );
}

/// An auth whose user topic the broker never answers goes on at the
/// confirm timeout (authentication does not depend on the broker), even
/// when that is past the auth deadline: the peer authenticated in time.
#[test]
fn an_auth_the_broker_never_confirms_goes_on_at_the_confirm_timeout() {
    let mut h = Harness::with_broker();
    h.hold_topics = true;
    let c = h.open();
    h.advance(5_000);
    h.send(c, auth("a", "alice"));
    h.advance(9_999);
    assert!(h.nothing_for(c));
    h.advance(1);
    assert_eq!(h.only_frame(c)["data"]["user"], json!("alice"));
}

/// Many connections subscribing to one topic the broker has not confirmed
/// wait for that one confirmation; a later subscriber of a confirmed topic
/// is answered at once (no second subscribe, no 10 s wait).
#[test]
fn subscribers_of_a_topic_share_its_one_confirmation_and_later_ones_need_none() {
    let mut h = Harness::with_broker();
    let users: Vec<_> = (0..5).map(|n| h.open_as(&format!("u{n}"))).collect();
    h.hold_topics = true;
    for (n, c) in users.iter().enumerate() {
        h.send(*c, subscribe(&format!("s{n}"), &["t"]));
    }
    assert_eq!(h.held_topics.len(), 1);
    let topic = h.held_topics.remove(0);
    h.server.handle_topic_subscribed(&topic, true);
    h.pump();
    for c in &users {
        assert_eq!(h.only_frame(*c)["data"], json!(true));
    }
    h.hold_topics = false;
    let late = h.open_as("late");
    h.hold_topics = true;
    h.send(late, subscribe("l", &["t"]));
    assert_eq!(h.only_frame(late)["data"], json!(true));
    assert!(h.held_topics.is_empty());
}
