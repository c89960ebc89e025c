//! Helpers shared by the conformance tests.
// Each test crate uses a different part of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use conformance::{Adapter, Fixture};

pub(crate) mod shared_redis;

/// The `rtm-fixture` binary cargo built for these tests.
pub(crate) const FIXTURE_BIN: &str = env!("CARGO_BIN_EXE_rtm-fixture");

/// How long a condition polled with [`eventually`] may take.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `rtm-fixture --runtime tokio --listen 127.0.0.1:0 FLAGS…`; panics with its stderr if it fails.
pub(crate) fn fixture(flags: &[&str]) -> Fixture {
    Fixture::start(FIXTURE_BIN, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `rtm-fixture --runtime RUNTIME --listen 127.0.0.1:0 FLAGS…`; panics with its stderr if it fails.
pub(crate) fn fixture_on(runtime: Adapter, flags: &[&str]) -> Fixture {
    Fixture::start_on(FIXTURE_BIN, runtime, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` (for state with no event to await, e.g. PUBSUB) until true; panics after [`EVENT_TIMEOUT`].
pub(crate) async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    conformance::adapter::until_within(what, EVENT_TIMEOUT, cond).await
}
