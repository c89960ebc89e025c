//! The rules of PROTOCOL.md, one test each, against the server core.
//!
//! Sections follow the protocol: lifecycle, invoke, push subscriptions, close,
//! server-side sending, the error table, the broker, limits and liveness.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{Delivery, Harness};
use rtm_core::server::OpenError;
use rtm_core::{
    Args, BrokerCommand, CloseCode, Envelope, ErrorCode, Heartbeat, Identity, RtmError,
    ServerConfig, ServerOutput, Topic,
};
use serde_json::{json, Value};

fn invoke(id: &str, function: &str, data: Value) -> String {
    json!({"id": id, "type": "invoke", "function": function, "data": data}).to_string()
}

fn subscribe(id: &str, event: &str, tags: &[&str]) -> String {
    json!({"id": id, "type": "subscribe", "event": event, "tags": tags}).to_string()
}

fn unsubscribe(id: &str, event: &str, tags: &[&str]) -> String {
    json!({"id": id, "type": "unsubscribe", "event": event, "tags": tags}).to_string()
}

fn auth(id: &str, token: &str) -> String {
    json!({"id": id, "type": "auth", "data": [token]}).to_string()
}

fn args(value: Value) -> Args {
    Args::encode(&value).unwrap()
}

/// The `error.code` of an error reply (empty when it is not one).
fn code(frame: &Value) -> &str {
    frame["data"]["error"]["code"].as_str().unwrap_or("")
}

fn closed_with(delivery: Option<Delivery>, want: CloseCode) {
    match delivery {
        Some(Delivery::Close { code, .. }) => assert_eq!(code, want),
        other => panic!("expected close {want}, got {other:?}"),
    }
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

// ----- lifecycle: open and auth -----

#[test]
fn open_without_auth_is_open() {
    let mut h = Harness::plain();
    let c = h.open();
    assert!(h.server.is_open(c));
    h.send(c, invoke("1", "echo", json!([1])));
    assert_eq!(h.only_frame(c), json!({"id": "1", "data": 1}));
}

#[test]
fn open_with_auth_is_unauthenticated() {
    let mut h = Harness::with_auth();
    let c = h.open();
    assert!(!h.server.is_open(c));
    assert_eq!(h.server.conn_info(c).unwrap().identity, None);
}

#[test]
fn invoke_before_auth_is_rejected_and_function_not_run() {
    let mut h = Harness::with_auth();
    let c = h.open();
    h.send(c, invoke("1", "echo", json!([1])));
    assert_eq!(code(&h.only_frame(c)), "rtm/unauthenticated");
    assert_eq!(h.functions_run, 0);
    assert_eq!(h.server.in_flight(c), 0);
}

#[test]
fn subscribe_and_unsubscribe_before_auth_are_rejected() {
    let mut h = Harness::with_auth();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a"]));
    h.send(c, unsubscribe("2", "score", &["a"]));
    let frames = h.frames(c);
    assert_eq!(code(&frames[0]), "rtm/unauthenticated");
    assert_eq!(code(&frames[1]), "rtm/unauthenticated");
    assert_eq!(h.server.index_sizes(), (0, 0));
}

#[test]
fn auth_accept_replies_identity_data_or_true() {
    let mut h = Harness::with_auth();
    h.hold_auth = true;
    let decisions = [
        (
            json!({"user": "alice", "role": "admin"}),
            json!({"user": "alice", "role": "admin"}),
        ),
        (Value::Null, json!(true)),
        (json!(false), json!(true)),
    ];
    for (data, reply) in decisions {
        let c = h.open();
        h.send(c, auth("a", "whatever"));
        let ticket = h.held_auth.pop().unwrap();
        h.server
            .handle_auth_result(ticket, Ok(Identity::new("alice", data.clone())));
        h.pump();
        assert_eq!(h.only_frame(c), json!({"id": "a", "data": reply}));
        assert!(h.server.is_open(c));
        assert_eq!(h.server.conn_info(c).unwrap().user_id(), Some("alice"));
        assert_eq!(h.server.conn_info(c).unwrap().authentication(), &data);
    }
}

#[test]
fn auth_data_is_visible_to_functions() {
    let mut h = Harness::with_auth();
    let c = h.open_as("alice");
    h.send(c, invoke("1", "whoami", json!([])));
    assert_eq!(
        h.only_frame(c),
        json!({"id": "1", "data": {"user": "alice"}})
    );
}

#[test]
fn auth_reject_replies_false_and_closes_4003() {
    let mut h = Harness::with_auth();
    let c = h.open();
    h.send(c, auth("a", "nope"));
    assert_eq!(
        h.next(c).unwrap().json(),
        json!({"id": "a", "data": false, "error": {"code": "rtm/auth-rejected", "message": "bad token"}})
    );
    closed_with(h.next(c), CloseCode::AUTH_REJECTED);
    assert_eq!(h.server.connection_count(), 0);
}

#[test]
fn auth_timeout_closes_4008_and_reports() {
    let mut h = Harness::with_auth();
    let c = h.open();
    h.advance(9_999);
    assert!(h.nothing_for(c));
    h.advance(1);
    closed_with(h.next(c), CloseCode::AUTH_TIMEOUT);
    let reported = h
        .take_notices()
        .into_iter()
        .filter(|n| matches!(n, ServerOutput::AuthTimedOut { info } if info.id == c))
        .count();
    assert_eq!(reported, 1);
    assert_eq!(h.server.connection_count(), 0);
}

#[test]
fn auth_timeout_applies_while_the_handler_is_still_deciding() {
    let mut h = Harness::with_auth();
    h.hold_auth = true;
    let c = h.open();
    h.send(c, auth("a", "user:alice"));
    h.advance(10_000);
    closed_with(h.next(c), CloseCode::AUTH_TIMEOUT);
}

#[test]
fn authenticated_connection_outlives_the_auth_deadline() {
    let mut h = Harness::with_auth();
    let c = h.open_as("alice");
    h.advance(60_000);
    assert!(h.nothing_for(c));
    assert!(h.server.is_open(c));
}

#[test]
fn auth_on_server_without_auth_answers_true() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, auth("a", "user:alice"));
    assert_eq!(h.only_frame(c), json!({"id": "a", "data": true}));
    assert_eq!(h.server.conn_info(c).unwrap().identity, None);
    assert_eq!(h.server.index_sizes(), (0, 0));
}

