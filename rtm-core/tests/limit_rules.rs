//! The limits a client cannot pass, as rules: name lengths, tags per
//! request, subscriptions per connection, broker topics per server, auth
//! data, request ids in flight; and what becomes of JSON nested too deep or
//! strings with lone surrogates (a per-request `rtm/bad-request`).

mod common;

use common::harness::Harness;
use rtm_core::{Limits, ServerConfig};
use serde_json::{json, Value};

fn code(frame: &Value) -> &str {
    frame["data"]["error"]["code"].as_str().unwrap_or("")
}

fn message(frame: &Value) -> &str {
    frame["data"]["error"]["message"].as_str().unwrap_or("")
}

fn with_limits(limits: Limits, broker: bool) -> Harness {
    Harness::new(ServerConfig {
        auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
        broker,
        limits,
        ..Harness::fixture_config()
    })
}

fn subscribe(
    h: &mut Harness,
    conn: rtm_core::ConnId,
    id: &str,
    event: &str,
    tags: &[String],
) -> Value {
    h.send(
        conn,
        json!({"id": id, "type": "subscribe", "event": event, "tags": tags}).to_string(),
    );
    h.only_frame(conn)
}

fn tags(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn names_over_max_name_bytes_are_bad_request_naming_the_limit_and_keep_nothing() {
    let mut h = with_limits(Limits::default(), true);
    let c = h.open_as("alice");
    let at = "e".repeat(255);
    let over = "e".repeat(256);
    // A function name.
    h.send(
        c,
        json!({"id": "f", "type": "invoke", "function": over, "data": []}).to_string(),
    );
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/bad-request");
    assert!(message(&reply).contains("limit of 255"), "{reply}");
    // An event name, then a tag.
    let before = h.server.index_sizes();
    let topics_before = h.server.broker_topics().count();
    for (event, tag) in [
        (over.clone(), "t".to_owned()),
        ("e".to_owned(), over.clone()),
    ] {
        let reply = subscribe(&mut h, c, "s", &event, &[tag]);
        assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
        assert!(
            message(&reply).contains("256 bytes, over the limit of 255"),
            "{reply}"
        );
    }
    assert_eq!(h.server.index_sizes(), before, "nothing kept");
    assert_eq!(
        h.server.broker_topics().count(),
        topics_before,
        "no topic made"
    );
    // Exactly at the limit is served.
    let reply = subscribe(&mut h, c, "ok", &at, std::slice::from_ref(&at));
    assert_eq!(reply, json!({"id": "ok", "data": true}));
}

#[test]
fn a_user_id_over_max_name_bytes_from_the_auth_handler_rejects_the_authentication() {
    let mut h = Harness::with_auth();
    let c = h.open();
    let long = "u".repeat(256);
    h.send(
        c,
        json!({"id": "a", "type": "auth", "data": [format!("user:{long}")]}).to_string(),
    );
    let frames = h.take(c);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].json()["data"], json!(false));
    assert!(matches!(frames[1], common::harness::Delivery::Close { code, .. } if code.0 == 4003));
}

#[test]
fn more_tags_than_max_tags_per_request_is_bad_request() {
    let mut h = with_limits(Limits::default(), false);
    let c = h.open_as("alice");
    let reply = subscribe(&mut h, c, "over", "e", &tags(129, "t"));
    assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
    assert!(message(&reply).contains("129 tags"), "{reply}");
    assert_eq!(h.server.index_sizes().1, 0);
    let reply = subscribe(&mut h, c, "at", "e", &tags(128, "t"));
    assert_eq!(reply, json!({"id": "at", "data": true}));
}

