//! The runtime seam: the few things an async runtime must provide.
//!
//! Everything else in the drivers is plain futures code, so supporting a
//! runtime is one small impl of [`Runtime`] (see `rtm-tokio`, `rtm-async-std`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed `Send` future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Spawning and sleeping: all a driver needs from a runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;
}

/// A shared runtime handle.
pub type RuntimeRef = Arc<dyn Runtime>;

/// Runs `future` for at most `limit`; `None` when time ran out.
pub async fn timeout<T>(
    runtime: &dyn Runtime,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    use futures_util::future::{select, Either};
    let future = std::pin::pin!(future);
    match select(future, runtime.sleep(limit)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}