#[test]
fn second_auth_is_already_authenticated() {
    let mut h = Harness::with_auth();
    let c = h.open_as("alice");
    h.send(c, auth("b", "user:bob"));
    assert_eq!(code(&h.only_frame(c)), "rtm/already-authenticated");
    assert_eq!(h.server.conn_info(c).unwrap().user_id(), Some("alice"));
}

#[test]
fn late_auth_result_after_close_ignored() {
    let mut h = Harness::with_auth();
    h.hold_auth = true;
    let c = h.open();
    h.send(c, auth("a", "user:alice"));
    h.close(c);
    let ticket = h.held_auth.pop().unwrap();
    h.server
        .handle_auth_result(ticket, Ok(Identity::new("alice", Value::Null)));
    assert!(h.server.poll_output().is_none());
    assert_eq!(h.server.index_sizes(), (0, 0));
    assert_eq!(h.server.connection_count(), 0);
}

// ----- invoke -----

#[test]
fn invoke_result_is_the_reply_data() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("x", "add", json!([2, 3])));
    assert_eq!(h.only_frame(c), json!({"id": "x", "data": 5}));
}

#[test]
fn no_value_replies_null() {
    let mut h = Harness::plain();
    h.hold_calls = true;
    let c = h.open();
    h.send(c, invoke("1", "echo", json!([])));
    let (ticket, _) = h.held_calls.pop().unwrap();
    h.server.handle_call_result(ticket, Ok(&()));
    h.pump();
    assert_eq!(h.only_frame(c), json!({"id": "1", "data": null}));
}

#[test]
fn request_id_is_echoed_byte_for_byte() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(
        c,
        r#"{"id":"a\u00e9\"b","type":"invoke","function":"echo","data":[1]}"#,
    );
    let Some(Delivery::Frame(frame)) = h.next(c) else {
        panic!("no reply")
    };
    assert_eq!(&frame[..], br#"{"id":"a\u00e9\"b","data":1}"#);
}

#[test]
fn result_with_top_level_error_key_is_sent_unchanged() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("1", "echo", json!([{"error": "not really"}])));
    assert_eq!(
        h.only_frame(c),
        json!({"id": "1", "data": {"error": "not really"}})
    );
}

#[test]
fn replies_may_arrive_in_any_order() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("slow", "sleep", json!([100])));
    h.send(c, invoke("fast", "echo", json!([1])));
    assert_eq!(h.frames(c), vec![json!({"id": "fast", "data": 1})]);
    h.advance(100);
    assert_eq!(h.frames(c), vec![json!({"id": "slow", "data": 100})]);
}

