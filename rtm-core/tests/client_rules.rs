//! The client core's rules, one test per rule, driven with synthetic server
//! frames and jumped time; plus a property test and a run against a real
//! [`rtm_core::ServerCore`] in memory.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use rtm_core::client::Jitter;
use rtm_core::{
    Args, CallId, Client, ClientConfig, ClientEvent, ClientOutput, ClientState, ConnMeta,
    ErrorCode, Heartbeat, Identity, Reconnect, ServerConfig, ServerCore, ServerOutput,
};
use serde_json::{json, Value};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A client, the current time, and helpers that return what each step output.
struct Harness {
    client: Client,
    now: Instant,
}

impl Harness {
    fn new(config: ClientConfig) -> Self {
        let now = Instant::now();
        let mut h = Harness {
            client: Client::new(config, now),
            now,
        };
        let first = h.drain();
        assert!(matches!(first[0], ClientOutput::Connect), "{first:?}");
        h
    }

    fn drain(&mut self) -> Vec<ClientOutput> {
        std::iter::from_fn(|| self.client.poll_output()).collect()
    }

    fn open(&mut self) -> Vec<ClientOutput> {
        self.client.handle_open(self.now);
        self.drain()
    }

    fn server(&mut self, frame: Value) -> Vec<ClientOutput> {
        self.client
            .handle_text(Bytes::from(frame.to_string()), self.now);
        self.drain()
    }

    fn lose(&mut self, code: Option<u16>) -> Vec<ClientOutput> {
        self.client.handle_close(code, "lost", self.now);
        self.drain()
    }

    fn advance(&mut self, by: Duration) -> Vec<ClientOutput> {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.drain()
    }

    /// Jumps to the next deadline.
    fn jump(&mut self) -> Vec<ClientOutput> {
        let at = self.client.poll_timeout().expect("a deadline");
        self.now = at;
        self.client.handle_timeout(at);
        self.drain()
    }

    fn call_wait(&mut self, function: &str) -> CallId {
        self.client
            .call_wait(function, Args::empty(), self.now)
            .unwrap()
    }

    /// Opens and, if configured, authenticates, answering the auth with `true`.
    fn ready(&mut self) -> Vec<ClientOutput> {
        let mut out = self.open();
        if let Some(auth) = sent(&out).iter().find(|f| f["type"] == "auth") {
            let id = auth["id"].clone();
            out.extend(self.server(json!({"id": id, "data": true})));
        }
        assert_eq!(self.client.state(), &ClientState::Open);
        out
    }
}

fn no_auth() -> ClientConfig {
    ClientConfig::default()
}

fn with_auth() -> ClientConfig {
    ClientConfig {
        auth_data: Some(json!({"token": "t"})),
        ..ClientConfig::default()
    }
}

fn sent(out: &[ClientOutput]) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            ClientOutput::Transmit(frame) => Some(serde_json::from_slice(frame).unwrap()),
            _ => None,
        })
        .collect()
}

fn done(out: &[ClientOutput]) -> Vec<(CallId, Result<Value, ErrorCode>)> {
    out.iter()
        .filter_map(|o| match o {
            ClientOutput::CallDone { call, result } => Some((
                *call,
                result
                    .as_ref()
                    .map(|raw| serde_json::from_str(raw.get()).unwrap())
                    .map_err(|e| e.code.clone()),
            )),
            _ => None,
        })
        .collect()
}

fn events(out: &[ClientOutput]) -> Vec<&ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            ClientOutput::Lifecycle(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn connects(out: &[ClientOutput]) -> usize {
    out.iter()
        .filter(|o| matches!(o, ClientOutput::Connect))
        .count()
}

fn reconnect_delays(out: &[ClientOutput]) -> Vec<(u32, Duration)> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect()
}

fn functions(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| f["type"] == "invoke")
        .map(|f| f["function"].as_str().unwrap())
        .collect()
}

#[test]
fn a_new_client_first_asks_to_connect() {
    let mut client = Client::new(no_auth(), Instant::now());
    assert!(matches!(client.poll_output(), Some(ClientOutput::Connect)));
    assert_eq!(client.state(), &ClientState::Connecting);
}

#[test]
fn request_ids_are_unique_on_a_connection() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let mut ids = HashSet::new();
    for round in 0..3 {
        let mut frames = Vec::new();
        for _ in 0..50 {
            h.client.call("f", Args::empty(), h.now).unwrap();
            h.call_wait("g");
        }
        frames.extend(sent(&h.drain()));
        h.client
            .subscribe_push("e", &[format!("t{round}")], h.now)
            .unwrap();
        frames.extend(sent(&h.drain()));
        assert_eq!(frames.len(), 101);
        for f in &frames {
            let id = f["id"].as_str().unwrap().to_owned();
            assert!(!id.is_empty() && id.len() <= 128);
            assert!(ids.insert(id), "duplicate id in {f}");
        }
        h.lose(Some(1006));
        h.jump();
        h.ready();
    }
}

#[test]
fn calls_made_while_connecting_are_sent_in_order_after_open() {
    let mut h = Harness::new(no_auth());
    h.call_wait("first");
    h.client.call("second", Args::empty(), h.now).unwrap();
    h.call_wait("third");
    assert!(sent(&h.drain()).is_empty());
    assert_eq!(h.client.queued_calls(), 3);
    let out = h.open();
    assert_eq!(functions(&sent(&out)), ["first", "second", "third"]);
    assert_eq!(h.client.queued_calls(), 0);
    assert_eq!(h.client.pending_calls(), 2);
}

