//! The `rtm-fixture` contract, function by function and flag by flag, over
//! real sockets against `rtm-fixture` on every runtime (tokio, async-std, smol).

mod common;

use std::time::{Duration, Instant};

use common::{fixture_on, FIXTURE_BIN};
use conformance::fixture::run_to_exit;
use conformance::{Adapter, Fixture, RawConn};
use rtm_core::testkit::vectors::pad_to;
use rtm_driver::tls::ClientTls;
use rtm_driver::ClientOptions;
use serde_json::{json, Value};

async fn conn(fixture: &Fixture) -> RawConn {
    RawConn::connect(fixture.url()).await.unwrap()
}

async fn user(fixture: &Fixture, name: &str) -> RawConn {
    RawConn::connect_as(fixture.url(), name).await.unwrap()
}

fn code(error: &Value) -> &str {
    error.get("code").and_then(Value::as_str).unwrap_or("")
}

// ----- functions -----

async fn echo_add_and_fail_answer_as_documented(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    assert_eq!(
        c.call_ok("echo", json!([{"a": [1]}])).await.unwrap(),
        json!({"a": [1]})
    );
    assert_eq!(c.call_ok("add", json!([2, 3.5])).await.unwrap(), json!(5.5));
    let error = c.call_err("add", json!([1, "2"])).await.unwrap();
    assert_eq!(code(&error), "rtm/handler-error");
    let error = c.call_err("fail", json!(["boom"])).await.unwrap();
    assert_eq!(
        (code(&error), &error["message"]),
        ("rtm/handler-error", &json!("boom"))
    );
}

async fn big_n_returns_a_string_of_n_x(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    assert_eq!(c.call_ok("big", json!([0])).await.unwrap(), json!(""));
    let big = c.call_ok("big", json!([100_000])).await.unwrap();
    let big = big.as_str().unwrap();
    assert_eq!(big.len(), 100_000);
    assert!(big.bytes().all(|b| b == b'x'));
}

async fn count_is_the_number_of_local_connections(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut a = conn(&f).await;
    let mut b = conn(&f).await;
    let mut c = conn(&f).await;
    // Each has been served once, so each is registered.
    for x in [&mut a, &mut b, &mut c] {
        x.call_ok("echo", json!([1])).await.unwrap();
    }
    assert_eq!(a.call_ok("count", json!([])).await.unwrap(), json!(3));
    c.close().await;
    conformance::adapter::within("count to drop to 2", common::EVENT_TIMEOUT, async {
        while a.call_ok("count", json!([])).await.unwrap() != json!(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    b.expect_nothing().await.unwrap();
}

async fn broadcast_emits_alert_to_every_connection(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = conn(&f).await;
        c.call_ok("echo", json!([1])).await.unwrap();
        conns.push(c);
    }
    assert_eq!(
        conns[0].call_ok("broadcast", json!(["hi"])).await.unwrap(),
        json!(3)
    );
    for c in &mut conns {
        assert_eq!(
            c.next_event().await.unwrap(),
            json!({"event": "alert", "data": ["hi"]})
        );
        c.expect_nothing().await.unwrap();
    }
}

async fn emit_sends_event_and_args_to_every_connection(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut a = conn(&f).await;
    let mut b = conn(&f).await;
    b.call_ok("echo", json!([1])).await.unwrap();
    assert_eq!(
        a.call_ok("emit", json!(["e", 1, {"k": 2}])).await.unwrap(),
        json!(2)
    );
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.next_event().await.unwrap(),
            json!({"event": "e", "data": [1, {"k": 2}]})
        );
        c.expect_nothing().await.unwrap();
    }
}

async fn emit_to_reaches_only_that_users_connections(rt: Adapter) {
    let f = fixture_on(rt, &["--auth"]);
    let mut alice1 = user(&f, "alice").await;
    let mut alice2 = user(&f, "alice").await;
    let mut bob = user(&f, "bob").await;
    assert_eq!(
        bob.call_ok("emit_to", json!(["alice", "dm", 1]))
            .await
            .unwrap(),
        json!(2)
    );
    for alice in [&mut alice1, &mut alice2] {
        assert_eq!(
            alice.next_event().await.unwrap(),
            json!({"event": "dm", "data": [1]})
        );
        alice.expect_nothing().await.unwrap();
    }
    bob.expect_nothing().await.unwrap();
    assert_eq!(
        bob.call_ok("emit_to", json!(["carol", "dm"]))
            .await
            .unwrap(),
        json!(0)
    );
}