#[test]
fn subscriptions_past_max_subscriptions_are_refused_whole() {
    let limits = Limits {
        max_subscriptions: 10,
        ..Limits::default()
    };
    let mut h = with_limits(limits, false);
    let c = h.open_as("alice");
    assert_eq!(
        subscribe(&mut h, c, "a", "e", &tags(8, "a"))["data"],
        json!(true)
    );
    // 3 more would make 11: none of them is added.
    let reply = subscribe(&mut h, c, "b", "e", &tags(3, "b"));
    assert_eq!(code(&reply), "rtm/too-many-subscriptions", "{reply}");
    assert_eq!(h.server.index_sizes().1, 8, "nothing half-made");
    // Tags already held do not count twice; 2 more make exactly 10.
    let mut again = tags(8, "a");
    again.extend(tags(2, "b"));
    assert_eq!(subscribe(&mut h, c, "c", "e", &again)["data"], json!(true));
    assert_eq!(h.server.index_sizes().1, 10);
}

#[test]
fn broker_topics_past_max_broker_topics_are_refused_for_the_requester_alone() {
    let limits = Limits {
        max_broker_topics: 5,
        ..Limits::default()
    };
    let mut h = with_limits(limits, true);
    let alice = h.open_as("alice"); // its user topic is the first
    let bob = h.open_as("bob"); // the second
    assert_eq!(
        subscribe(&mut h, alice, "a", "e", &tags(3, "t"))["data"],
        json!(true)
    );
    let reply = subscribe(&mut h, bob, "b", "e", &tags(2, "x"));
    assert_eq!(code(&reply), "rtm/too-many-subscriptions", "{reply}");
    // Joining topics that exist is fine.
    assert_eq!(
        subscribe(&mut h, bob, "c", "e", &tags(3, "t"))["data"],
        json!(true)
    );
    assert_eq!(h.server.broker_topics().count(), 5);
}

/// One user's connections share `max_subscriptions_per_user`: at the limit
/// exactly, more is refused whole (whichever of its connections asks),
/// another user is not affected, and releasing makes room again.
#[test]
fn a_users_connections_together_hold_at_most_max_subscriptions_per_user() {
    let limits = Limits {
        max_subscriptions_per_user: Some(10),
        ..Limits::default()
    };
    let mut h = with_limits(limits, true);
    let tab1 = h.open_as("alice");
    let tab2 = h.open_as("alice");
    let bob = h.open_as("bob");
    assert_eq!(
        subscribe(&mut h, tab1, "a", "e", &tags(6, "a"))["data"],
        json!(true)
    );
    assert_eq!(
        subscribe(&mut h, tab2, "b", "e", &tags(4, "b"))["data"],
        json!(true)
    );
    let reply = subscribe(&mut h, tab2, "c", "e", &tags(1, "c"));
    assert_eq!(code(&reply), "rtm/too-many-subscriptions", "{reply}");
    assert!(message(&reply).contains("user's limit of 10"), "{reply}");
    assert_eq!(
        subscribe(&mut h, bob, "d", "e", &tags(10, "d"))["data"],
        json!(true)
    );
    h.send(
        tab1,
        json!({"id": "u", "type": "unsubscribe", "event": "e", "tags": tags(1, "a")}).to_string(),
    );
    assert_eq!(h.only_frame(tab1)["data"], json!(true));
    assert_eq!(
        subscribe(&mut h, tab2, "c2", "e", &tags(1, "c"))["data"],
        json!(true)
    );
    // A closed connection gives its share back.
    h.close(tab1);
    assert_eq!(
        subscribe(&mut h, tab2, "f", "e", &tags(5, "f"))["data"],
        json!(true)
    );
}

/// Connections from one address share `max_subscriptions_per_ip`, signed in
/// or not; a connection from another address still subscribes.
#[test]
fn an_addresss_connections_together_hold_at_most_max_subscriptions_per_ip() {
    let limits = Limits {
        max_subscriptions_per_ip: Some(8),
        max_subscriptions_per_user: None,
        ..Limits::default()
    };
    let mut h = Harness::new(ServerConfig {
        broker: true,
        limits,
        ..Harness::fixture_config()
    });
    let attacker: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let victim: std::net::SocketAddr = "198.51.100.7:6000".parse().unwrap();
    let conns: Vec<_> = (0..3).map(|_| h.open_from(attacker)).collect();
    for (n, c) in conns.iter().take(2).enumerate() {
        let got = subscribe(
            &mut h,
            *c,
            &format!("s{n}"),
            "e",
            &tags(4, &format!("x{n}-")),
        );
        assert_eq!(got["data"], json!(true));
    }
    let reply = subscribe(&mut h, conns[2], "s2", "e", &tags(1, "y"));
    assert_eq!(code(&reply), "rtm/too-many-subscriptions", "{reply}");
    assert!(message(&reply).contains("address's limit of 8"), "{reply}");
    let v = h.open_from(victim);
    assert_eq!(
        subscribe(&mut h, v, "v", "e", &tags(8, "v"))["data"],
        json!(true)
    );
}