#[test]
fn offline_queue_accepts_exactly_its_bound_then_fails_queue_full() {
    let mut h = Harness::new(ClientConfig {
        offline_queue: 3,
        ..no_auth()
    });
    h.call_wait("a");
    h.client.call("b", Args::empty(), h.now).unwrap();
    h.call_wait("c");
    assert_eq!(h.client.queued_calls(), 3);
    let err = h.client.call_wait("d", Args::empty(), h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::QueueFull);
    let err = h.client.call("d", Args::empty(), h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::QueueFull);
    assert_eq!(h.client.queued_calls(), 3);
    assert!(
        done(&h.drain()).is_empty(),
        "a refused call never completes"
    );
    assert_eq!(functions(&sent(&h.open())), ["a", "b", "c"]);
}

#[test]
fn auth_is_sent_on_open_and_on_every_reopen() {
    let mut h = Harness::new(with_auth());
    for _ in 0..3 {
        let out = h.open();
        let frames = sent(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["type"], "auth");
        assert_eq!(frames[0]["data"], json!([{"token": "t"}]));
        assert_eq!(h.client.state(), &ClientState::Authenticating);
        let out = h.server(json!({"id": frames[0]["id"], "data": {"user": "alice"}}));
        assert!(events(&out).iter().any(|e| matches!(e,
            ClientEvent::Authenticated(data) if data.get() == r#"{"user":"alice"}"#)));
        assert_eq!(h.client.state(), &ClientState::Open);
        h.lose(Some(1006));
        h.jump();
    }
}

#[test]
fn calls_wait_for_a_successful_auth_before_being_sent() {
    let mut h = Harness::new(with_auth());
    h.call_wait("f");
    let out = h.open();
    assert_eq!(functions(&sent(&out)), Vec::<&str>::new());
    h.call_wait("g");
    assert_eq!(h.client.queued_calls(), 2);
    let auth_id = sent(&out)[0]["id"].clone();
    let out = h.server(json!({"id": auth_id, "data": true}));
    assert_eq!(functions(&sent(&out)), ["f", "g"]);
}

#[test]
fn auth_rejected_is_terminal() {
    let mut h = Harness::new(with_auth());
    let queued = h.call_wait("f");
    let out = h.open();
    let auth_id = sent(&out)[0]["id"].clone();
    let out = h.server(json!({"id": auth_id, "data": false,
        "error": {"code": "rtm/auth-rejected", "message": "bad token"}}));
    assert!(events(&out).iter().any(|e| matches!(e,
        ClientEvent::Error(err) if err.code == ErrorCode::AuthRejected && err.message == "bad token")));
    assert_eq!(done(&out), [(queued, Err(ErrorCode::AuthRejected))]);
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Disconnect)));
    assert_eq!(h.client.state(), &ClientState::Closed);
    // The server's 4003 close that follows changes nothing: no reconnect, ever.
    let out = h.lose(Some(4003));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(connects(&h.advance(3600 * SEC)), 0);
    let err = h.client.call_wait("f", Args::empty(), h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
}

#[test]
fn a_fatal_connect_error_fails_every_call_with_it_and_never_reconnects() {
    let mut h = Harness::new(no_auth());
    let queued = h.call_wait("f");
    let bad_url = rtm_core::RtmError::new(ErrorCode::BadRequest, "not a ws:// URL");
    h.client.handle_fatal_error(bad_url);
    let out = h.drain();
    assert!(events(&out).iter().any(|e| matches!(e,
        ClientEvent::Error(err) if err.code == ErrorCode::BadRequest && err.message == "not a ws:// URL")));
    assert_eq!(done(&out), [(queued, Err(ErrorCode::BadRequest))]);
    // No socket was open: nothing to disconnect.
    assert!(!out.iter().any(|o| matches!(o, ClientOutput::Disconnect)));
    assert_eq!(h.client.state(), &ClientState::Closed);
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(connects(&h.advance(3600 * SEC)), 0);
    // Later calls fail with rtm/closed, saying why.
    let err = h.client.call_wait("f", Args::empty(), h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    assert!(err.message.contains("not a ws:// URL"), "{err}");
}

#[test]
fn a_fatal_error_on_an_open_client_closes_its_socket() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let in_flight = h.call_wait("f");
    h.client
        .handle_fatal_error(rtm_core::RtmError::new(ErrorCode::BadRequest, "bad"));
    let out = h.drain();
    assert_eq!(done(&out), [(in_flight, Err(ErrorCode::BadRequest))]);
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Disconnect)));
    assert_eq!(h.client.state(), &ClientState::Closed);
}

#[test]
fn auth_reply_with_falsy_data_is_a_rejection() {
    for data in [json!(false), json!(null), json!(0), json!("")] {
        let mut h = Harness::new(with_auth());
        let auth_id = sent(&h.open())[0]["id"].clone();
        let out = h.server(json!({"id": auth_id, "data": data}));
        assert!(events(&out).iter().any(|e| matches!(e,
            ClientEvent::Error(err) if err.code == ErrorCode::AuthRejected)));
        assert_eq!(h.client.state(), &ClientState::Closed, "{data}");
    }
}

