//! Helpers shared by the integration tests: a synchronous driver around the
//! server core running the fixture functions (the wire-vector interpreter
//! lives in `rtm_core::testkit::vectors`).
// Each test crate uses a different part of these helpers.
#![allow(dead_code)]

pub(crate) mod harness;
pub(crate) mod sim;
