//! Every case of `conformance/vectors/protocol.jsonl`, run against the server core
//! with the fixture functions executed inline and time jumped at will.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::harness::{Delivery, Harness};
use rtm_core::testkit::vectors::{pad_to, parse_cases, run_case, Case, Received, Wire};
use rtm_core::ConnId;

/// One connection to a fresh core: the [`Wire`] of the vector runner.
struct CoreWire {
    harness: Harness,
    conn: ConnId,
}

impl CoreWire {
    fn new(case: &Case) -> Self {
        let mut harness = Harness::new(case.server_config());
        let conn = harness.open();
        CoreWire { harness, conn }
    }
}

impl Wire for CoreWire {
    fn send_text(&mut self, text: &str) {
        self.harness
            .send(self.conn, Bytes::copy_from_slice(text.as_bytes()));
    }

    fn send_binary(&mut self, _bytes: &[u8]) {
        self.harness.send_binary(self.conn);
    }

    fn next_frame_or_close(&mut self) -> Received {
        match self.harness.next(self.conn) {
            None => Received::Nothing,
            Some(Delivery::Close { code, .. }) => Received::Close(code.0),
            Some(Delivery::Frame(frame)) => {
                Received::Frame(String::from_utf8_lossy(&frame).into_owned())
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.harness.advance(ms);
    }
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance/vectors/protocol.jsonl")
}

#[test]
fn every_protocol_vector_passes_against_the_core() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    let cases = parse_cases(&text).unwrap();

    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        ran += 1;
        let mut wire = CoreWire::new(case);
        if let Err(e) = run_case(case, &mut wire) {
            failures.push(format!("{}: {e}", case.name));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {ran} vectors failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(
        ran,
        lines,
        "every line of {} is a case that ran",
        path.display()
    );
}

/// The runner must fail loudly, not pass vacuously: each of these cases is wrong on purpose.
#[test]
fn the_runner_rejects_wrong_expectations() {
    let wrong = [
        r#"{"name":"wrong data","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\",\"data\":[1]}"},{"expect_frame":{"id":"1","data":2}}]}"#,
        r#"{"name":"extra key","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\",\"data\":[1]}"},{"expect_frame":{"id":"1"}}]}"#,
        r#"{"name":"wrong close","steps":[{"send":"nope"},{"expect_close":1003}]}"#,
        r#"{"name":"wrong code","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"x\"}"},{"expect_error":{"id":"1","code":"rtm/internal"}}]}"#,
        r#"{"name":"not nothing","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\"}"},{"expect_nothing":true}]}"#,
        r#"{"name":"missing frame","steps":[{"expect_reply_id":"1"}]}"#,
        r#"{"name":"any order short","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\"}"},{"expect_frames_any_order":[{"id":"1","data":null},{"id":"1","data":null}]}]}"#,
        r#"{"name":"no option holds","steps":[{"send":"nope"},{"expect_one_of":[{"expect_close":1000},{"expect_reply_id":"1"}]}]}"#,
        r#"{"name":"unknown step","steps":[{"frobnicate":1}]}"#,
    ];
    for line in wrong {
        let case = &parse_cases(line).unwrap()[0];
        let mut wire = CoreWire::new(case);
        assert!(
            run_case(case, &mut wire).is_err(),
            "case {:?} should fail",
            case.name
        );
    }
}

#[test]
fn padding_makes_the_frame_exactly_the_size_asked() {
    let frame =
        serde_json::json!({"id": "1", "type": "invoke", "function": "echo", "data": ["PAD"]});
    assert_eq!(pad_to(&frame, 1024).unwrap().len(), 1024);
    assert!(pad_to(&frame, 10).is_err());
}
