//! The tokio [`Runtime`]: spawn on the current tokio runtime, sleep with tokio's timer.

use std::time::Duration;

use rtm_driver::{BoxFuture, Runtime};

/// Runs RTM's tasks on the tokio runtime current when the server or client started.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// The current tokio runtime. Panics outside one, like `tokio::spawn`.
    pub fn current() -> Self {
        TokioRuntime {
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<()>) {
        self.handle.spawn(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }
}
