//! # rtm-async-std
//!
//! RTM on the async-io family of runtimes — async-std and smol — with
//! async-tungstenite: a [`Server`] that listens on its own port or serves
//! sockets upgraded elsewhere, and a [`Client`]. Same names, options and
//! types as `rtm-tokio`; the protocol state lives in `rtm-core`, the
//! runtime-neutral driving and the tungstenite glue in `rtm-driver`.
//!
//! Both executors share the async-io reactor, so the same sockets work on
//! either: [`ServerBuilderExt::listen`] and [`Client::connect`] use
//! [`default_runtime`] (async-std with the default `async-std` feature, else
//! smol), and [`ServerBuilderExt::listen_on`] / [`Client::connect_on`] take
//! one explicitly.
//!
//! ```
//! use rtm_async_std::{CallContext, Client, ClientOptions, RtmError, Server, ServerBuilderExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # async_std::task::block_on(async {
//! let server = Server::builder()
//!     .register("hello", |_ctx: CallContext, (name,): (String,)| async move {
//!         Ok::<_, RtmError>(format!("Hello, {name}!"))
//!     })
//!     .listen("127.0.0.1:0")
//!     .await?;
//! let client = Client::connect(&server.url(), ClientOptions::default()).await?;
//! let greeting: String = client.call_wait("hello", &("Rust",)).await?;
//! assert_eq!(greeting, "Hello, Rust!");
//! server.handle().emit("alert", |_| true, &("Hello from server!",))?;
//! client.close();
//! server.shutdown().await;
//! # Ok(()) })
//! # }
//! ```
//!
//! The same on smol, picking the runtime at run time (`SmolRuntime` needs
//! the `smol` feature):
//!
//! ```
//! # #[cfg(feature = "smol")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use rtm_async_std::{Client, ClientOptions, Server, ServerBuilderExt, SmolRuntime};
//!
//! smol::block_on(async {
//!     let server = Server::builder().listen_on("127.0.0.1:0", Arc::new(SmolRuntime)).await?;
//!     let client =
//!         Client::connect_on(&server.url(), ClientOptions::default(), Arc::new(SmolRuntime))
//!             .await?;
//!     client.close();
//!     server.shutdown().await;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "smol"))]
//! # fn main() {}
//! ```
//!
//! ## Where to go next
//!
//! Everything `rtm-tokio`'s front page lists holds here with the same names:
//! the seed's flow (the server emits, the client's subscription receives),
//! authentication ([`ServerBuilder::auth`], [`ClientOptions::auth`]), sending
//! events ([`ServerHandle::emit`], [`ServerHandle::publish`],
//! [`ServerHandle::push`]), a cluster through `rtm-redis` (build it with its
//! `smol` feature: redis' IO then runs on async-io) given to
//! [`ServerBuilder::broker`], `wss://` with [`ServerTls`] / [`ClientTls`],
//! and [`serve_websocket`] for a socket upgraded by async-tungstenite
//! yourself. The chat example (`rtm-tokio/examples/chat.rs`) shows a whole
//! app; the wire protocol is `docs/protocol.md` in the repository.
#![warn(missing_docs)]

mod client;
mod listener;
mod ws;

pub use client::Client;
pub use listener::{Listening, Server, ServerBuilderExt};
pub use rtm_core::{ClientEvent, ClientState, Reconnect};
pub use rtm_driver::rt::RuntimeRef;
pub use rtm_driver::{ClientHandle, ClientOptions, Subscription};
#[cfg(feature = "async-std")]
pub use rtm_runtime::AsyncStdRuntime;
#[cfg(feature = "smol")]
pub use rtm_runtime::SmolRuntime;
pub use ws::serve_websocket;

pub use rtm_core::{
    Args, CloseCode, ConnId, ConnInfo, ConnMeta, ErrorCode, Heartbeat, Identity, Limits, Rate,
    RateLimit, RtmError, ServerConfig, Topic,
};
// The broker seam (the trait `rtm-redis` implements, its states and errors,
// the in-process MemoryHub) and the origin guard of `allowed_origins`.
pub use rtm_driver::broker;
/// The server's metrics: their buckets and how they are recorded (docs/metrics.md).
pub use rtm_driver::metrics;
pub use rtm_driver::AllowedOrigins;
// `wss://`: the server's certificate (`ServerTls`, for `ServerBuilder::tls`)
// and the roots a client trusts (`ClientTls`, for `ClientOptions::tls`). No
// `///` here: rustdoc would paste it over each item's own summary.
pub use rtm_driver::rt::Runtime;
#[cfg(feature = "tls")]
pub use rtm_driver::tls::{ClientTls, ServerTls, TlsError};
pub use rtm_driver::{
    CallContext, Decision, Handler, ServerBuilder, ServerHandle, State, SubscribeRequest,
    TransportOptions,
};

/// The runtime `listen`, `embedded`, `Client::connect` and `Client::start`
/// use: [`AsyncStdRuntime`] with the `async-std` feature (the default),
/// else `SmolRuntime`.
#[cfg(feature = "async-std")]
pub fn default_runtime() -> RuntimeRef {
    std::sync::Arc::new(AsyncStdRuntime)
}

/// The runtime `listen`, `embedded`, `Client::connect` and `Client::start`
/// use: `AsyncStdRuntime` with the `async-std` feature (the default), else
/// [`SmolRuntime`].
#[cfg(all(feature = "smol", not(feature = "async-std")))]
pub fn default_runtime() -> RuntimeRef {
    std::sync::Arc::new(SmolRuntime)
}
