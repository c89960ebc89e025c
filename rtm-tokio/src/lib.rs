//! # rtm-tokio
//!
//! Real-time messaging on tokio: clients call server functions by name,
//! authenticate with a token, and receive events the server sends. A
//! [`Server`] listens on its own port (or mounts on an axum route); a
//! [`Client`] calls, subscribes, reconnects and queues while offline. It is
//! wire-compatible with the JavaScript client `@zexcore/rtm-client`.
//!
//! ## The flow, both sides
//!
//! The server registers a function and sends an event (an **Emit** to every
//! connection its filter accepts); the client subscribes to the event, then
//! calls the function and waits for its result:
//!
//! ```
//! use rtm_tokio::{CallContext, Client, ClientOptions, RtmError, Server, ServerBuilderExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Server: `hello(name)` alerts everyone, then answers.
//! let server = Server::builder()
//!     .register("hello", |ctx: CallContext, (name,): (String,)| async move {
//!         ctx.server.emit("alert", |_conn| true, &("Hello from server!",))?;
//!         Ok::<_, RtmError>(format!("Hello, {name}!"))
//!     })
//!     .listen("127.0.0.1:0")
//!     .await?;
//!
//! // Client: a callback per event, then a call with a result.
//! let client = Client::connect(&server.url(), ClientOptions::default()).await?;
//! let (tx, mut alerts) = tokio::sync::mpsc::unbounded_channel();
//! let _alerts = client.subscribe("alert", move |(text,): (String,)| {
//!     let _ = tx.send(text);
//! });
//! let greeting: String = client.call_wait("hello", &("Rust",)).await?;
//! assert_eq!(greeting, "Hello, Rust!");
//! assert_eq!(alerts.recv().await.as_deref(), Some("Hello from server!"));
//!
//! client.close();
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Where to go next
//!
//! - **A whole app**: the chat example (`rtm-tokio/examples/chat.rs` and its
//!   page), `cargo run --release -p rtm-tokio --example chat`: rooms are
//!   Push, direct messages Publish, presence Emit; with `--redis` several
//!   chat servers form one cluster.
//! - **Functions**: [`ServerBuilder::register`] takes a closure of any
//!   [`Handler`] shape: no arguments (`|| …`, `|ctx: CallContext| …`), typed
//!   arguments (`|ctx: CallContext, (a, b): (i64, String)| …`), the
//!   application's [`State`] ([`ServerBuilder::with_state`]), or raw JSON.
//! - **Authentication**: [`ServerBuilder::auth`] turns the client's token
//!   ([`ClientOptions::auth`], deserialized as the handler's argument type)
//!   into an [`Identity`] (user id + data) or rejects it (close 4003);
//!   unauthenticated sockets are closed after the auth timeout (4008). A
//!   function asks for the caller with [`CallContext::caller`]
//!   (`rtm/unauthenticated` without one); [`ServerBuilder::authorize_subscriptions`]
//!   decides each push subscription from a [`SubscribeRequest`].
//! - **Sending events**: [`ServerHandle::emit`] (this server's connections a
//!   filter accepts), [`ServerHandle::publish`] (one user's connections on
//!   every server), [`ServerHandle::push`] (holders of an (event, tag)
//!   subscription, made by [`ClientHandle::subscribe_push`]).
//! - **A cluster**: `rtm-redis`'s `RedisBroker`, given to
//!   [`ServerBuilder::broker`], carries Publish and Push between servers.
//! - **An axum app**: [`http::RtmService`] serves RTM on one of its routes
//!   (`route_service("/rtm", …)`) with the server's own WebSocket (close
//!   codes, limits and lingering close as on [`Server::builder`]'s
//!   listener; start the server with [`ServerBuilderExt::embedded`]), and
//!   [`http::serve`] serves the app with the bounds an internet-facing
//!   server needs (header read timeout, head size, idle timeout,
//!   connections per address). [`serve_websocket`] serves a socket upgraded
//!   by tokio-tungstenite yourself (frames and close codes are then that
//!   library's).
//! - **TLS**: `wss://` with [`ServerTls`] and [`ClientTls`] (feature `tls`).
//! - **The wire protocol**, its limits, error codes and close codes:
//!   `docs/protocol.md` in the repository; unit-test routing without
//!   sockets with the sans-IO core, `rtm-core`.
#![warn(missing_docs)]

mod client;
#[cfg(feature = "axum")]
pub mod http;
mod listener;
mod ws;

pub use client::Client;
pub use listener::{Listening, Server, ServerBuilderExt};
pub use rtm_core::{ClientEvent, ClientState, Reconnect};
pub use rtm_driver::{ClientHandle, ClientOptions, Subscription};
pub use rtm_runtime::TokioRuntime;
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