#[test]
fn auth_data_over_max_auth_bytes_is_bad_request_and_the_handler_never_runs() {
    let limits = Limits {
        max_auth_bytes: 100,
        ..Limits::default()
    };
    let mut h = with_limits(limits, false);
    h.hold_auth = true;
    let c = h.open();
    // `data` is `["user:…"]`: 2 brackets, 2 quotes and the token.
    let token = |len: usize| format!("user:{}", "u".repeat(len - 9));
    h.send(
        c,
        json!({"id": "big", "type": "auth", "data": [token(101)]}).to_string(),
    );
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
    assert!(h.held_auth.is_empty(), "the handler saw it");
    h.send(
        c,
        json!({"id": "at", "type": "auth", "data": [token(100)]}).to_string(),
    );
    assert_eq!(h.held_auth.len(), 1);
}

#[test]
fn a_request_id_reused_while_in_flight_is_bad_request_and_free_again_after() {
    let mut h = Harness::plain();
    let c = h.open();
    let sleep = |id: &str| {
        json!({"id": id, "type": "invoke", "function": "sleep", "data": [50]}).to_string()
    };
    h.send(c, sleep("x"));
    h.send(c, sleep("x"));
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
    assert!(message(&reply).contains("in flight"), "{reply}");
    h.advance(60);
    assert_eq!(h.only_frame(c), json!({"id": "x", "data": 50}));
    h.send(c, sleep("x"));
    h.advance(60);
    assert_eq!(
        h.only_frame(c),
        json!({"id": "x", "data": 50}),
        "the id is free again"
    );
}

