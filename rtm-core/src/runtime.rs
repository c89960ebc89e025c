//! The seam to an async runtime: spawn a task, sleep. rtm-core itself
//! never runs anything; this trait is defined here, once, so the drivers,
//! the brokers and every adapter share it (a runtime is one small impl).

use std::time::Duration;

use crate::broker::BoxFuture;

/// Spawning and sleeping: all that RTM's drivers and brokers need from a runtime.
///
/// ```
/// use std::time::Duration;
/// use rtm_core::broker::BoxFuture;
///
/// /// A runtime on plain threads (for illustration; adapters provide real ones).
/// struct Threads;
/// impl rtm_core::Runtime for Threads {
///     fn spawn(&self, task: BoxFuture<'static, ()>) {
///         std::thread::spawn(move || block_on(task));
///     }
///     fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
///         Box::pin(async move { std::thread::sleep(duration) })
///     }
/// }
/// # fn block_on(mut f: BoxFuture<'static, ()>) {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     while f.as_mut().poll(&mut cx).is_pending() { std::thread::yield_now() }
/// # }
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// A shared runtime is a runtime (so an `Arc<dyn Runtime>` can be handed to
/// anything that takes `impl Runtime`).
impl<R: Runtime + ?Sized> Runtime for std::sync::Arc<R> {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        (**self).spawn(task)
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(duration)
    }
}