// ----- push subscriptions -----

#[test]
fn subscribe_allowed_replies_true() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["match-7"]));
    assert_eq!(h.only_frame(c), json!({"id": "1", "data": true}));
    assert_eq!(h.server.index_sizes(), (0, 1));
}

#[test]
fn subscribe_denied_forbidden() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["public", "private-x"]));
    assert_eq!(code(&h.only_frame(c)), "rtm/forbidden");
    assert_eq!(h.server.index_sizes(), (0, 0));
    assert_eq!(
        h.server.push("score", &tags(&["public"]), &Args::empty()),
        Ok(0)
    );
}

#[test]
fn subscribe_idempotent() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a"]));
    h.send(c, subscribe("2", "score", &["a", "a"]));
    assert_eq!(
        h.frames(c),
        vec![
            json!({"id": "1", "data": true}),
            json!({"id": "2", "data": true})
        ]
    );
    assert_eq!(h.server.index_sizes(), (0, 1));
    assert_eq!(
        h.server.push("score", &tags(&["a"]), &args(json!([1]))),
        Ok(1)
    );
    h.pump();
    assert_eq!(h.frames(c), vec![json!({"event": "score", "data": [1]})]);
}

#[test]
fn unsubscribe_stops_push() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a", "b"]));
    h.send(c, unsubscribe("2", "score", &["a"]));
    h.frames(c);
    assert_eq!(h.server.push("score", &tags(&["a"]), &Args::empty()), Ok(0));
    assert_eq!(h.server.push("score", &tags(&["b"]), &Args::empty()), Ok(1));
    h.send(c, unsubscribe("3", "score", &["b"]));
    assert_eq!(h.server.push("score", &tags(&["b"]), &Args::empty()), Ok(0));
    assert_eq!(h.server.index_sizes(), (0, 0));
}

#[test]
fn push_delivered_once_with_several_matching_tags() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a", "b"]));
    h.frames(c);
    let sent = h
        .server
        .push("score", &tags(&["a", "b", "c"]), &args(json!([42])));
    assert_eq!(sent, Ok(1));
    h.pump();
    assert_eq!(h.frames(c), vec![json!({"event": "score", "data": [42]})]);
}

#[test]
fn push_reaches_only_the_subscribed_event() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a"]));
    h.frames(c);
    assert_eq!(h.server.push("goal", &tags(&["a"]), &Args::empty()), Ok(0));
    assert_eq!(h.server.push("score", &tags(&["z"]), &Args::empty()), Ok(0));
    h.pump();
    assert!(h.nothing_for(c));
}

#[test]
fn subscribe_authorization_counts_as_in_flight() {
    let mut h = Harness::new(ServerConfig {
        limits: rtm_core::Limits {
            max_in_flight: 1,
            ..Default::default()
        },
        ..Harness::fixture_config()
    });
    h.hold_authorize = true;
    let c = h.open();
    h.send(c, subscribe("1", "score", &["a"]));
    h.send(c, subscribe("2", "score", &["b"]));
    assert_eq!(code(&h.only_frame(c)), "rtm/too-many-requests");
    let ticket = h.held_authorize.pop().unwrap();
    h.server.handle_authorize_result(ticket, Ok(()));
    h.pump();
    assert_eq!(h.only_frame(c), json!({"id": "1", "data": true}));
    assert_eq!(h.server.in_flight(c), 0);
}

// ----- close -----

#[test]
fn close_drops_all_state() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.send(c, subscribe("1", "score", &["a", "b"]));
    h.send(c, subscribe("2", "goal", &["a"]));
    h.send(c, invoke("3", "sleep", json!([1000])));
    h.frames(c);
    assert_eq!(h.server.index_sizes(), (1, 3));
    assert_eq!(h.server.in_flight(c), 1);

    h.close(c);
    assert_eq!(h.server.index_sizes(), (0, 0));
    assert_eq!(h.server.broker_topics().count(), 0);
    assert_eq!(h.server.connection_count(), 0);
    assert_eq!(h.server.total_in_flight(), 0);
    assert!(h.server.conn_info(c).is_none());
    assert!(h
        .take_notices()
        .iter()
        .any(|n| matches!(n, ServerOutput::Disconnected { info } if info.id == c)));
    // The sleeping call finishes after the close: its reply goes nowhere.
    h.advance(1000);
    assert!(h.nothing_for(c));
}

