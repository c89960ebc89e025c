//! # conformance
//!
//! The RTM conformance kit: the `rtm-fixture` server (the same fixture
//! functions on every adapter, driven by foreign clients and by our
//! tests), the `rtm-load` load generator, and the helpers the scenario
//! suite is written with:
//!
//! - [`adapter`]: client/server scenarios written once, run on tokio,
//!   async-std and smol ([`on_every_adapter!`](crate::on_every_adapter));
//! - [`Fixture`]: an `rtm-fixture` child process, started with flags, killed on drop;
//! - [`raw_ws`]: a raw WebSocket peer on any executor (exact frames, close
//!   codes, thousands of sockets) for the adapter scenarios;
//! - [`raw_tcp`]: a WebSocket peer written byte by byte (malformed frames,
//!   bad handshakes, split writes; FIN told from reset);
//! - [`RawConn`]: a hand-rolled protocol client over tokio-tungstenite that sees exact frames;
//! - [`SocketWire`]: the shared wire-vector interpreter's
//!   [`Wire`](rtm_core::testkit::vectors::Wire) over a real socket.
#![warn(missing_docs)]

pub mod adapter;
pub mod conn;
pub mod fixture;
pub mod metrics;
pub mod prometheus;
pub mod raw_tcp;
pub mod raw_ws;
pub mod switch;
pub mod wire;

pub use adapter::Adapter;
pub use conn::RawConn;
pub use fixture::Fixture;
pub use wire::SocketWire;