#[test]
fn close_4003_while_authenticating_is_a_rejection() {
    let mut h = Harness::new(with_auth());
    let queued = h.call_wait("f");
    h.open();
    h.client.handle_close(Some(4003), "bad token", h.now);
    let out = h.drain();
    assert!(events(&out).iter().any(|e| matches!(e,
        ClientEvent::Error(err) if err.code == ErrorCode::AuthRejected && err.message == "bad token")));
    assert_eq!(done(&out), [(queued, Err(ErrorCode::AuthRejected))]);
    assert_eq!(h.client.state(), &ClientState::Closed);
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn push_subscriptions_are_resent_after_every_reconnect() {
    let mut h = Harness::new(with_auth());
    h.ready();
    let tags = ["b".to_owned(), "a".to_owned()];
    let sub = h.client.subscribe_push("score", &tags, h.now).unwrap();
    let frames = sent(&h.drain());
    assert_eq!(frames[0]["type"], "subscribe");
    assert_eq!(frames[0]["event"], "score");
    let out = h.server(json!({"id": frames[0]["id"], "data": true}));
    assert_eq!(done(&out), [(sub, Ok(json!(true)))]);
    for _ in 0..2 {
        h.lose(Some(1006));
        h.jump();
        let out = h.ready();
        let frames = sent(&out);
        // auth first, then the subscription, before anything else.
        assert_eq!(frames[0]["type"], "auth");
        assert_eq!(frames[1]["type"], "subscribe");
        assert_eq!(frames[1]["event"], "score");
        assert_eq!(frames[1]["tags"], json!(["a", "b"]));
        // Its ack is internal: no CallDone.
        let out = h.server(json!({"id": frames[1]["id"], "data": true}));
        assert!(out.is_empty(), "{out:?}");
    }
    h.client.unsubscribe_push("score", &tags, h.now).unwrap();
    let frames = sent(&h.drain());
    assert_eq!(frames[0]["type"], "unsubscribe");
    h.lose(Some(1006));
    h.jump();
    let frames = sent(&h.ready());
    assert!(
        frames.iter().all(|f| f["type"] != "subscribe"),
        "{frames:?}"
    );
}

#[test]
fn subscribing_offline_is_sent_after_open_and_acked_by_its_reply() {
    let mut h = Harness::new(no_auth());
    let sub = h
        .client
        .subscribe_push("score", &["m7".to_owned()], h.now)
        .unwrap();
    assert!(done(&h.drain()).is_empty());
    let frames = sent(&h.open());
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "subscribe");
    assert_eq!(h.client.pending_calls(), 1);
    let out = h.server(json!({"id": frames[0]["id"], "data": true}));
    assert_eq!(done(&out), [(sub, Ok(json!(true)))]);
}

#[test]
fn a_subscribe_in_flight_when_the_connection_drops_is_acked_after_reconnect() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let sub = h
        .client
        .subscribe_push("score", &["m7".to_owned()], h.now)
        .unwrap();
    h.drain();
    let out = h.lose(Some(1006));
    assert!(done(&out).is_empty(), "subscribes are re-sent, not failed");
    h.jump();
    let frames = sent(&h.ready());
    let out = h.server(json!({"id": frames[0]["id"], "data": true}));
    assert_eq!(done(&out), [(sub, Ok(json!(true)))]);
}

#[test]
fn a_denied_subscription_fails_its_call_and_is_not_resent() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let sub = h
        .client
        .subscribe_push("secret", &["x".to_owned()], h.now)
        .unwrap();
    let frames = sent(&h.drain());
    let out = h.server(json!({"id": frames[0]["id"],
        "data": {"error": {"code": "rtm/forbidden", "message": "no"}}}));
    assert_eq!(done(&out), [(sub, Err(ErrorCode::Forbidden))]);
    assert_eq!(h.client.subscriptions(), 0);
    h.lose(None);
    h.jump();
    assert!(sent(&h.ready()).is_empty());
}

#[test]
fn unsubscribing_while_offline_completes_at_once() {
    let mut h = Harness::new(no_auth());
    let sub = h
        .client
        .subscribe_push("score", &["m7".to_owned()], h.now)
        .unwrap();
    let unsub = h
        .client
        .unsubscribe_push("score", &["m7".to_owned()], h.now)
        .unwrap();
    let out = h.drain();
    assert_eq!(
        done(&out),
        [(sub, Ok(json!(true))), (unsub, Ok(json!(true)))]
    );
    assert!(sent(&h.open()).is_empty());
}

#[test]
fn in_flight_calls_fail_disconnected_and_are_not_resent() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let a = h.call_wait("a");
    let b = h.call_wait("b");
    h.drain();
    assert_eq!(h.client.pending_calls(), 2);
    let out = h.lose(Some(1006));
    assert_eq!(
        done(&out),
        [
            (a, Err(ErrorCode::Disconnected)),
            (b, Err(ErrorCode::Disconnected))
        ]
    );
    assert_eq!(h.client.pending_calls(), 0);
    h.jump();
    assert!(sent(&h.ready()).is_empty(), "invokes are not re-sent");
}

#[test]
fn a_call_times_out_after_the_call_timeout() {
    let mut h = Harness::new(ClientConfig {
        call_timeout: Some(5 * SEC),
        ..no_auth()
    });
    h.ready();
    let call = h.call_wait("slow");
    let id = sent(&h.drain())[0]["id"].clone();
    assert_eq!(h.client.poll_timeout(), Some(h.now + 5 * SEC));
    assert!(done(&h.advance(5 * SEC - MS)).is_empty());
    assert_eq!(done(&h.advance(MS)), [(call, Err(ErrorCode::Timeout))]);
    assert_eq!(h.client.pending_calls(), 0);
    // The late reply is ignored.
    assert!(h.server(json!({"id": id, "data": 1})).is_empty());
}

#[test]
fn a_queued_call_times_out_and_leaves_the_queue() {
    let mut h = Harness::new(ClientConfig {
        call_timeout: Some(5 * SEC),
        ..no_auth()
    });
    let early = h.call_wait("early");
    h.advance(2 * SEC);
    let late = h.call_wait("late");
    assert_eq!(
        done(&h.advance(3 * SEC)),
        [(early, Err(ErrorCode::Timeout))]
    );
    assert_eq!(h.client.queued_calls(), 1);
    assert_eq!(functions(&sent(&h.open())), ["late"]);
    assert_eq!(done(&h.advance(2 * SEC)), [(late, Err(ErrorCode::Timeout))]);
}