#[test]
fn reply_to_closed_connection_discarded() {
    let mut h = Harness::plain();
    h.hold_calls = true;
    let old = h.open();
    h.send(old, invoke("1", "echo", json!([1])));
    h.close(old);
    // The new connection reuses the slot; the late reply must not reach it.
    let new = h.open();
    assert_ne!(old, new);
    let (ticket, _) = h.held_calls.pop().unwrap();
    h.server.handle_call_result(ticket, Ok(&1));
    assert!(h.server.poll_output().is_none());
    assert_eq!(h.server.in_flight(new), 0);
    h.send(new, invoke("2", "echo", json!([2])));
    assert_eq!(h.held_calls.len(), 1);
}

// ----- server-side sending -----

#[test]
fn emit_reaches_every_connection_with_data_as_an_array() {
    let mut h = Harness::plain();
    let (a, b) = (h.open(), h.open());
    assert_eq!(
        h.server.emit("alert", |_| true, &args(json!(["hi", 1]))),
        Ok(2)
    );
    h.pump();
    for c in [a, b] {
        assert_eq!(
            h.frames(c),
            vec![json!({"event": "alert", "data": ["hi", 1]})]
        );
    }
}

#[test]
fn emit_filter_chooses_the_targets() {
    let mut h = Harness::with_auth();
    let (a, b) = (h.open_as("alice"), h.open_as("bob"));
    let sent = h
        .server
        .emit("dm", |info| info.user_id() == Some("bob"), &Args::empty());
    assert_eq!(sent, Ok(1));
    h.pump();
    assert!(h.nothing_for(a));
    assert_eq!(h.frames(b), vec![json!({"event": "dm", "data": []})]);
}

#[test]
fn emit_skips_unauthenticated_on_auth_server() {
    let mut h = Harness::with_auth();
    let a = h.open_as("alice");
    let anonymous = h.open();
    assert_eq!(h.server.emit("alert", |_| true, &Args::empty()), Ok(1));
    h.pump();
    assert_eq!(h.frames(a).len(), 1);
    assert!(h.nothing_for(anonymous));
}

