//! # rtm-driver
//!
//! The runtime-neutral half of every RTM adapter, written once:
//!
//! - [`ServerBuilder`] / [`ServerHandle`]: functions, authentication, limits,
//!   hooks, Emit / Publish / Push, graceful shutdown, and
//!   [`ServerHandle::serve`] to run one already-upgraded WebSocket;
//! - the function registry ([`CallContext`], typed handlers);
//! - the client ([`ClientHandle`], [`ClientOptions`]);
//! - [`rt`]: what a runtime, transport or adapter author needs (the
//!   [`rt::Runtime`] seam, the byte streams, the messages of a socket
//!   another WebSocket library upgraded, the handshake check);
//! - [`broker`]: the broker seam (the `rtm-broker` crate);
//! - with feature `tls`, `tls`: the server's certificate and the client's
//!   trusted roots for `wss://`, as rustls configurations.
//!
//! Adapters (`rtm-tokio`, `rtm-async-std`) add sockets and pick a runtime.
#![warn(missing_docs)]

// Inside the crate, the seams under their short names.
use rtm_runtime as runtime;
use rtm_runtime::io;

/// The broker seam (the `rtm-broker` crate): what a broker implements.
pub use rtm_broker as broker;

mod client;
#[cfg(feature = "fixture")]
pub mod fixture;
mod function;
mod log;
mod messages;
pub mod metrics;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod tungstenite_glue;
mod websocket;

/// What a runtime, transport or adapter author needs, in one place (as
/// hyper's `rt`): the runtime seam, the byte streams connections run on,
/// the messages of a socket another WebSocket library upgraded, and the
/// pieces an adapter wires together.
pub mod rt {
    pub use crate::client::{Connector, IncomingStream, OutgoingSink};
    pub use crate::messages::{Incoming, Outgoing, WriteError};
    pub use crate::server::{IpPermit, PerIpLimit};
    pub use crate::tungstenite_glue::serve_messages;
    pub use crate::websocket::handshake::{check_request, HandshakePolicy, Rejection};
    pub use rtm_runtime::io::{BoxIo, Io};
    pub use rtm_runtime::{
        timeout, yield_now, Accept, BoxFuture, Listener, Runtime, RuntimeRef, Timer,
    };
}

pub use client::{ClientHandle, ClientOptions, ConnectError, Subscription};
pub use function::{
    shape, CallContext, Decision, ErasedFunction, FunctionFuture, Handler, State, SubscribeRequest,
};
pub use server::{ConnHook, Listening, Server, ServerBuilder, ServerHandle, TransportOptions};
pub use websocket::handshake::AllowedOrigins;
