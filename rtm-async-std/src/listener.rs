//! A server listening on its own TCP port, on whichever async-io executor
//! runs it (async-std or smol).

use std::io;

use async_net::AsyncToSocketAddrs;
use rtm_driver::rt::RuntimeRef;
pub use rtm_driver::{Listening, Server};
use rtm_driver::{ServerBuilder, ServerHandle};

/// Starting a [`ServerBuilder`] on async-std or smol.
///
/// `listen` / `embedded` use the crate's default runtime ([`crate::default_runtime`]:
/// async-std with the `async-std` feature, else smol); `listen_on` /
/// `embedded_on` take the runtime explicitly, so one binary can pick at run time.
#[allow(async_fn_in_trait)]
pub trait ServerBuilderExt {
    /// Starts the server on the default runtime and listens on `addr` (port 0 picks a free port).
    #[cfg(any(feature = "async-std", feature = "smol"))]
    async fn listen(self, addr: impl AsyncToSocketAddrs) -> io::Result<Listening>;
    /// Starts the server on the default runtime without a listener, to serve
    /// sockets upgraded elsewhere ([`crate::serve_websocket`]).
    #[cfg(any(feature = "async-std", feature = "smol"))]
    fn embedded(self) -> ServerHandle;
    /// Starts the server on `runtime` and listens on `addr`.
    async fn listen_on(
        self,
        addr: impl AsyncToSocketAddrs,
        runtime: RuntimeRef,
    ) -> io::Result<Listening>;
    /// Starts the server on `runtime` without a listener.
    fn embedded_on(self, runtime: RuntimeRef) -> ServerHandle;
}

impl ServerBuilderExt for ServerBuilder {
    #[cfg(any(feature = "async-std", feature = "smol"))]
    async fn listen(self, addr: impl AsyncToSocketAddrs) -> io::Result<Listening> {
        self.listen_on(addr, crate::default_runtime()).await
    }

    #[cfg(any(feature = "async-std", feature = "smol"))]
    fn embedded(self) -> ServerHandle {
        self.embedded_on(crate::default_runtime())
    }

    async fn listen_on(
        self,
        addr: impl AsyncToSocketAddrs,
        runtime: RuntimeRef,
    ) -> io::Result<Listening> {
        let addr = addr.to_socket_addrs().await?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolves to nothing",
            )
        })?;
        Listening::start(self, addr, runtime).await
    }

    fn embedded_on(self, runtime: RuntimeRef) -> ServerHandle {
        self.start(runtime)
    }
}