#[test]
fn emit_encodes_once() {
    let mut h = Harness::plain();
    let conns = [h.open(), h.open(), h.open()];
    h.server
        .emit("alert", |_| true, &args(json!(["x"])))
        .unwrap();
    h.pump();
    let pointers: Vec<*const u8> = conns
        .iter()
        .map(|c| match h.next(*c) {
            Some(Delivery::Frame(frame)) => frame.as_ptr(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(pointers.windows(2).all(|w| w[0] == w[1]), "{pointers:?}");
}

#[test]
fn events_from_one_sender_arrive_in_order() {
    let mut h = Harness::plain();
    let c = h.open();
    for n in 0..20 {
        h.server.emit("tick", |_| true, &args(json!([n]))).unwrap();
    }
    h.pump();
    let got: Vec<Value> = h
        .frames(c)
        .into_iter()
        .map(|f| f["data"][0].clone())
        .collect();
    assert_eq!(got, (0..20).map(|n| json!(n)).collect::<Vec<_>>());
}

#[test]
fn publish_without_auth_is_error() {
    let mut h = Harness::plain();
    let c = h.open();
    let err = h.server.publish("bob", "dm", &Args::empty()).unwrap_err();
    assert_eq!(err.code, ErrorCode::PublishWithoutAuth);
    h.send(c, invoke("1", "publish", json!(["bob", "dm"])));
    assert_eq!(code(&h.only_frame(c)), "rtm/no-auth");
}

#[test]
fn publish_reaches_every_connection_of_the_user() {
    let mut h = Harness::with_auth();
    let (a1, a2, b) = (h.open_as("alice"), h.open_as("alice"), h.open_as("bob"));
    assert_eq!(h.server.publish("alice", "dm", &args(json!(["hi"]))), Ok(2));
    h.pump();
    for c in [a1, a2] {
        assert_eq!(h.frames(c), vec![json!({"event": "dm", "data": ["hi"]})]);
    }
    assert!(h.nothing_for(b));
}

#[test]
fn bad_event_name_is_an_error_not_a_send() {
    let mut h = Harness::plain();
    h.open();
    let err = h.server.emit("", |_| true, &Args::empty()).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
}

// ----- the error table -----

#[test]
fn non_json_closes_1007() {
    let mut h = Harness::plain();
    let bystander = h.open();
    for text in [
        "not json",
        "[1,2,3]",
        "\"hello\"",
        r#"{"type":"invoke","function":"echo"}"#,
        r#"{"id":7,"type":"invoke","function":"echo"}"#,
        r#"{"id":"1","function":"echo"}"#,
        "\u{feff}{}",
    ] {
        let c = h.open();
        h.send(c, text);
        closed_with(h.next(c), CloseCode::INVALID_PAYLOAD);
    }
    // The server keeps running.
    h.send(bystander, invoke("1", "echo", json!([1])));
    assert_eq!(h.only_frame(bystander), json!({"id": "1", "data": 1}));
}

#[test]
fn bad_fields_are_bad_request_and_the_connection_stays_open() {
    let mut h = Harness::plain();
    let c = h.open();
    for text in [
        r#"{"id":"1","type":"dance"}"#,
        r#"{"id":"1","type":"invoke","data":[]}"#,
        r#"{"id":"1","type":"invoke","function":5}"#,
        r#"{"id":"1","type":"invoke","function":"echo","data":{"x":1}}"#,
        r#"{"id":"1","type":"subscribe","event":"score","tags":[1]}"#,
        r#"{"id":"1","type":"subscribe","tags":["a"]}"#,
        r#"{"id":"1","type":"subscribe","event":"","tags":["a"]}"#,
    ] {
        h.send(c, text);
        assert_eq!(code(&h.only_frame(c)), "rtm/bad-request", "{text}");
    }
    h.send(c, invoke("2", "echo", json!([2])));
    assert_eq!(h.only_frame(c), json!({"id": "2", "data": 2}));
    assert_eq!(h.functions_run, 1);
}

#[test]
fn binary_closes_1003() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send_binary(c);
    closed_with(h.next(c), CloseCode::UNSUPPORTED_DATA);
}

#[test]
fn oversized_frame_closes_1009_and_exactly_at_limit_served() {
    const LIMIT: usize = 256;
    let mut h = Harness::new(ServerConfig {
        limits: rtm_core::Limits {
            max_frame_bytes: LIMIT,
            ..Default::default()
        },
        ..Harness::fixture_config()
    });
    let padded = |size: usize| {
        let base = invoke("1", "echo", json!([""])).len();
        invoke("1", "echo", json!(["x".repeat(size - base)]))
    };
    let c = h.open();
    h.send(c, padded(LIMIT));
    assert_eq!(h.only_frame(c)["id"], "1");
    h.send(c, padded(LIMIT + 1));
    closed_with(h.next(c), CloseCode::MESSAGE_TOO_BIG);

    // A transport that refuses the frame itself reports it the same way.
    let c = h.open();
    h.server.handle_oversized(c);
    h.pump();
    closed_with(h.next(c), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn unknown_function_not_found() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("1", "helo", json!([])));
    assert_eq!(
        h.only_frame(c),
        json!({"id": "1", "data": {"error": {"code": "rtm/function-not-found", "message": "no function named 'helo'"}}})
    );
    assert_eq!(h.functions_run, 0);
}

#[test]
fn handler_error_reply() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("1", "fail", json!(["boom"])));
    assert_eq!(
        h.only_frame(c),
        json!({"id": "1", "data": {"error": {"code": "rtm/handler-error", "message": "boom"}}})
    );
}

#[test]
fn handler_error_keeps_the_code_the_application_chose() {
    let mut h = Harness::plain();
    h.hold_calls = true;
    let c = h.open();
    h.send(c, invoke("1", "echo", json!([])));
    let (ticket, _) = h.held_calls.pop().unwrap();
    let err = RtmError::new(ErrorCode::Other("app/out-of-stock".into()), "none left");
    h.server.handle_call_result::<Value>(ticket, Err(err));
    h.pump();
    let frame = h.only_frame(c);
    assert_eq!(code(&frame), "app/out-of-stock");
    assert_eq!(frame["data"]["error"]["message"], "none left");
}

#[test]
fn panicked_function_replies_internal_and_the_connection_stays_open() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(c, invoke("1", "panic", json!([])));
    assert_eq!(code(&h.only_frame(c)), "rtm/internal");
    h.send(c, invoke("2", "echo", json!([2])));
    assert_eq!(h.only_frame(c), json!({"id": "2", "data": 2}));
}

