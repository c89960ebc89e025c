//! # rtm-driver
//!
//! The runtime-neutral half of every RTM adapter, written once:
//!
//! - [`ServerBuilder`] / [`ServerHandle`]: functions, authentication, limits,
//!   hooks, Emit / Publish / Push, graceful shutdown, and
//!   [`ServerHandle::serve`] to run one already-upgraded WebSocket;
//! - the function registry ([`CallContext`], typed handlers);
//! - the seam to a runtime ([`Runtime`]: spawn and sleep) and to a WebSocket
//!   library ([`Incoming`] / [`Outgoing`]);
//! - `ws`: the tungstenite glue (the client's configuration, message mappings,
//!   server URLs) and `connector`: the client's connector, for every runtime;
//! - with feature `tls`, `tls`: the server's certificate and the client's
//!   trusted roots for `wss://`, as rustls configurations.
//!
//! Adapters (`rtm-tokio`, `rtm-async-std`) add sockets and a `Runtime` impl.
#![warn(missing_docs)]

/// The broker seam (from `rtm-broker`).
pub use rtm_broker as broker;
/// The runtime seam (from `rtm-runtime`, beside its implementations).
pub use rtm_runtime as runtime;
/// The byte streams connections run on (from `rtm-runtime`).
pub use rtm_runtime::io;
pub mod client;
pub mod connector;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod function;
pub mod log;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod websocket;
pub mod ws;

pub use broker::{Broker, BrokerError, BrokerEvent, BrokerState, MemoryHub};
pub use client::{
    ClientHandle, ClientOptions, ConnectError, Connector, IncomingStream, OutgoingSink,
    Subscription,
};
pub use function::{CallContext, ErasedFunction};
pub use runtime::{BoxFuture, Runtime, RuntimeRef};
pub use server::{Listening, Server, ServerBuilder, ServerHandle, TransportOptions};
pub use transport::{Incoming, Outgoing};
