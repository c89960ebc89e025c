//! # rtm-runtime
//!
//! The runtime seam of RTM and its implementations, side by side (as
//! quinn keeps `runtime/mod.rs` beside `runtime/tokio.rs`):
//!
//! - [`Runtime`]: spawn, sleep, a resettable [`Timer`], the clock, TCP
//!   listen and connect, name resolution — all RTM's drivers and brokers
//!   need from an async runtime; [`Listener`], and the byte streams they
//!   run on ([`io::BoxIo`]: anything futures-io);
//! - its implementations: `TokioRuntime` (feature `tokio`), `SmolRuntime`
//!   (feature `smol`), `AsyncStdRuntime` (feature `async-std`). smol and
//!   async-std share the async-io reactor (its sockets and timer), so
//!   their two impls differ only in how they spawn and sleep; tokio's
//!   sockets are seen through `TokioIo`.
//!
//! Without a feature the crate is the trait alone: what a custom runtime,
//! or a broker that only needs to spawn and sleep, depends on.
#![warn(missing_docs)]

pub mod io;
mod seam;

#[cfg(any(feature = "smol", feature = "async-std"))]
mod async_io_net;
#[cfg(feature = "async-std")]
mod async_std;
#[cfg(feature = "smol")]
mod smol;
#[cfg(feature = "tokio")]
mod tokio;

pub use seam::{timeout, yield_now, Accept, BoxFuture, Listener, Runtime, RuntimeRef, Timer};

#[cfg(feature = "async-std")]
pub use crate::async_std::AsyncStdRuntime;
#[cfg(feature = "smol")]
pub use crate::smol::SmolRuntime;
#[cfg(feature = "tokio")]
pub use crate::tokio::{TokioIo, TokioRuntime};