#[test]
fn too_many_in_flight() {
    const LIMIT: usize = 3;
    let mut h = Harness::new(ServerConfig {
        limits: rtm_core::Limits {
            max_in_flight: LIMIT,
            ..Default::default()
        },
        ..Harness::fixture_config()
    });
    h.hold_calls = true;
    let c = h.open();
    for n in 0..LIMIT {
        h.send(c, invoke(&n.to_string(), "echo", json!([n])));
    }
    assert_eq!(h.held_calls.len(), LIMIT);
    assert!(h.nothing_for(c));

    h.send(c, invoke("over", "echo", json!([])));
    assert_eq!(code(&h.only_frame(c)), "rtm/too-many-requests");
    assert_eq!(h.held_calls.len(), LIMIT, "the refused call did not run");

    let (ticket, _) = h.held_calls.remove(0);
    h.server.handle_call_result(ticket, Ok(&0));
    h.pump();
    assert_eq!(h.only_frame(c), json!({"id": "0", "data": 0}));
    h.send(c, invoke("again", "echo", json!([])));
    assert!(h.nothing_for(c));
    assert_eq!(h.held_calls.len(), LIMIT);
}

#[test]
fn slow_consumer_close_1013_reason_rtm_slow_consumer() {
    let mut h = Harness::plain();
    let (slow, other) = (h.open(), h.open());
    h.server.handle_slow_consumer(slow);
    h.pump();
    assert_eq!(
        h.next(slow),
        Some(Delivery::Close {
            code: CloseCode::TRY_AGAIN_LATER,
            reason: "rtm/slow-consumer"
        })
    );
    h.send(other, invoke("1", "echo", json!([1])));
    assert_eq!(h.only_frame(other), json!({"id": "1", "data": 1}));
}

#[test]
fn shutdown_closes_every_connection_1001() {
    let mut h = Harness::plain();
    let conns = [h.open(), h.open()];
    h.server.close_all(CloseCode::GOING_AWAY, "shutdown");
    h.pump();
    for c in conns {
        closed_with(h.next(c), CloseCode::GOING_AWAY);
    }
    assert_eq!(h.server.connection_count(), 0);
}

// ----- limits and liveness -----

#[test]
fn max_connections_refused_at_the_edge() {
    let mut h = Harness::new(ServerConfig {
        limits: rtm_core::Limits {
            max_connections: 2,
            ..Default::default()
        },
        ..Harness::fixture_config()
    });
    let (a, _b) = (h.open(), h.open());
    let refused = h.server.handle_open(Default::default(), h.now);
    assert_eq!(refused, Err(OpenError::TooManyConnections(2)));
    h.close(a);
    assert!(h.server.handle_open(Default::default(), h.now).is_ok());
}

fn heartbeat_config() -> ServerConfig {
    ServerConfig {
        heartbeat: Some(Heartbeat {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }),
        ..Harness::fixture_config()
    }
}

fn pings(h: &mut Harness) -> usize {
    h.take_notices()
        .iter()
        .filter(|n| matches!(n, ServerOutput::Ping { .. }))
        .count()
}

#[test]
fn heartbeat_pings_then_closes_a_silent_peer() {
    let mut h = Harness::new(heartbeat_config());
    let c = h.open();
    h.advance(25_000);
    assert_eq!(pings(&mut h), 1);
    assert!(h.nothing_for(c));
    h.advance(25_000);
    assert_eq!(pings(&mut h), 1);
    h.advance(25_000);
    assert!(matches!(h.next(c), Some(Delivery::Close { .. })));
    let silent = h
        .take_notices()
        .iter()
        .filter(|n| matches!(n, ServerOutput::PeerSilent { info } if info.id == c))
        .count();
    assert_eq!(silent, 1);
    assert_eq!(h.server.connection_count(), 0);
}

#[test]
fn heartbeat_closes_a_silent_peer_at_the_timeout_not_an_interval_later() {
    let mut h = Harness::new(heartbeat_config());
    let c = h.open();
    h.advance(50_000); // pings at 25 s and 50 s
    assert!(h.server.is_open(c));
    h.advance(9_999); // 59.999 s of silence
    assert!(h.server.is_open(c), "closed before the timeout");
    h.advance(1); // 60 s
    assert!(!h.server.is_open(c), "still open at the timeout");
}

#[test]
fn heartbeat_activity_keeps_the_peer_alive() {
    let mut h = Harness::new(heartbeat_config());
    let c = h.open();
    for _ in 0..20 {
        h.advance(25_000);
        h.server.handle_activity(c, h.now);
    }
    assert!(h.nothing_for(c));
    assert!(h.server.is_open(c));
    assert_eq!(pings(&mut h), 20);
}

// ----- the broker -----

