//! A server listening on its own TCP port.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtm_driver::ws::{server_ws_config, Upgrade};
pub use rtm_driver::{Listening, Server};
use rtm_driver::{ServerBuilder, ServerHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::ws::serve_websocket;
use rtm_runtime::TokioRuntime;

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
                // TLS (if any) and the WebSocket upgrade share one deadline.
                let deadline = tokio::time::Instant::now() + handle.transport().handshake_timeout;
                let handle = handle.clone();
                // Two tasks, not one with a branch: a task's size is that of its
                // largest state, and a plain connection must not carry TLS's.
                #[cfg(feature = "tls")]
                if let Some(tls) = handle.transport().tls.clone() {
                    tokio::spawn(accept_tls(handle, tcp, peer, tls, deadline));
                    continue;
                }
                tokio::spawn(upgrade(handle, tcp, peer, deadline));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(feature = "tls")]
async fn accept_tls(
    handle: ServerHandle,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: rtm_driver::tls::ServerTls,
    deadline: tokio::time::Instant,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_config());
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => upgrade(handle, stream, peer, deadline).await,
        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The WebSocket upgrade (path check, limits) on a plain or TLS stream, then serving.
async fn upgrade<S>(
    handle: ServerHandle,
    stream: S,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut upgrade = Upgrade::new(&handle.transport().path);
    let config = server_ws_config(&handle);
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, upgrade.callback(), Some(config));
    let socket = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    serve_websocket(&handle, socket, upgrade.meta(peer)).await;
}
