//! A server listening on its own TCP port, on whichever async-io executor
//! runs it (async-std or smol).

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_net::{AsyncToSocketAddrs, TcpListener};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
pub use rtm_driver::{Listening, Server};
use rtm_driver::{RuntimeRef, ServerBuilder, ServerHandle};

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
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let handle = self.embedded_on(Arc::clone(&runtime));
        let (done, accept_done) = oneshot::channel::<()>();
        let accept = accept_loop(handle.clone(), listener);
        runtime.spawn(Box::pin(async move {
            accept.await;
            // Dropping `done` tells `shutdown` the listener is closed.
            drop(done);
        }));
        let accept_stopped = Box::pin(async move {
            let _ = accept_done.await;
        });
        Ok(Listening::new(handle, local_addr, accept_stopped))
    }

    fn embedded_on(self, runtime: RuntimeRef) -> ServerHandle {
        self.start(runtime)
    }
}

async fn accept_loop(handle: ServerHandle, listener: TcpListener) {
    let runtime = Arc::clone(handle.runtime());
    loop {
        let accepted = {
            let stop = pin!(handle.shutdown_started());
            let accept = pin!(listener.accept());
            match select(stop, accept).await {
                Either::Left(_) => return,
                Either::Right((accepted, _)) => accepted,
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let handle = handle.clone();
                // TLS (if any), the WebSocket handshake, then the connection's own task.
                runtime.spawn(Box::pin(
                    async move { handle.accept(Box::new(tcp), peer).await },
                ));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                runtime.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