#[test]
fn broker_user_topic_subscribed_on_first_user_conn_unsubscribed_on_last() {
    let mut h = Harness::with_broker();
    let topic = Topic::user("rtm", "alice");
    let anonymous = h.open();
    assert_eq!(h.take_broker_commands(), vec![]);
    let a1 = h.open_as("alice");
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Subscribe(topic.clone())]
    );
    let a2 = h.open_as("alice");
    h.close(a1);
    h.close(anonymous);
    assert_eq!(h.take_broker_commands(), vec![]);
    h.close(a2);
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Unsubscribe(topic)]
    );
}

#[test]
fn broker_push_topic_subscribed_on_first_subscription_unsubscribed_on_last() {
    let mut h = Harness::with_broker();
    let topic = Topic::push("rtm", "score", "a");
    let (a, b) = (h.open_as("alice"), h.open_as("bob"));
    h.take_broker_commands();
    h.send(a, subscribe("1", "score", &["a"]));
    h.send(b, subscribe("1", "score", &["a"]));
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Subscribe(topic.clone())]
    );
    h.send(a, unsubscribe("2", "score", &["a"]));
    assert_eq!(h.take_broker_commands(), vec![]);
    h.send(b, unsubscribe("2", "score", &["a"]));
    assert_eq!(
        h.take_broker_commands(),
        vec![BrokerCommand::Unsubscribe(topic)]
    );
}

