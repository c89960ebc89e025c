//! # conformance
//!
//! The RTM conformance kit: the `rtm-fixture` server (the same fixture
//! functions on every adapter, driven by foreign clients and by our
//! tests), the `rtm-load` load generator, and the shared scenario suite.
#![warn(missing_docs)]