async fn publish_with_auth_reaches_every_connection_of_the_user_once(rt: Adapter) {
    let f = fixture_on(rt, &["--auth"]);
    let mut alice1 = user(&f, "alice").await;
    let mut alice2 = user(&f, "alice").await;
    let mut bob = user(&f, "bob").await;
    assert_eq!(
        bob.call_ok("publish", json!(["alice", "dm", "x"]))
            .await
            .unwrap(),
        Value::Null
    );
    for alice in [&mut alice1, &mut alice2] {
        assert_eq!(
            alice.next_event().await.unwrap(),
            json!({"event": "dm", "data": ["x"]})
        );
        alice.expect_nothing().await.unwrap();
    }
    bob.expect_nothing().await.unwrap();
}

/// Redis unreachable at start: the fixture serves on, says at WARN what fails
/// until Redis is reachable, and Publish answers `rtm/broker-unavailable`.
async fn redis_unreachable_at_start_warns_and_publish_fails_plainly(rt: Adapter) {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let f = fixture_on(rt, &["--auth", "--redis", &url]);
    let mut bob = user(&f, "bob").await;
    common::eventually("the broker-down warning", || {
        f.stderr().contains("WARN") && f.stderr().contains("Publish and Push fail")
    })
    .await;
    let err = bob
        .call_err("publish", json!(["alice", "dm", "x"]))
        .await
        .unwrap();
    assert_eq!(code(&err), "rtm/broker-unavailable", "{err}");
    assert!(
        !f.stderr().contains('\u{1b}'),
        "ANSI codes in a log that is not a terminal"
    );
}

async fn publish_without_auth_is_an_error_reply(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    c.call_err("publish", json!(["bob", "dm", "x"]))
        .await
        .unwrap();
    c.expect_nothing().await.unwrap();
}

async fn push_reaches_each_matching_subscription_once(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut one_tag = conn(&f).await;
    let mut two_tags = conn(&f).await;
    let mut other_event = conn(&f).await;
    one_tag.subscribe("score", &["a"]).await.unwrap();
    two_tags.subscribe("score", &["b", "c"]).await.unwrap();
    other_event.subscribe("goal", &["a"]).await.unwrap();
    let pushed = other_event
        .call_ok("push", json!(["score", ["a", "b", "c"], 42]))
        .await;
    assert_eq!(pushed.unwrap(), Value::Null);
    for c in [&mut one_tag, &mut two_tags] {
        assert_eq!(
            c.next_event().await.unwrap(),
            json!({"event": "score", "data": [42]})
        );
        c.expect_nothing().await.unwrap();
    }
    other_event.expect_nothing().await.unwrap();
}

async fn history_events_keep_positions_and_a_client_that_was_away_recovers(rt: Adapter) {
    let f = fixture_on(rt, &["--history-events", "sc*"]);
    let mut first = conn(&f).await;
    first
        .send_json(&json!({"id": "s", "type": "subscribe", "event": "score", "tags": ["a"], "since": {"a": null}}))
        .await
        .unwrap();
    let reply = first.reply_to("s").await.unwrap();
    let state = &reply["streams"]["a"];
    assert_eq!(state["offset"], json!(0), "{reply}");
    let epoch = state["epoch"].clone();
    // The caller's push: kept, then delivered with its position.
    assert_eq!(
        first
            .call_ok("push", json!(["score", ["a"], 1]))
            .await
            .unwrap(),
        Value::Null
    );
    assert_eq!(
        first.next_event().await.unwrap(),
        json!({"event": "score", "data": [1], "tag": "a", "offset": 1, "epoch": epoch})
    );
    first.close().await;
    let mut other = conn(&f).await;
    for n in 2..=3 {
        other
            .call_ok("push", json!(["score", ["a"], n]))
            .await
            .unwrap();
    }
    // Back from offset 1: 2 and 3 before the reply, recovered.
    other
        .send_json(&json!({"id": "r", "type": "subscribe", "event": "score", "tags": ["a"], "since": {"a": {"offset": 1, "epoch": epoch}}}))
        .await
        .unwrap();
    for n in 2..=3 {
        assert_eq!(
            other.next_frame().await.unwrap(),
            json!({"event": "score", "data": [n], "tag": "a", "offset": n, "epoch": epoch})
        );
    }
    let reply = other.reply_to("r").await.unwrap();
    assert_eq!(
        reply,
        json!({"id": "r", "data": true, "streams": {"a": {"offset": 3, "epoch": epoch, "recovered": true}}})
    );
    // An event outside the pattern: as before, no positions, no history.
    other.subscribe("goal", &["a"]).await.unwrap();
    other
        .call_ok("push", json!(["goal", ["a"], 9]))
        .await
        .unwrap();
    assert_eq!(
        other.next_event().await.unwrap(),
        json!({"event": "goal", "data": [9]})
    );
}

