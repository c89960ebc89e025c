//! # rtm-tokio
//!
//! RTM on tokio and tokio-tungstenite: a [`Server`] that listens on its own
//! port or mounts on an axum route, and a [`Client`].
//! The protocol state lives in `rtm-core`, the runtime-neutral driving in
//! `rtm-driver`; this crate adds sockets and the tokio [`Runtime`] impl.
//!
//! ```no_run
//! use rtm_tokio::{Server, ServerBuilderExt, CallContext, RtmError};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder()
//!     .register("hello", |_ctx: CallContext, (name,): (String,)| async move {
//!         Ok::<_, RtmError>(format!("Hello, {name}!"))
//!     })
//!     .listen("127.0.0.1:7070")
//!     .await?;
//! server.handle().emit("alert", |_| true, &("Hello from server!",)).ok();
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod listener;
mod runtime;
mod ws;

pub use client::Client;
pub use listener::{Listening, Server, ServerBuilderExt};
pub use rtm_core::{ClientEvent, ClientState, Reconnect};
pub use rtm_driver::{ClientHandle, ClientOptions, Subscription};
pub use runtime::TokioRuntime;
#[cfg(feature = "axum")]
pub use ws::serve_axum;
pub use ws::serve_websocket;

pub use rtm_core::{
    Args, CloseCode, ConnId, ConnInfo, ConnMeta, ErrorCode, Heartbeat, Identity, Limits, RtmError,
};
pub use rtm_driver::{CallContext, Runtime, ServerBuilder, ServerHandle};
