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
        Self::from_handle(tokio::runtime::Handle::current())
    }

    /// A given tokio runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle }
    }
}

impl Runtime for TokioRuntime {
    fn spawn(&self, future: BoxFuture<()>) {
        self.handle.spawn(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        // Creating a tokio timer needs the runtime's context.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}