#[test]
fn calls_never_time_out_without_a_call_timeout() {
    let mut h = Harness::new(ClientConfig {
        call_timeout: None,
        heartbeat: None,
        ..no_auth()
    });
    h.ready();
    h.call_wait("f");
    h.drain();
    assert_eq!(h.client.poll_timeout(), None);
    assert!(h.advance(3600 * SEC).is_empty());
}

// ----- heartbeat: the server's liveness -----

fn heartbeat(interval: u32, timeout: u32) -> ClientConfig {
    ClientConfig {
        heartbeat: Some(Heartbeat {
            interval: interval * SEC,
            timeout: timeout * SEC,
        }),
        call_timeout: None,
        ..no_auth()
    }
}

fn pings(out: &[ClientOutput]) -> usize {
    out.iter()
        .filter(|o| matches!(o, ClientOutput::Ping))
        .count()
}

#[test]
fn a_quiet_server_is_pinged_once_per_heartbeat_interval_of_silence() {
    let mut h = Harness::new(heartbeat(25, 60));
    h.ready();
    assert_eq!(h.client.poll_timeout(), Some(h.now + 25 * SEC));
    assert_eq!(pings(&h.advance(24 * SEC)), 0);
    assert_eq!(pings(&h.advance(SEC)), 1);
    // The next ping waits for another interval.
    assert_eq!(pings(&h.advance(24 * SEC)), 0);
    assert_eq!(pings(&h.advance(SEC)), 1);
}

#[test]
fn any_frame_ping_or_pong_from_the_server_is_a_sign_of_life() {
    let mut h = Harness::new(heartbeat(25, 60));
    h.ready();
    h.advance(20 * SEC);
    h.client.handle_activity(h.now);
    assert_eq!(pings(&h.advance(20 * SEC)), 0, "heard from 20 s ago");
    h.server(json!({"event": "tick", "data": []}));
    assert_eq!(pings(&h.advance(24 * SEC)), 0, "an event 24 s ago");
    assert_eq!(pings(&h.advance(SEC)), 1);
    // Answered: the deadline moves on; no drop at 60 s from the first silence.
    h.client.handle_activity(h.now);
    let out = h.advance(50 * SEC);
    assert!(
        !out.iter().any(|o| matches!(o, ClientOutput::Disconnect)),
        "{out:?}"
    );
    assert_eq!(h.client.state(), &ClientState::Open);
}

#[test]
fn a_server_silent_past_the_heartbeat_timeout_is_dropped_and_reconnected() {
    let mut h = Harness::new(ClientConfig {
        call_timeout: Some(3600 * SEC),
        ..heartbeat(25, 60)
    });
    h.ready();
    let in_flight = h.call_wait("f");
    h.drain();
    h.advance(59 * SEC);
    assert_eq!(h.client.state(), &ClientState::Open);
    let out = h.advance(SEC);
    assert!(
        out.iter().any(|o| matches!(o, ClientOutput::Disconnect)),
        "{out:?}"
    );
    assert_eq!(done(&out), [(in_flight, Err(ErrorCode::Disconnected))]);
    assert!(events(&out).iter().any(|e| matches!(e,
        ClientEvent::Closed { reason, .. } if reason.contains("nothing from the server"))));
    assert!(matches!(
        h.client.state(),
        ClientState::WaitingToReconnect { .. }
    ));
    assert_eq!(connects(&h.jump()), 1);
}

#[test]
fn no_heartbeat_while_no_socket_is_open_or_when_disabled() {
    let h = Harness::new(heartbeat(25, 60));
    // Connecting: no socket yet, nothing to ping.
    assert_eq!(h.client.poll_timeout(), None);
    let mut h = Harness::new(ClientConfig {
        heartbeat: None,
        ..heartbeat(25, 60)
    });
    h.ready();
    assert_eq!(h.client.poll_timeout(), None);
    assert!(h.advance(3600 * SEC).is_empty());
}

#[test]
fn fixed_delay_reconnect_schedule() {
    let mut h = Harness::new(ClientConfig {
        reconnect: Reconnect::Fixed(SEC),
        ..no_auth()
    });
    h.ready();
    let out = h.lose(Some(1006));
    assert_eq!(reconnect_delays(&out), [(1, SEC)]);
    assert_eq!(
        h.client.state(),
        &ClientState::WaitingToReconnect { attempt: 1 }
    );
    assert_eq!(h.client.poll_timeout(), Some(h.now + SEC));
    assert_eq!(connects(&h.advance(SEC - MS)), 0);
    assert_eq!(connects(&h.advance(MS)), 1);
    assert_eq!(h.client.state(), &ClientState::Connecting);
    // A failed connect attempt waits the same delay again.
    assert_eq!(reconnect_delays(&h.lose(None)), [(2, SEC)]);
    assert_eq!(connects(&h.jump()), 1);
    // A successful open resets the attempt count.
    h.ready();
    assert_eq!(reconnect_delays(&h.lose(Some(1001))), [(1, SEC)]);
}

