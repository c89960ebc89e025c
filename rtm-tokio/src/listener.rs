//! A server listening on its own TCP port, on tokio.

use std::io;
use std::sync::Arc;

pub use rtm_driver::{Listening, Server};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;
use tokio::net::ToSocketAddrs;

/// Starting a [`ServerBuilder`] on tokio.
#[allow(async_fn_in_trait)]
pub trait ServerBuilderExt {
    /// Starts the server and listens on `addr` (port 0 picks a free port;
    /// a name such as `localhost:7070` is resolved, its first address used).
    async fn listen(self, addr: impl ToSocketAddrs) -> io::Result<Listening>;
    /// Starts the server without a listener, to serve sockets upgraded
    /// elsewhere (an axum route: `rtm_tokio::http::RtmService`).
    fn embedded(self) -> ServerHandle;
}

impl ServerBuilderExt for ServerBuilder {
    async fn listen(self, addr: impl ToSocketAddrs) -> io::Result<Listening> {
        let addr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolves to nothing",
            )
        })?;
        Listening::start(self, addr, Arc::new(TokioRuntime::current())).await
    }

    fn embedded(self) -> ServerHandle {
        self.start(Arc::new(TokioRuntime::current()))
    }
}
