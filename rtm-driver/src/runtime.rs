//! The runtime seam: the few things an async runtime must provide.
//!
//! Everything else in the drivers is plain futures code, so supporting a
//! runtime is one small impl of [`Runtime`] (see `rtm-tokio`, `rtm-async-std`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A boxed `Send + 'static` future.
pub type BoxFuture<T> = rtm_core::broker::BoxFuture<'static, T>;

pub use rtm_core::Runtime;

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

/// Lets every other ready task of the executor run once before continuing
/// (on any executor: the task wakes itself and yields, which puts it at the
/// back of the run queue).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