#[test]
fn backoff_doubles_up_to_its_cap_and_resets_after_open() {
    let mut h = Harness::new(ClientConfig {
        reconnect: Reconnect::Backoff {
            initial: SEC,
            max: 8 * SEC,
            factor: 2,
            jitter: Jitter::None,
        },
        ..with_auth()
    });
    h.ready();
    let mut delays = Vec::new();
    delays.extend(reconnect_delays(&h.lose(Some(1006))));
    for _ in 0..5 {
        assert_eq!(connects(&h.jump()), 1);
        delays.extend(reconnect_delays(&h.lose(None)));
    }
    let secs: Vec<_> = delays.iter().map(|(a, d)| (*a, d.as_secs())).collect();
    assert_eq!(secs, [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (6, 8)]);
    h.jump();
    // An open without auth success does not reset it...
    h.open();
    assert_eq!(reconnect_delays(&h.lose(Some(4008))), [(7, 8 * SEC)]);
    // ... an authenticated one does.
    h.jump();
    h.ready();
    assert_eq!(reconnect_delays(&h.lose(Some(1006))), [(1, SEC)]);
}

#[test]
fn backoff_jitter_stays_within_bounds_and_is_deterministic_by_seed() {
    let schedule = |seed: u64, jitter: Jitter| {
        let mut h = Harness::new(ClientConfig {
            reconnect: Reconnect::Backoff {
                initial: SEC,
                max: 8 * SEC,
                factor: 2,
                jitter,
            },
            jitter_seed: seed,
            ..no_auth()
        });
        h.ready();
        let mut delays = reconnect_delays(&h.lose(None));
        for _ in 0..19 {
            h.jump();
            delays.extend(reconnect_delays(&h.lose(None)));
        }
        delays
    };
    for jitter in [Jitter::Full, Jitter::Equal] {
        let delays = schedule(42, jitter);
        assert_eq!(delays, schedule(42, jitter), "same seed, same schedule");
        assert_ne!(
            delays,
            schedule(43, jitter),
            "another seed, another schedule"
        );
        for (attempt, delay) in delays {
            let base = (SEC * 2u32.pow(attempt.min(4) - 1)).min(8 * SEC);
            assert!(delay <= base, "attempt {attempt}: {delay:?} > {base:?}");
            if jitter == Jitter::Equal {
                assert!(delay >= base / 2, "attempt {attempt}: {delay:?} < half");
            }
        }
    }
}

#[test]
fn reconnect_never_closes_the_client_and_fails_queued_calls() {
    let mut h = Harness::new(ClientConfig {
        reconnect: Reconnect::Never,
        ..no_auth()
    });
    let queued = h.call_wait("f");
    let out = h.lose(None);
    assert_eq!(done(&out), [(queued, Err(ErrorCode::Disconnected))]);
    assert_eq!(h.client.state(), &ClientState::Closed);
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn the_client_gives_up_after_max_reconnect_attempts() {
    let mut h = Harness::new(ClientConfig {
        max_reconnect_attempts: Some(2),
        ..no_auth()
    });
    h.ready();
    h.lose(None);
    h.jump();
    h.lose(None);
    h.jump();
    let queued = h.call_wait("f");
    let out = h.lose(None);
    assert_eq!(done(&out), [(queued, Err(ErrorCode::Disconnected))]);
    assert_eq!(h.client.state(), &ClientState::Closed);
}

#[test]
fn close_fails_everything_with_closed_and_stops_reconnecting() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let pending = h.call_wait("pending");
    h.drain();
    h.client.close(h.now);
    let out = h.drain();
    assert_eq!(done(&out), [(pending, Err(ErrorCode::Closed))]);
    assert!(out.iter().any(|o| matches!(o, ClientOutput::Disconnect)));

    let mut h = Harness::new(no_auth());
    let queued = h.call_wait("queued");
    let sub = h
        .client
        .subscribe_push("e", &["t".to_owned()], h.now)
        .unwrap();
    h.client.close(h.now);
    let out = h.drain();
    assert_eq!(
        done(&out),
        [
            (queued, Err(ErrorCode::Closed)),
            (sub, Err(ErrorCode::Closed))
        ]
    );
    assert_eq!(h.client.state(), &ClientState::Closed);
    assert_eq!(h.client.queued_calls(), 0);
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(
        h.client.call("f", Args::empty(), h.now).unwrap_err().code,
        ErrorCode::Closed
    );
    let err = h.client.subscribe_push("e", &[], h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    // A late open or close from the adapter changes nothing.
    h.client.handle_open(h.now);
    h.client.handle_close(Some(1000), "", h.now);
    assert!(h.drain().is_empty());
    assert_eq!(connects(&h.advance(3600 * SEC)), 0);
}

#[test]
fn close_while_waiting_to_reconnect_stops_the_schedule() {
    let mut h = Harness::new(no_auth());
    h.ready();
    h.lose(Some(1006));
    h.client.close(h.now);
    let out = h.drain();
    assert!(
        !out.iter().any(|o| matches!(o, ClientOutput::Disconnect)),
        "no socket to close"
    );
    assert_eq!(h.client.poll_timeout(), None);
    assert_eq!(connects(&h.advance(10 * SEC)), 0);
}

#[test]
fn a_fire_and_forget_reply_is_ignored() {
    let mut h = Harness::new(no_auth());
    h.ready();
    h.client
        .call("log", Args::encode(&("hi",)).unwrap(), h.now)
        .unwrap();
    let frames = sent(&h.drain());
    assert_eq!(frames[0]["function"], "log");
    assert_eq!(frames[0]["data"], json!(["hi"]));
    assert_eq!(h.client.pending_calls(), 0);
    assert!(h
        .server(json!({"id": frames[0]["id"], "data": 1}))
        .is_empty());
}

#[test]
fn a_reply_completes_its_call_and_an_error_reply_fails_it() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let ok = h.call_wait("add");
    let bad = h.call_wait("helo");
    let frames = sent(&h.drain());
    let out = h.server(json!({"id": frames[1]["id"],
        "data": {"error": {"code": "rtm/function-not-found", "message": "no function named 'helo'"}}}));
    assert_eq!(done(&out), [(bad, Err(ErrorCode::FunctionNotFound))]);
    let out = h.server(json!({"id": frames[0]["id"], "data": 3}));
    assert_eq!(done(&out), [(ok, Ok(json!(3)))]);
}

