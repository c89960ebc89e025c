//! A server listening on its own TCP port.

use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use rtm_driver::{Listening, Server};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::{TokioIo, TokioRuntime};
use tokio::net::{TcpListener, ToSocketAddrs};

/// Starting a [`ServerBuilder`] on tokio.
#[allow(async_fn_in_trait)]
pub trait ServerBuilderExt {
    /// Starts the server and listens on `addr` (port 0 picks a free port).
    async fn listen(self, addr: impl ToSocketAddrs) -> io::Result<Listening>;
    /// Starts the server without a listener, to serve sockets upgraded
    /// elsewhere (an axum route: [`crate::serve_axum`]).
    fn embedded(self) -> ServerHandle;
}

impl ServerBuilderExt for ServerBuilder {
    async fn listen(self, addr: impl ToSocketAddrs) -> io::Result<Listening> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let handle = self.embedded();
        let accept = tokio::spawn(accept_loop(handle.clone(), listener));
        // The loop ends as shutdown starts; aborting it as well costs nothing.
        let accept_stopped = Box::pin(async move {
            accept.abort();
            let _ = accept.await;
        });
        Ok(Listening::new(handle, local_addr, accept_stopped))
    }

    fn embedded(self) -> ServerHandle {
        self.start(Arc::new(TokioRuntime::current()))
    }
}

async fn accept_loop(handle: ServerHandle, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = handle.shutdown_started() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let handle = handle.clone();
                // TLS (if any), the WebSocket handshake, then the connection's own task.
                tokio::spawn(async move { handle.accept(Box::new(TokioIo::new(tcp)), peer).await });
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
