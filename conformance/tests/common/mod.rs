//! Helpers shared by the conformance tests.
// Each test crate uses a different part of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use conformance::{Adapter, Fixture};

/// The `rtm-fixture` binary cargo built for these tests.
pub const FIXTURE_BIN: &str = env!("CARGO_BIN_EXE_rtm-fixture");

/// How long a condition polled with [`eventually`] may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `rtm-fixture --runtime tokio --listen 127.0.0.1:0 FLAGS…`; panics with its stderr if it fails.
pub fn fixture(flags: &[&str]) -> Fixture {
    Fixture::start(FIXTURE_BIN, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `rtm-fixture --runtime RUNTIME --listen 127.0.0.1:0 FLAGS…`; panics with its stderr if it fails.
pub fn fixture_on(runtime: Adapter, flags: &[&str]) -> Fixture {
    Fixture::start_on(FIXTURE_BIN, runtime, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// Bounds a future: panics naming `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `cond` (for state with no event to await, e.g. PUBSUB) until true; panics after [`EVENT_TIMEOUT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {EVENT_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
