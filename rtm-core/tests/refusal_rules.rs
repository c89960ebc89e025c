//! A call the connection answers itself (it never reaches a function) is
//! said after its reply, as `ConnOutput::CallRefused`, so a driver can
//! count it; the reply is the same as without it.
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