#[test]
fn publish_and_push_travel_as_envelopes_on_their_topics() {
    let mut h = Harness::with_broker();
    h.take_broker_commands();
    h.server.publish("bob", "dm", &args(json!(["hi"]))).unwrap();
    h.server
        .push("score", &tags(&["a", "b"]), &args(json!([1])))
        .unwrap();
    h.pump();
    let commands = h.take_broker_commands();
    let published: Vec<(Topic, Envelope)> = commands
        .into_iter()
        .map(|c| match c {
            BrokerCommand::Publish { topic, payload, .. } => {
                (topic, Envelope::decode(payload).unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(published.len(), 3);
    assert_eq!(published[0].0, Topic::user("rtm", "bob"));
    assert_eq!(
        &published[0].1.frame[..],
        br#"{"event":"dm","data":["hi"]}"#
    );
    assert_eq!(published[0].1.origin, "s1");
    // ServerCore reads no clock: its envelopes are unstamped.
    assert_eq!(published[0].1.sent_at, None);
    assert_eq!(published[1].0, Topic::push("rtm", "score", "a"));
    assert_eq!(published[2].0, Topic::push("rtm", "score", "b"));
    assert_eq!(
        published[1].1, published[2].1,
        "one envelope for every tag topic"
    );
    assert_eq!(published[1].1.tags, Some(tags(&["a", "b"])));
}

#[test]
fn broker_message_from_own_origin_not_delivered() {
    let mut h = Harness::with_broker();
    let a = h.open_as("alice");
    let frame = Bytes::from_static(br#"{"event":"dm","data":[]}"#);
    let payload = Envelope::encode("s1", 1, None, None, &frame);
    let topic = Topic::user("rtm", "alice");
    assert_eq!(
        h.server.handle_broker_message(topic.as_str(), payload),
        Ok(0)
    );
    h.pump();
    assert!(h.nothing_for(a));
}

#[test]
fn broker_message_to_user_delivered_to_each_local_conn_once() {
    let mut h = Harness::with_broker();
    let (a1, a2, b) = (h.open_as("alice"), h.open_as("alice"), h.open_as("bob"));
    let frame = Bytes::from_static(br#"{"event":"dm","data":["hi"]}"#);
    let payload = Envelope::encode("s2", 1, None, None, &frame);
    let forwarded = Envelope::decode(payload.clone()).unwrap().frame;
    let topic = Topic::user("rtm", "alice");
    assert_eq!(
        h.server.handle_broker_message(topic.as_str(), payload),
        Ok(2)
    );
    h.pump();
    for c in [a1, a2] {
        let got = h.take(c);
        assert_eq!(got.len(), 1);
        let Delivery::Frame(bytes) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(bytes, &frame);
        assert_eq!(
            bytes.as_ptr(),
            forwarded.as_ptr(),
            "forwarded without re-encoding"
        );
    }
    assert!(h.nothing_for(b));
}

#[test]
fn broker_message_on_an_unknown_topic_is_dropped() {
    let mut h = Harness::with_broker();
    h.open_as("alice");
    let frame = Bytes::from_static(br#"{"event":"e","data":[]}"#);
    let payload = Envelope::encode("s2", 1, None, None, &frame);
    let topic = Topic::user("rtm", "carol");
    assert_eq!(
        h.server.handle_broker_message(topic.as_str(), payload),
        Ok(0)
    );
    assert!(h
        .server
        .handle_broker_message(topic.as_str(), Bytes::from_static(b"garbage"))
        .is_err());
}

#[test]
fn multi_tag_push_via_broker_delivered_once() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.send(c, subscribe("1", "score", &["a", "b"]));
    h.frames(c);
    let frame = Bytes::from_static(br#"{"event":"score","data":[1]}"#);
    let payload = Envelope::encode("s2", 7, Some(&tags(&["a", "b"])), None, &frame);
    let on_a = Topic::push("rtm", "score", "a");
    let on_b = Topic::push("rtm", "score", "b");
    assert_eq!(
        h.server
            .handle_broker_message(on_a.as_str(), payload.clone()),
        Ok(1)
    );
    assert_eq!(
        h.server.handle_broker_message(on_b.as_str(), payload),
        Ok(0)
    );
    h.pump();
    assert_eq!(h.frames(c), vec![json!({"event": "score", "data": [1]})]);
    // A later push (another seq) is a new message.
    let payload = Envelope::encode("s2", 8, Some(&tags(&["a", "b"])), None, &frame);
    assert_eq!(
        h.server.handle_broker_message(on_b.as_str(), payload),
        Ok(1)
    );
}

#[test]
fn broker_down_publish_and_push_return_broker_unavailable() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.send(c, subscribe("1", "score", &["a"]));
    h.frames(c);
    h.take_broker_commands();
    h.server.handle_broker_state(false);
    let unavailable = |r: Result<usize, RtmError>| r.unwrap_err().code;
    assert_eq!(
        unavailable(h.server.publish("alice", "dm", &Args::empty())),
        ErrorCode::BrokerUnavailable
    );
    assert_eq!(
        unavailable(h.server.push("score", &tags(&["a"]), &Args::empty())),
        ErrorCode::BrokerUnavailable
    );
    h.pump();
    assert!(h.nothing_for(c), "nothing sent, not even locally");
    assert_eq!(h.take_broker_commands(), vec![]);
    h.send(c, invoke("2", "push", json!(["score", ["a"]])));
    assert_eq!(code(&h.only_frame(c)), "rtm/broker-unavailable");
}

#[test]
fn broker_back_up_resubscribes() {
    let mut h = Harness::with_broker();
    let c = h.open_as("alice");
    h.send(c, subscribe("1", "score", &["a"]));
    h.take_broker_commands();
    h.server.handle_broker_state(false);
    h.server.handle_broker_state(true);
    h.pump();
    let mut topics: Vec<Topic> = h
        .take_broker_commands()
        .into_iter()
        .map(|c| match c {
            BrokerCommand::Subscribe(topic) => topic,
            other => panic!("{other:?}"),
        })
        .collect();
    topics.sort();
    let mut expected = vec![
        Topic::user("rtm", "alice"),
        Topic::push("rtm", "score", "a"),
    ];
    expected.sort();
    assert_eq!(topics, expected);
    assert!(h.server.publish("alice", "dm", &Args::empty()).is_ok());
}

/// A server that knows the time stamps what it sends through the broker,
/// and the receiver reads the stamp back (its broker lag is measured from
/// it); `ServerCore`, which reads no clock, sends unstamped envelopes.
#[test]
fn a_stamped_publish_carries_its_send_time_to_the_receiver() {
    let mut config = ServerConfig::new("s1");
    config.broker = true;
    config.auth_timeout = Some(Duration::from_secs(10));
    let sender: rtm_core::Router<()> = rtm_core::Router::new(&config);
    let (_, publish) = sender
        .publish(
            "alice",
            "dm",
            &args(json!(["hi"])),
            Some(1_700_000_000_123),
            |_, _, _| {},
        )
        .unwrap();
    let publish = publish.expect("a broker command");
    let envelope = Envelope::decode(publish.payload.clone()).unwrap();
    assert_eq!(envelope.sent_at, Some(1_700_000_000_123));

    let mut other = config.clone();
    other.server_id = "s2".into();
    let receiver: rtm_core::Router<()> = rtm_core::Router::new(&other);
    let received = receiver
        .handle_broker_message(
            publish.topic.as_str(),
            publish.payload,
            &mut rtm_core::RecentPushes::default(),
            |_, _, _| {},
        )
        .unwrap();
    assert_eq!(received.sent_at, Some(1_700_000_000_123));
    assert!(!received.from_here);
}