#[test]
fn json_nested_past_serde_jsons_limit_is_a_per_request_bad_request() {
    // serde_json stops at 128 levels; the connection stays open.
    let mut h = Harness::plain();
    let c = h.open();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    h.send(
        c,
        format!(r#"{{"id":"1","type":"invoke","function":"echo","data":[{deep}]}}"#),
    );
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/bad-request", "{reply}");
    assert!(message(&reply).contains("recursion limit"), "{reply}");
    assert!(h.server.is_open(c));
}

#[test]
fn a_lone_surrogate_in_a_string_is_a_per_request_bad_request() {
    let mut h = Harness::plain();
    let c = h.open();
    h.send(
        c,
        r#"{"id":"1","type":"invoke","function":"echo","data":["\ud800"]}"#.to_owned(),
    );
    assert_eq!(code(&h.only_frame(c)), "rtm/bad-request");
    h.send(
        c,
        r#"{"id":"2","type":"subscribe","event":"\udfff","tags":["a"]}"#.to_owned(),
    );
    let reply = h.only_frame(c);
    assert_eq!(code(&reply), "rtm/bad-request");
    assert!(message(&reply).contains("not valid Unicode"), "{reply}");
    assert!(h.server.is_open(c));
    // In the request's own `id`, `type` or a key, the frame is no request: 1007.
    h.send(
        c,
        r#"{"id":"\ud800","type":"invoke","function":"echo","data":[]}"#.to_owned(),
    );
    assert!(matches!(
        h.next(c),
        Some(common::harness::Delivery::Close { code, .. }) if code.0 == 1007
    ));
}

fn echo(h: &mut Harness, conn: rtm_core::ConnId, id: &str) -> Value {
    h.send(
        conn,
        json!({"id": id, "type": "invoke", "function": "echo", "data": [id]}).to_string(),
    );
    h.only_frame(conn)
}

/// A function limited per connection: a burst at once, then one per
/// period; past it `rtm/too-many-requests` (saying when to retry), and the
/// function does not run. Another connection has its own budget.
#[test]
fn calls_past_a_functions_per_connection_rate_are_too_many_requests_and_do_not_run() {
    use rtm_core::{Rate, RateLimit};
    let mut h = Harness::plain();
    let echo_id = h.server.function_id("echo").unwrap();
    h.server.set_rate_limit(
        echo_id,
        RateLimit::per_connection(Rate::per_second(2).with_burst(3)),
    );
    let (a, b) = (h.open(), h.open());
    for n in 0..3 {
        assert_eq!(
            echo(&mut h, a, &format!("a{n}"))["data"],
            json!(format!("a{n}"))
        );
    }
    let ran = h.functions_run;
    let reply = echo(&mut h, a, "a3");
    assert_eq!(code(&reply), "rtm/too-many-requests", "{reply}");
    assert!(message(&reply).contains("retry in 500 ms"), "{reply}");
    assert_eq!(h.functions_run, ran, "the function ran");
    assert_eq!(
        echo(&mut h, b, "b0")["data"],
        json!("b0"),
        "b has its own budget"
    );
    h.advance(499);
    assert_eq!(code(&echo(&mut h, a, "a4")), "rtm/too-many-requests");
    h.advance(1);
    assert_eq!(echo(&mut h, a, "a5")["data"], json!("a5"));
}

/// A function limited per user: all the user's connections share the
/// budget; another user has its own.
#[test]
fn calls_past_a_functions_per_user_rate_are_refused_on_every_connection_of_the_user() {
    use rtm_core::{Rate, RateLimit};
    let mut h = Harness::with_auth();
    let echo_id = h.server.function_id("echo").unwrap();
    h.server
        .set_rate_limit(echo_id, RateLimit::per_user(Rate::per_minute(4)));
    let tab1 = h.open_as("alice");
    let tab2 = h.open_as("alice");
    let bob = h.open_as("bob");
    for (n, c) in [tab1, tab2, tab1, tab2].into_iter().enumerate() {
        assert_eq!(
            echo(&mut h, c, &format!("e{n}"))["data"],
            json!(format!("e{n}"))
        );
    }
    let reply = echo(&mut h, tab2, "e4");
    assert_eq!(code(&reply), "rtm/too-many-requests", "{reply}");
    assert!(message(&reply).contains("by this user"), "{reply}");
    assert_eq!(echo(&mut h, bob, "b")["data"], json!("b"));
    h.advance(15_000);
    assert_eq!(echo(&mut h, tab1, "e5")["data"], json!("e5"));
}

/// Sign-ins per address: past the rate the auth is rejected (4003) before
/// the handler runs; another address signs in.
#[test]
fn sign_ins_past_the_per_address_rate_are_rejected_before_the_handler() {
    let mut h = Harness::new(ServerConfig {
        auth_timeout: Some(ServerConfig::DEFAULT_AUTH_TIMEOUT),
        sign_ins_per_ip: Some(rtm_core::Rate::per_minute(2)),
        ..Harness::fixture_config()
    });
    let here: std::net::SocketAddr = "192.0.2.9:1000".parse().unwrap();
    let there: std::net::SocketAddr = "198.51.100.1:1000".parse().unwrap();
    let auth = r#"{"id":"a","type":"auth","data":["user:alice"]}"#;
    for _ in 0..2 {
        let c = h.open_from(here);
        h.send(c, auth);
        assert_eq!(h.only_frame(c)["data"]["user"], json!("alice"));
    }
    let c = h.open_from(here);
    h.send(c, auth);
    let frames = h.take(c);
    let reply = frames[0].json();
    assert_eq!(
        reply["error"]["code"],
        json!("rtm/auth-rejected"),
        "{reply}"
    );
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("sign-ins from this address"),
        "{reply}"
    );
    let other = h.open_from(there);
    h.send(other, auth);
    assert_eq!(h.only_frame(other)["data"]["user"], json!("alice"));
}
