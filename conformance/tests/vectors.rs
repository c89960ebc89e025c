//! Every case of `conformance/vectors/protocol.jsonl`, over a real socket, against
//! `rtm-fixture` started with the case's flags, on each runtime (tokio,
//! async-std, smol): one test per runtime.
//!
//! Each case gets its own fixture process (emit counts and events must not
//! leak between cases); cases run [`PARALLEL`] at a time.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::FIXTURE_BIN;
use conformance::{Adapter, Fixture, SocketWire};
use rtm_core::testkit::vectors::{parse_cases, run_case, Case};

/// How many cases run at once (each waits on sockets far more than it computes).
const PARALLEL: usize = 8;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/protocol.jsonl")
}

/// Starts a fixture on `runtime` for `case` (with `extra` flags) and runs
/// it over a socket.
fn run_over_socket(runtime: Adapter, case: &Case, extra: &[&str]) -> Result<(), String> {
    let mut flags = case.fixture_flags();
    flags.extend(extra.iter().map(|f| (*f).to_owned()));
    let fixture = Fixture::start_on(FIXTURE_BIN, runtime, flags)?;
    let mut wire = SocketWire::connect(fixture.url())?;
    run_case(case, &mut wire).map_err(|e| format!("{e}\n    fixture stderr: {}", fixture.stderr()))
}

/// Runs `cases` against `runtime` on [`PARALLEL`] threads; returns each
/// case's name and outcome, in input order.
fn run_all(
    runtime: Adapter,
    cases: Vec<Case>,
    extra: &'static [&'static str],
) -> Vec<(String, Result<(), String>)> {
    let queue = Arc::new(Mutex::new(cases.into_iter().enumerate()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let results = Arc::clone(&results);
            std::thread::spawn(move || loop {
                let next = queue.lock().unwrap().next();
                let Some((n, case)) = next else { return };
                let outcome = run_over_socket(runtime, &case, extra);
                results.lock().unwrap().push((n, case.name, outcome));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|(n, _, _)| *n);
    results
        .into_iter()
        .map(|(_, name, outcome)| (name, outcome))
        .collect()
}

#[test]
fn every_protocol_vector_passes_over_a_socket_against_rtm_fixture_tokio() {
    every_vector_passes_against(Adapter::Tokio, &[]);
}

/// History changes nothing for a client that never sends `since` (as
/// `@zexcore/rtm-client` 2.x).
#[test]
fn every_protocol_vector_passes_with_history_kept_for_every_event() {
    every_vector_passes_against(Adapter::Tokio, &["--history-events", "*"]);
}

#[test]
fn every_protocol_vector_passes_over_a_socket_against_rtm_fixture_async_std() {
    every_vector_passes_against(Adapter::AsyncStd, &[]);
}

#[test]
fn every_protocol_vector_passes_over_a_socket_against_rtm_fixture_smol() {
    every_vector_passes_against(Adapter::Smol, &[]);
}

fn every_vector_passes_against(runtime: Adapter, extra: &'static [&'static str]) {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    let cases = parse_cases(&text).unwrap();

    let results = run_all(runtime, cases, extra);
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, outcome)| outcome.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();

    assert!(
        failures.is_empty(),
        "{} of {} vectors failed over a socket against {}:\n  {}",
        failures.len(),
        results.len(),
        runtime.arg(),
        failures.join("\n  ")
    );
    assert_eq!(
        results.len(),
        lines,
        "every line of {} is a case that ran",
        path.display()
    );
}

/// The socket runner must fail loudly, not pass vacuously: each case is wrong on purpose.
#[test]
fn the_socket_runner_rejects_wrong_expectations() {
    let wrong = [
        r#"{"name":"wrong data","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\",\"data\":[1]}"},{"expect_frame":{"id":"1","data":2}}]}"#,
        r#"{"name":"wrong close","steps":[{"send":"nope"},{"expect_close":1003}]}"#,
        r#"{"name":"not nothing","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"echo\"}"},{"expect_nothing":true}]}"#,
        r#"{"name":"in-flight limit not set","steps":[{"send":"{\"id\":\"1\",\"type\":\"invoke\",\"function\":\"sleep\",\"data\":[100]}"},{"send":"{\"id\":\"2\",\"type\":\"invoke\",\"function\":\"sleep\",\"data\":[100]}"},{"send":"{\"id\":\"3\",\"type\":\"invoke\",\"function\":\"sleep\",\"data\":[100]}"},{"expect_error":{"id":"3","code":"rtm/too-many-requests"}}]}"#,
    ];
    let cases: Vec<Case> = wrong
        .iter()
        .map(|line| parse_cases(line).unwrap().remove(0))
        .collect();
    for (name, outcome) in run_all(Adapter::Tokio, cases, &[]) {
        assert!(outcome.is_err(), "case {name:?} should fail");
    }
}
