//! The two things the broker needs from an async runtime: spawn a task, sleep.
//!
//! Everything else (sockets, command timeouts) is done by the `redis` crate,
//! which picks its IO runtime by its own features: with only `tokio-comp` or
//! only `smol-comp` enabled it uses that one; with both it uses tokio when a
//! tokio runtime is current on the calling thread and smol otherwise (unless the
//! application called `redis::aio::prefer_tokio()` / `prefer_smol()` first).
//! The broker creates its connections inside the task it spawned through
//! [`Runtime::spawn`], so they land on the runtime you chose.

use std::time::Duration;

use rtm_core::broker::BoxFuture;

/// Spawning and sleeping, the runtime-specific part of the broker.
///
/// Implement it for any executor; for async-std, for example:
///
/// ```ignore
/// struct AsyncStd;
/// impl rtm_redis::Runtime for AsyncStd {
///     fn spawn(&self, task: BoxFuture<'static, ()>) { async_std::task::spawn(task); }
///     fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> { Box::pin(async_std::task::sleep(d)) }
/// }
/// ```
///
/// (async-std runs on the same async-io reactor as smol, so [`SmolRuntime`]
/// works there as it is, with the `smol` feature.)
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Runs the broker on a tokio runtime (feature `tokio`).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl TokioRuntime {
    /// The tokio runtime of the calling thread, if any.
    pub fn current() -> Option<Self> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(|handle| Self { handle })
    }

    /// A given tokio runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        Self { handle }
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        // Detached: the task ends by itself when the broker is dropped.
        drop(self.handle.spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // Creating a tokio timer needs the runtime context.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Runs the broker on smol's global executor and the async-io reactor (feature `smol`).
///
/// Also the choice for async-std applications.
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
