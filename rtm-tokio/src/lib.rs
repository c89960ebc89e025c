//! # rtm-tokio
//!
//! RTM on tokio and tokio-tungstenite: a [`Server`] that listens on its own
//! port or mounts on an axum route, and a [`Client`].
//! The protocol state lives in `rtm-core`, the runtime-neutral driving in
//! `rtm-driver`; this crate adds sockets and the tokio [`Runtime`] impl.
//!
//! ```
//! use rtm_tokio::{CallContext, Client, ClientOptions, RtmError, Server, ServerBuilderExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod listener;
mod ws;

pub use client::Client;
pub use listener::{Listening, Server, ServerBuilderExt};
pub use rtm_core::{ClientEvent, ClientState, Reconnect};
pub use rtm_driver::{ClientHandle, ClientOptions, Subscription};
pub use rtm_runtime::TokioRuntime;
#[cfg(feature = "axum")]
pub use ws::serve_axum;
pub use ws::serve_websocket;

pub use rtm_core::{
    Args, CloseCode, ConnId, ConnInfo, ConnMeta, ErrorCode, Heartbeat, Identity, Limits, RtmError,
};
/// `wss://`: the server's certificate ([`ServerTls`], for
/// `ServerBuilder::tls`) and the roots a client trusts ([`ClientTls`], for
/// `ClientOptions::tls`).
#[cfg(feature = "tls")]
pub use rtm_driver::tls::{ClientTls, ServerTls, TlsError};
pub use rtm_driver::{CallContext, Runtime, ServerBuilder, ServerHandle};