async fn subscribe_to_a_private_tag_is_forbidden_and_others_are_allowed(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    for tags in [&["private-x"][..], &["open", "private-y"][..]] {
        let reply = c.subscription(true, "score", tags).await.unwrap();
        let error = conformance::conn::error_of(&reply).unwrap();
        assert_eq!(code(error), "rtm/forbidden", "{tags:?}");
    }
    c.subscribe("score", &["public-x", "xprivate-"])
        .await
        .unwrap();
}

async fn panic_answers_internal_and_the_connection_and_server_keep_working(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    let error = c.call_err("panic", json!([])).await.unwrap();
    assert_eq!(code(&error), "rtm/internal");
    assert_eq!(
        c.call_ok("echo", json!(["still here"])).await.unwrap(),
        json!("still here")
    );
    let mut other = conn(&f).await;
    assert_eq!(other.call_ok("add", json!([1, 1])).await.unwrap(), json!(2));
}

async fn sleep_runs_concurrently_so_a_later_call_can_answer_first(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    let slow = c.invoke("sleep", json!([300])).await.unwrap();
    let fast = c.invoke("echo", json!(["fast"])).await.unwrap();
    let first = c.next_frame().await.unwrap();
    assert_eq!(first, json!({"id": fast, "data": "fast"}));
    let second = c.next_frame().await.unwrap();
    assert_eq!(second, json!({"id": slow, "data": 300}));
}

async fn whoami_is_null_without_auth(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    assert_eq!(c.call_ok("whoami", json!([])).await.unwrap(), Value::Null);
}

async fn whoami_is_the_authentication_data_with_auth(rt: Adapter) {
    let f = fixture_on(rt, &["--auth"]);
    let mut c = user(&f, "alice").await;
    assert_eq!(
        c.call_ok("whoami", json!([])).await.unwrap(),
        json!({"user": "alice"})
    );
}

// ----- flags -----

async fn auth_accepts_only_user_tokens_and_rejects_the_rest_with_bad_token(rt: Adapter) {
    let f = fixture_on(rt, &["--auth"]);
    for token in ["alice", "user:", "User:alice"] {
        let mut c = conn(&f).await;
        let reply = c.auth(token).await.unwrap();
        assert_eq!(
            reply.get("error"),
            Some(&json!({"code": "rtm/auth-rejected", "message": "bad token"})),
            "{token:?}: {reply}"
        );
        assert_eq!(c.expect_close().await.unwrap(), 4003);
    }
}

async fn auth_timeout_ms_closes_an_unauthenticated_connection_4008(rt: Adapter) {
    let f = fixture_on(rt, &["--auth", "--auth-timeout-ms", "300"]);
    let started = Instant::now();
    let mut c = conn(&f).await;
    assert_eq!(c.expect_close().await.unwrap(), 4008);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
}

async fn max_frame_bytes_serves_a_frame_at_the_limit_and_closes_1009_one_byte_over(rt: Adapter) {
    let f = fixture_on(rt, &["--max-frame-bytes", "512"]);
    let frame = json!({"id": "1", "type": "invoke", "function": "echo", "data": ["PAD"]});
    let mut at_limit = conn(&f).await;
    at_limit
        .send_text(&pad_to(&frame, 512).unwrap())
        .await
        .unwrap();
    let reply = at_limit.next_frame().await.unwrap();
    assert_eq!(reply["id"], json!("1"));
    let mut over = conn(&f).await;
    over.send_text(&pad_to(&frame, 513).unwrap()).await.unwrap();
    assert_eq!(over.expect_close().await.unwrap(), 1009);
}

