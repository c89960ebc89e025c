//! A call the connection answers itself (it never reaches a function) is
//! said after its reply, as `ConnOutput::CallRefused`, so a driver can
//! count it; the reply is the same as without it. Every subscribe's answer
//! is said likewise, as `ConnOutput::SubscribeAnswered`.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtm_core::connection::{ConnOutput, Connection};
use rtm_core::{ConnId, ConnMeta, ErrorCode, FunctionId, Functions, Limits, ServerConfig};
use std::time::Duration;

fn connection(auth: bool, max_in_flight: usize) -> (Connection, FunctionId, Instant) {
    let mut functions = Functions::default();
    let echo = functions.register("echo");
    let mut config = ServerConfig::new("s1");
    config.limits = Limits {
        max_in_flight,
        ..Limits::default()
    };
    if auth {
        config.auth_timeout = Some(Duration::from_secs(10));
    }
    let now = Instant::now();
    let conn = Connection::new(
        ConnId::from_u64(1),
        ConnMeta::default(),
        Arc::new(config),
        Arc::new(functions),
        now,
    );
    (conn, echo, now)
}

fn invoke(conn: &mut Connection, id: &str, function: &str, now: Instant) {
    let frame = format!(r#"{{"id":"{id}","type":"invoke","function":"{function}","data":[]}}"#);
    conn.handle_text(Bytes::from(frame), now);
}

/// The error code of the reply, then what the connection said of it.
fn refusal(conn: &mut Connection) -> (String, Option<(Option<FunctionId>, ErrorCode)>) {
    let Some(ConnOutput::Transmit(frame)) = conn.poll_output() else {
        panic!("no reply first")
    };
    let reply: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    let code = reply["data"]["error"]["code"].as_str().unwrap().to_owned();
    let said = match conn.poll_output() {
        Some(ConnOutput::CallRefused { function, code }) => Some((function, code)),
        Some(other) => panic!("{other:?}"),
        None => None,
    };
    (code, said)
}

fn refused(
    function: Option<FunctionId>,
    code: ErrorCode,
) -> Option<(Option<FunctionId>, ErrorCode)> {
    Some((function, code))
}

#[test]
fn an_unknown_function_is_refused_with_no_function() {
    let (mut conn, _, now) = connection(false, 8);
    invoke(&mut conn, "1", "helo", now);
    let (code, said) = refusal(&mut conn);
    assert_eq!(code, "rtm/function-not-found");
    assert_eq!(said, refused(None, ErrorCode::FunctionNotFound));
}

#[test]
fn a_call_before_auth_is_refused_naming_the_function_when_registered() {
    let (mut conn, echo, now) = connection(true, 8);
    invoke(&mut conn, "1", "echo", now);
    assert_eq!(
        refusal(&mut conn).1,
        refused(Some(echo), ErrorCode::Unauthenticated)
    );
    invoke(&mut conn, "2", "helo", now);
    assert_eq!(
        refusal(&mut conn).1,
        refused(None, ErrorCode::Unauthenticated)
    );
}

#[test]
fn a_call_past_max_in_flight_is_refused_as_too_many() {
    let (mut conn, echo, now) = connection(false, 1);
    invoke(&mut conn, "1", "echo", now);
    assert!(matches!(
        conn.poll_output(),
        Some(ConnOutput::Invoke { .. })
    ));
    invoke(&mut conn, "2", "echo", now);
    let (code, said) = refusal(&mut conn);
    assert_eq!(code, "rtm/too-many-requests");
    assert_eq!(said, refused(Some(echo), ErrorCode::TooManyRequests));
    // A second request under an id still in flight: a bad request.
    invoke(&mut conn, "1", "echo", now);
    assert_eq!(
        refusal(&mut conn).1,
        refused(Some(echo), ErrorCode::BadRequest)
    );
}

#[test]
fn a_call_that_runs_says_nothing_more() {
    let (mut conn, _, now) = connection(false, 8);
    invoke(&mut conn, "1", "echo", now);
    assert!(matches!(
        conn.poll_output(),
        Some(ConnOutput::Invoke { .. })
    ));
    assert!(conn.poll_output().is_none());
}

// ----- subscribes -----

fn subscribe(conn: &mut Connection, id: &str, event: &str, now: Instant) {
    let frame = format!(r#"{{"id":"{id}","type":"subscribe","event":"{event}","tags":["t"]}}"#);
    conn.handle_text(Bytes::from(frame), now);
}

/// The reply's `data` (as JSON), then what the connection said of the answer.
fn subscribe_answer(conn: &mut Connection) -> (serde_json::Value, Result<(), ErrorCode>) {
    let Some(ConnOutput::Transmit(frame)) = conn.poll_output() else {
        panic!("no reply first")
    };
    let reply: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    match conn.poll_output() {
        Some(ConnOutput::SubscribeAnswered { result }) => (reply["data"].clone(), result),
        other => panic!("{other:?}"),
    }
}

/// The ticket the connection hands out for the router.
fn ticket(conn: &mut Connection) -> rtm_core::connection::SubscribeTicket {
    match conn.poll_output() {
        Some(ConnOutput::Subscribe { ticket }) => ticket,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_subscribe_answer_is_said_after_its_reply_with_its_result() {
    let (mut conn, _, now) = connection(true, 1);
    // Before authentication.
    subscribe(&mut conn, "1", "score", now);
    let (data, result) = subscribe_answer(&mut conn);
    assert_eq!(data["error"]["code"], "rtm/unauthenticated");
    assert_eq!(result, Err(ErrorCode::Unauthenticated));

    let (mut conn, _, now) = connection(false, 1);
    // A bad event name.
    subscribe(&mut conn, "2", "", now);
    let (data, result) = subscribe_answer(&mut conn);
    assert_eq!(data["error"]["code"], "rtm/bad-request");
    assert_eq!(result, Err(ErrorCode::BadRequest));
    // Taken by the router: `true`, said as Ok.
    subscribe(&mut conn, "3", "score", now);
    let taken = ticket(&mut conn);
    // A second one past max_in_flight (1) while the first waits.
    subscribe(&mut conn, "4", "news", now);
    let (data, result) = subscribe_answer(&mut conn);
    assert_eq!(data["error"]["code"], "rtm/too-many-requests");
    assert_eq!(result, Err(ErrorCode::TooManyRequests));
    conn.handle_subscribe_result(taken, Ok(()));
    assert_eq!(
        subscribe_answer(&mut conn),
        (serde_json::json!(true), Ok(()))
    );
    // Refused by the router (the broker did not confirm).
    subscribe(&mut conn, "5", "news", now);
    let refused = ticket(&mut conn);
    conn.handle_subscribe_result(
        refused,
        Err(rtm_core::RtmError::new(
            ErrorCode::BrokerUnavailable,
            "down",
        )),
    );
    let (data, result) = subscribe_answer(&mut conn);
    assert_eq!(data["error"]["code"], "rtm/broker-unavailable");
    assert_eq!(result, Err(ErrorCode::BrokerUnavailable));
    assert!(conn.poll_output().is_none());
}

#[test]
fn a_subscribe_the_authorizer_denies_is_said_with_the_authorizers_code() {
    let now = Instant::now();
    let mut config = ServerConfig::new("s1");
    config.authorize_subscriptions = true;
    let mut conn = Connection::new(
        ConnId::from_u64(2),
        ConnMeta::default(),
        Arc::new(config),
        Arc::new(Functions::default()),
        now,
    );
    subscribe(&mut conn, "1", "score", now);
    let Some(ConnOutput::Authorize { ticket }) = conn.poll_output() else {
        panic!("the authorizer is asked first")
    };
    conn.handle_authorize_result(
        ticket,
        Err(rtm_core::RtmError::new(
            ErrorCode::Other("app/paywall".into()),
            "subscribe first",
        )),
    );
    let (data, result) = subscribe_answer(&mut conn);
    assert_eq!(data["error"]["code"], "app/paywall");
    assert_eq!(result, Err(ErrorCode::Other("app/paywall".into())));
    assert!(conn.poll_output().is_none());
}