#[test]
fn unknown_reply_ids_are_ignored() {
    let mut h = Harness::new(no_auth());
    h.ready();
    assert!(h.server(json!({"id": "nope", "data": 1})).is_empty());
}

#[test]
fn events_are_handed_to_the_adapter() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let out = h.server(json!({"event": "alert", "data": ["Hello from server!"]}));
    match &out[..] {
        [ClientOutput::Event { event, args }] => {
            assert_eq!(event, "alert");
            assert_eq!(args.as_str(), r#"["Hello from server!"]"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_server_frames_are_reported_and_otherwise_ignored() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let call = h.call_wait("f");
    h.drain();
    for frame in [
        &b"not json"[..],
        b"[1]",
        b"{}",
        br#"{"event":"e","data":5}"#,
    ] {
        h.client.handle_text(Bytes::copy_from_slice(frame), h.now);
        let out = h.drain();
        assert!(
            matches!(&out[..], [ClientOutput::Lifecycle(ClientEvent::Error(_))]),
            "{out:?}"
        );
    }
    assert_eq!(h.client.state(), &ClientState::Open);
    assert_eq!(h.client.pending_calls(), 1);
    let _ = call;
}

proptest! {
    #[test]
    fn arbitrary_server_frames_never_panic(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        json_ids in proptest::collection::vec(0u64..8, 0..8),
        auth in any::<bool>(),
    ) {
        let mut h = Harness::new(if auth { with_auth() } else { no_auth() });
        h.call_wait("f");
        h.client.subscribe_push("e", &["t".to_owned()], h.now).unwrap();
        h.open();
        for bytes in frames {
            h.client.handle_text(Bytes::from(bytes), h.now);
            h.drain();
        }
        // Plausible frames too: replies to ids that may or may not exist.
        for id in json_ids {
            h.server(json!({"id": id.to_string(), "data": {"error": 5}}));
            h.server(json!({"id": id.to_string(), "error": {}}));
        }
        h.advance(60 * SEC);
        h.client.handle_close(Some(1006), "", h.now);
        h.drain();
    }
}

/// Runs a real server core and a client core against each other in memory.
#[test]
fn client_and_server_cores_interoperate() {
    let mut now = Instant::now();
    let mut server = ServerCore::new(ServerConfig {
        auth_timeout: Some(10 * SEC),
        ..ServerConfig::new("s1")
    });
    let add = server.register_function("add");
    let mut client = Client::new(
        ClientConfig {
            auth_data: Some(json!("alice-token")),
            ..ClientConfig::default()
        },
        now,
    );
    let early = client
        .call_wait("add", Args::encode(&(1, 2)).unwrap(), now)
        .unwrap();
    client
        .subscribe_push("score", &["m7".to_owned()], now)
        .unwrap();
    let missing = client.call_wait("nope", Args::empty(), now).unwrap();

    let mut conn = None;
    let mut results = Vec::new();
    let mut events = Vec::new();
    let mut authenticated = None;
    let mut pushed = false;
    for _round in 0..20 {
        let mut progress = false;
        while let Some(out) = client.poll_output() {
            progress = true;
            match out {
                ClientOutput::Connect => {
                    conn = Some(server.handle_open(ConnMeta::default(), now).unwrap());
                    client.handle_open(now);
                }
                ClientOutput::Transmit(frame) => {
                    server.handle_text(conn.unwrap(), frame, now);
                }
                ClientOutput::CallDone { call, result } => results.push((
                    call,
                    result.map(|raw| raw.get().to_owned()).map_err(|e| e.code),
                )),
                ClientOutput::Event { event, args } => {
                    events.push((event, args.as_str().to_owned()))
                }
                ClientOutput::Lifecycle(ClientEvent::Authenticated(data)) => {
                    authenticated = Some(data.get().to_owned());
                }
                ClientOutput::Lifecycle(_) => {}
                ClientOutput::Disconnect => panic!("unexpected disconnect"),
                ClientOutput::Ping => panic!("unexpected ping: no time passes here"),
            }
        }
        while let Some(out) = server.poll_output() {
            progress = true;
            match out {
                ServerOutput::Transmit { frame, .. } => client.handle_text(frame, now),
                ServerOutput::Authenticate { ticket, data, .. } => {
                    let (token,): (String,) = data.deserialize().unwrap();
                    assert_eq!(token, "alice-token");
                    server.handle_auth_result(
                        ticket,
                        Ok(Identity::new("alice", json!({"name": "Alice"}))),
                    );
                }
                ServerOutput::Invoke {
                    ticket,
                    function,
                    args,
                    ..
                } => {
                    assert_eq!(function, add);
                    let (a, b): (i64, i64) = args.deserialize().unwrap();
                    server.handle_call_result(ticket, Ok(&(a + b)));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if !progress {
            if pushed {
                break;
            }
            // Once subscribed, a push reaches the client.
            let sent = server
                .push("score", &["m7".to_owned()], &Args::encode(&(3, 1)).unwrap())
                .unwrap();
            assert_eq!(sent, 1);
            pushed = true;
        }
        now += MS;
    }
    assert_eq!(authenticated.as_deref(), Some(r#"{"name":"Alice"}"#));
    assert_eq!(client.state(), &ClientState::Open);
    assert!(
        results.contains(&(early, Ok("3".to_owned()))),
        "{results:?}"
    );
    assert!(
        results.contains(&(missing, Err(ErrorCode::FunctionNotFound))),
        "{results:?}"
    );
    assert_eq!(
        results.len(),
        3,
        "add, nope and the subscribe ack: {results:?}"
    );
    assert_eq!(events, [("score".to_owned(), "[3,1]".to_owned())]);

    // A call once open goes straight to the server.
    let late = client
        .call_wait("add", Args::encode(&(20, 22)).unwrap(), now)
        .unwrap();
    let Some(ClientOutput::Transmit(frame)) = client.poll_output() else {
        panic!()
    };
    server.handle_text(conn.unwrap(), frame, now);
    let Some(ServerOutput::Invoke { ticket, args, .. }) = server.poll_output() else {
        panic!()
    };
    let (a, b): (i64, i64) = args.deserialize().unwrap();
    server.handle_call_result(ticket, Ok(&(a + b)));
    let Some(ServerOutput::Transmit { frame, .. }) = server.poll_output() else {
        panic!()
    };
    client.handle_text(frame, now);
    let Some(ClientOutput::CallDone { call, result }) = client.poll_output() else {
        panic!()
    };
    assert_eq!(call, late);
    assert_eq!(result.unwrap().get(), "42");
}

// ----- positions in streams (ext) -----

/// Subscribes to `score [m1]` while open; returns the subscribe sent.
fn subscribe_m1(h: &mut Harness) -> Value {
    h.client
        .subscribe_push("score", &["m1".to_owned()], h.now)
        .unwrap();
    sent(&h.drain()).remove(0)
}

fn positioned(n: u64, offset: u64, epoch: &str) -> Value {
    json!({"event": "score", "data": [n], "tag": "m1", "offset": offset, "epoch": epoch})
}

fn delivered(out: &[ClientOutput]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            ClientOutput::Event { args, .. } => Some(args.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_subscribe_asks_for_positions_and_after_a_reconnect_sends_the_last_one_it_had() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let first = subscribe_m1(&mut h);
    assert_eq!(first["since"], json!({"m1": null}));
    h.server(
        json!({"id": first["id"], "data": true, "streams": {"m1": {"offset": 4, "epoch": "e1"}}}),
    );
    assert_eq!(delivered(&h.server(positioned(5, 5, "e1"))), vec!["[5]"]);
    assert_eq!(delivered(&h.server(positioned(6, 6, "e1"))), vec!["[6]"]);
    h.lose(Some(1006));
    h.jump();
    let out = h.open();
    let again = sent(&out).remove(0);
    assert_eq!(again["type"], "subscribe");
    assert_eq!(again["since"], json!({"m1": {"offset": 6, "epoch": "e1"}}));
}

#[test]
fn an_event_at_or_below_the_position_is_dropped() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let sub = subscribe_m1(&mut h);
    h.server(
        json!({"id": sub["id"], "data": true, "streams": {"m1": {"offset": 4, "epoch": "e1"}}}),
    );
    assert!(delivered(&h.server(positioned(4, 4, "e1"))).is_empty());
    assert!(delivered(&h.server(positioned(3, 3, "e1"))).is_empty());
    assert_eq!(delivered(&h.server(positioned(5, 5, "e1"))), vec!["[5]"]);
}

#[test]
fn a_jump_in_offsets_makes_the_client_subscribe_again_from_its_position_and_take_the_recovery() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let sub = subscribe_m1(&mut h);
    h.server(
        json!({"id": sub["id"], "data": true, "streams": {"m1": {"offset": 4, "epoch": "e1"}}}),
    );
    // 5 was lost on the way.
    let out = h.server(positioned(6, 6, "e1"));
    assert!(delivered(&out).is_empty());
    let resync = sent(&out).remove(0);
    assert_eq!(resync["type"], "subscribe");
    assert_eq!(resync["since"], json!({"m1": {"offset": 4, "epoch": "e1"}}));
    // Live ones past the hole meanwhile: the recovery brings them.
    assert!(delivered(&h.server(positioned(7, 7, "e1"))).is_empty());
    let mut got = Vec::new();
    for n in 5..=7 {
        got.extend(delivered(&h.server(positioned(n, n, "e1"))));
    }
    let out = h.server(json!({"id": resync["id"], "data": true, "streams": {"m1": {"offset": 7, "epoch": "e1", "recovered": true}}}));
    assert!(events(&out).is_empty(), "{out:?}");
    got.extend(delivered(&h.server(positioned(8, 8, "e1"))));
    assert_eq!(got, vec!["[5]", "[6]", "[7]", "[8]"]);
}

#[test]
fn a_stream_that_could_not_be_recovered_is_told_to_the_application() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let sub = subscribe_m1(&mut h);
    let out = h.server(json!({"id": sub["id"], "data": true, "streams": {"m1": {"offset": 9, "epoch": "e2", "recovered": false, "reason": "epoch-changed"}}}));
    let told: Vec<_> = events(&out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Resync { event, tag, reason } => {
                Some((event.clone(), tag.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        vec![("score".into(), "m1".into(), "epoch-changed".into())]
    );
    assert_eq!(delivered(&h.server(positioned(10, 10, "e2"))), vec!["[10]"]);
}

#[test]
fn a_push_to_two_tracked_tags_is_handed_to_the_application_once() {
    let mut h = Harness::new(no_auth());
    h.ready();
    h.client
        .subscribe_push("score", &["m1".to_owned(), "m2".to_owned()], h.now)
        .unwrap();
    let sub = sent(&h.drain()).remove(0);
    assert_eq!(sub["since"], json!({"m1": null, "m2": null}));
    h.server(json!({"id": sub["id"], "data": true, "streams": {"m1": {"offset": 0, "epoch": "a"}, "m2": {"offset": 0, "epoch": "b"}}}));
    let one = json!({"event": "score", "data": [1], "push": "s1:9", "tag": "m1", "offset": 1, "epoch": "a"});
    let two = json!({"event": "score", "data": [1], "push": "s1:9", "tag": "m2", "offset": 1, "epoch": "b"});
    assert_eq!(delivered(&h.server(one)), vec!["[1]"]);
    assert!(delivered(&h.server(two)).is_empty());
    // Both positions moved: a reconnect asks for neither again.
    h.lose(Some(1006));
    h.jump();
    let again = sent(&h.open()).remove(0);
    assert_eq!(
        again["since"],
        json!({"m1": {"offset": 1, "epoch": "a"}, "m2": {"offset": 1, "epoch": "b"}})
    );
}

#[test]
fn a_subscribe_refused_for_a_while_is_sent_again_after_a_backoff_and_a_denied_one_is_not() {
    let mut h = Harness::new(no_auth());
    h.ready();
    let call = h
        .client
        .subscribe_push("score", &["m1".to_owned()], h.now)
        .unwrap();
    let sub = sent(&h.drain()).remove(0);
    let out = h.server(json!({"id": sub["id"], "data": {"error": {"code": "rtm/broker-unavailable", "message": "down"}}}));
    assert_eq!(done(&out), vec![(call, Err(ErrorCode::BrokerUnavailable))]);
    let retry = events(&out)
        .into_iter()
        .find_map(|e| match e {
            ClientEvent::SubscribeRetry { attempt, delay, .. } => Some((*attempt, *delay)),
            _ => None,
        })
        .expect("a retry");
    assert_eq!(retry, (1, SEC), "the reconnect schedule's first delay");
    assert!(sent(&h.advance(retry.1 - MS)).is_empty());
    let again = sent(&h.advance(MS)).remove(0);
    assert_eq!(again["type"], "subscribe");
    assert_eq!(again["tags"], json!(["m1"]));
    // Denied for good this time: not sent again.
    let out = h.server(
        json!({"id": again["id"], "data": {"error": {"code": "rtm/forbidden", "message": "no"}}}),
    );
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, ClientEvent::Error(err) if err.code == ErrorCode::Forbidden)));
    assert_eq!(h.client.subscriptions(), 0);
    assert!(sent(&h.advance(10 * SEC)).is_empty());
}

#[test]
fn without_tracking_a_subscribe_carries_no_since_and_events_pass_as_they_come() {
    let mut h = Harness::new(ClientConfig {
        track_positions: false,
        ..no_auth()
    });
    h.ready();
    let sub = subscribe_m1(&mut h);
    assert!(sub.get("since").is_none(), "{sub}");
    assert_eq!(delivered(&h.server(positioned(3, 3, "e1"))), vec!["[3]"]);
    assert_eq!(delivered(&h.server(positioned(3, 3, "e1"))), vec!["[3]"]);
}

#[test]
fn the_auth_asks_for_the_users_stream_and_a_reconnect_sends_the_last_position_it_had() {
    let mut h = Harness::new(with_auth());
    let out = h.open();
    let auth = sent(&out).remove(0);
    assert_eq!(auth["since"], json!({"user": null}));
    h.server(
        json!({"id": auth["id"], "data": true, "streams": {"user": {"offset": 2, "epoch": "u1"}}}),
    );
    let dm =
        |n: u64, offset: u64| json!({"event": "dm", "data": [n], "offset": offset, "epoch": "u1"});
    assert_eq!(delivered(&h.server(dm(3, 3))), vec!["[3]"]);
    assert!(delivered(&h.server(dm(3, 3))).is_empty(), "seen: dropped");
    h.lose(Some(1006));
    h.jump();
    let again = sent(&h.open()).remove(0);
    assert_eq!(
        again["since"],
        json!({"user": {"offset": 3, "epoch": "u1"}})
    );
}

#[test]
fn a_jump_in_the_users_stream_makes_the_client_reconnect_to_recover_it() {
    let mut h = Harness::new(with_auth());
    let out = h.open();
    let auth = sent(&out).remove(0);
    h.server(
        json!({"id": auth["id"], "data": true, "streams": {"user": {"offset": 2, "epoch": "u1"}}}),
    );
    let out = h.server(json!({"event": "dm", "data": [5], "offset": 5, "epoch": "u1"}));
    assert!(delivered(&out).is_empty());
    assert!(
        out.iter().any(|o| matches!(o, ClientOutput::Disconnect)),
        "{out:?}"
    );
    assert!(matches!(
        h.client.state(),
        ClientState::WaitingToReconnect { .. }
    ));
    h.jump();
    let again = sent(&h.open()).remove(0);
    assert_eq!(
        again["since"],
        json!({"user": {"offset": 2, "epoch": "u1"}})
    );
    // The recovery before the auth reply, then the reply.
    let mut got = Vec::new();
    for n in 3..=5 {
        got.extend(delivered(&h.server(
            json!({"event": "dm", "data": [n], "offset": n, "epoch": "u1"}),
        )));
    }
    h.server(json!({"id": again["id"], "data": true, "streams": {"user": {"offset": 5, "epoch": "u1", "recovered": true}}}));
    assert_eq!(got, vec!["[3]", "[4]", "[5]"]);
}