async fn max_in_flight_allows_exactly_n_calls_at_once(rt: Adapter) {
    let f = fixture_on(rt, &["--max-in-flight", "2"]);
    let mut c = conn(&f).await;
    let first = c.invoke("sleep", json!([300])).await.unwrap();
    let second = c.invoke("sleep", json!([300])).await.unwrap();
    let error = c.call_err("echo", json!([3])).await.unwrap();
    assert_eq!(code(&error), "rtm/too-many-requests");
    for id in [first, second] {
        assert_eq!(c.reply_to(&id).await.unwrap()["data"], json!(300));
    }
    assert_eq!(c.call_ok("echo", json!([4])).await.unwrap(), json!(4));
}

async fn port_0_prints_the_real_port(rt: Adapter) {
    let f = fixture_on(rt, &[]);
    assert_ne!(f.port(), 0);
    assert_eq!(f.url(), format!("ws://127.0.0.1:{}/", f.port()));
    let mut c = conn(&f).await;
    assert_eq!(c.call_ok("echo", json!([1])).await.unwrap(), json!(1));
}

async fn an_explicit_port_is_the_one_listened_on_and_printed(rt: Adapter) {
    let port = rtm_redis::testing::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let f = Fixture::spawn(FIXTURE_BIN, ["--runtime", rt.arg(), "--listen", &listen]).unwrap();
    assert_eq!(f.url(), format!("ws://127.0.0.1:{port}/"));
    let mut c = conn(&f).await;
    assert_eq!(c.call_ok("echo", json!([1])).await.unwrap(), json!(1));
}

// ----- TLS -----

async fn tls_cert_and_key_serve_wss(rt: Adapter) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "rtm-fixture-tls-{}-{}",
        std::process::id(),
        rt.arg()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let flags = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let f = fixture_on(rt, &flags);
    assert!(f.url().starts_with("wss://127.0.0.1:"), "{}", f.url());
    let trust = ClientTls::trusting_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = rtm_tokio::Client::connect(f.url(), ClientOptions::default().tls(trust))
        .await
        .unwrap();
    let echoed: Value = client
        .call_wait("echo", &(json!({"over": "tls"}),))
        .await
        .unwrap();
    assert_eq!(echoed, json!({"over": "tls"}));
    client.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_tls_files_exit_2_naming_the_file() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ];
    let exited = run_to_exit(FIXTURE_BIN, args, Duration::from_secs(10)).unwrap();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("/nonexistent/cert.pem"),
        "{exited:?}"
    );
    // One without the other is a usage error.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
    ];
    let exited = run_to_exit(FIXTURE_BIN, args, Duration::from_secs(10)).unwrap();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stderr.contains("--tls-key"), "{exited:?}");
}

/// A limit of zero would refuse every frame or every call: the command line
/// refuses it instead, naming the flag.
#[test]
fn a_zero_limit_is_a_usage_error_naming_the_flag() {
    for flag in ["--max-frame-bytes", "--max-in-flight", "--auth-timeout-ms"] {
        let args = ["--listen", "127.0.0.1:0", flag, "0"];
        let exited = run_to_exit(FIXTURE_BIN, args, Duration::from_secs(10)).unwrap();
        assert_eq!(exited.status.code(), Some(2), "{flag}: {exited:?}");
        assert!(exited.stderr.contains(flag), "{flag}: {exited:?}");
    }
}

// ----- signals -----

/// SIGTERM (a service manager's stop; Ctrl-C's SIGINT does the same) shuts
/// the fixture down gracefully: a call in flight still gets its reply, the
/// connection is closed with 1001, and the process exits with 0.
async fn sigterm_finishes_calls_in_flight_closes_1001_and_exits_0(rt: Adapter) {
    let mut f = fixture_on(rt, &[]);
    let mut c = conn(&f).await;
    let slow = c.invoke("sleep", json!([300])).await.unwrap();
    // Frames are read in order: once echo answers, the sleep is in flight.
    assert_eq!(c.call_ok("echo", json!([1])).await.unwrap(), json!(1));
    f.terminate().unwrap();
    assert_eq!(
        c.reply_to(&slow).await.unwrap(),
        json!({"id": slow, "data": 300})
    );
    assert_eq!(c.expect_close().await.unwrap(), 1001);
    let status = f.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}; stderr: {}", f.stderr());
}

