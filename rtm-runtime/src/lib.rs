//! # rtm-runtime
//!
//! [`rtm_core::Runtime`] (spawn and sleep) for the runtimes RTM supports,
//! written once and shared by the adapters and the Redis broker:
//! `TokioRuntime` (feature `tokio`) and `SmolRuntime` (feature `smol`;
//! also right for async-std, which runs on the same async-io reactor).
#![warn(missing_docs)]

#[cfg(any(feature = "tokio", feature = "smol"))]
use std::time::Duration;

#[cfg(any(feature = "tokio", feature = "smol"))]
use rtm_core::broker::BoxFuture;
pub use rtm_core::Runtime;

/// Spawns on a tokio runtime and sleeps with tokio's timer.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl TokioRuntime {
    /// The tokio runtime of the calling thread. Panics outside one, like `tokio::spawn`.
    pub fn current() -> Self {
        Self::from_handle(tokio::runtime::Handle::current())
    }

    /// The tokio runtime of the calling thread, if there is one.
    pub fn try_current() -> Option<Self> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(Self::from_handle)
    }

    /// A given tokio runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle }
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Detached: tasks end by themselves.
        drop(self.handle.spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // Creating a tokio timer needs the runtime's context.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Spawns on smol's global executor and sleeps with async-io's timer.
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

#[cfg(feature = "smol")]
impl Runtime for SmolRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        smol::spawn(task).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
}