#[test]
fn a_busy_port_names_the_address_and_the_flag_to_change_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exited = run_to_exit(FIXTURE_BIN, ["--listen", &addr], Duration::from_secs(10)).unwrap();
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    let line = exited.stderr.trim();
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert!(
        line.contains("already in use") && line.contains("--listen"),
        "{line}"
    );
    assert!(!line.contains("Os {"), "a debug dump: {line}");
}

#[test]
fn a_bad_listen_address_exits_2_with_the_expected_shape() {
    let exited = run_to_exit(
        FIXTURE_BIN,
        ["--listen", "nonsense"],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stderr.contains("--listen nonsense"), "{exited:?}");
    assert!(exited.stderr.contains("host:port"), "{exited:?}");
}

#[test]
fn a_bad_redis_url_says_what_is_wrong_with_it() {
    let cases = [
        ("redis://127.0.0.1:notaport/", "the port 'notaport'"),
        ("http://127.0.0.1:6379/", "unknown scheme 'http://'"),
        ("127.0.0.1:6379", "no scheme"),
    ];
    for (url, reason) in cases {
        let args = ["--auth", "--listen", "127.0.0.1:0", "--redis", url];
        let exited = run_to_exit(FIXTURE_BIN, args, Duration::from_secs(10)).unwrap();
        assert_eq!(exited.status.code(), Some(2), "{url}: {exited:?}");
        assert!(exited.stderr.contains(reason), "{url}: {}", exited.stderr);
        assert!(
            exited
                .stderr
                .starts_with("rtm-fixture: --redis: invalid Redis URL"),
            "{}",
            exited.stderr
        );
        assert!(
            !exited.stderr.contains("InvalidClientConfig"),
            "{}",
            exited.stderr
        );
    }
}

#[test]
fn an_unknown_runtime_exits_2_with_a_clear_message() {
    let args = ["--runtime", "glommio", "--listen", "127.0.0.1:0"];
    let exited = run_to_exit(FIXTURE_BIN, args, Duration::from_secs(10)).unwrap();
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert!(exited.stdout.is_empty(), "{exited:?}");
    assert!(exited.stderr.contains("invalid value"), "{exited:?}");
}

/// One `#[tokio::test]` per scenario and fixture runtime: `tokio_server::NAME`,
/// `async_std_server::NAME`, `smol_server::NAME` (the client side is always tokio).
macro_rules! on_every_runtime {
    ($($scenario:ident),* $(,)?) => {
        on_every_runtime!(@one tokio_server, Tokio, $($scenario),*);
        on_every_runtime!(@one async_std_server, AsyncStd, $($scenario),*);
        on_every_runtime!(@one smol_server, Smol, $($scenario),*);
    };
    (@one $module:ident, $runtime:ident, $($scenario:ident),*) => {
        mod $module {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(conformance::Adapter::$runtime).await
            })*
        }
    };
}

on_every_runtime!(
    echo_add_and_fail_answer_as_documented,
    big_n_returns_a_string_of_n_x,
    count_is_the_number_of_local_connections,
    broadcast_emits_alert_to_every_connection,
    emit_sends_event_and_args_to_every_connection,
    emit_to_reaches_only_that_users_connections,
    publish_with_auth_reaches_every_connection_of_the_user_once,
    publish_without_auth_is_an_error_reply,
    redis_unreachable_at_start_warns_and_publish_fails_plainly,
    push_reaches_each_matching_subscription_once,
    history_events_keep_positions_and_a_client_that_was_away_recovers,
    subscribe_to_a_private_tag_is_forbidden_and_others_are_allowed,
    panic_answers_internal_and_the_connection_and_server_keep_working,
    sleep_runs_concurrently_so_a_later_call_can_answer_first,
    whoami_is_null_without_auth,
    whoami_is_the_authentication_data_with_auth,
    auth_accepts_only_user_tokens_and_rejects_the_rest_with_bad_token,
    auth_timeout_ms_closes_an_unauthenticated_connection_4008,
    max_frame_bytes_serves_a_frame_at_the_limit_and_closes_1009_one_byte_over,
    max_in_flight_allows_exactly_n_calls_at_once,
    port_0_prints_the_real_port,
    an_explicit_port_is_the_one_listened_on_and_printed,
    sigterm_finishes_calls_in_flight_closes_1001_and_exits_0,
    tls_cert_and_key_serve_wss,
);
