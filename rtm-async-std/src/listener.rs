//! A server listening on its own TCP port, on whichever async-io executor
//! runs it (async-std or smol).

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::{AsyncToSocketAddrs, TcpListener};
use futures_channel::oneshot;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::{select, Either};
use rtm_driver::runtime::timeout;
use rtm_driver::ws::{server_ws_config, Upgrade};
pub use rtm_driver::{Listening, Server};
use rtm_driver::{RuntimeRef, ServerBuilder, ServerHandle};

use crate::ws::serve_websocket;

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
                // TLS (if any) and the WebSocket upgrade share one deadline.
                let deadline = Instant::now() + handle.transport().handshake_timeout;
                let handle = handle.clone();
                // Two tasks, not one with a branch: a task's size is that of its
                // largest state, and a plain connection must not carry TLS's.
                #[cfg(feature = "tls")]
                if let Some(tls) = handle.transport().tls.clone() {
                    runtime.spawn(Box::pin(accept_tls(handle, tcp, peer, tls, deadline)));
                    continue;
                }
                runtime.spawn(Box::pin(upgrade(handle, tcp, peer, deadline)));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                runtime.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(feature = "tls")]
async fn accept_tls(
    handle: ServerHandle,
    tcp: async_net::TcpStream,
    peer: SocketAddr,
    tls: rtm_driver::tls::ServerTls,
    deadline: Instant,
) {
    let acceptor = futures_rustls::TlsAcceptor::from(tls.rustls_config());
    let left = deadline.saturating_duration_since(Instant::now());
    match timeout(&**handle.runtime(), left, acceptor.accept(tcp)).await {
        Some(Ok(stream)) => upgrade(handle, stream, peer, deadline).await,
        Some(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
        None => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The WebSocket upgrade (path check, limits) on a plain or TLS stream, then serving.
async fn upgrade<S>(handle: ServerHandle, stream: S, peer: SocketAddr, deadline: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut upgrade = Upgrade::new(&handle.transport().path);
    let config = server_ws_config(&handle);
    let accept =
        async_tungstenite::accept_hdr_async_with_config(stream, upgrade.callback(), Some(config));
    let left = deadline.saturating_duration_since(Instant::now());
    let socket = match timeout(&**handle.runtime(), left, accept).await {
        Some(Ok(socket)) => socket,
        Some(Err(err)) => {
            tracing::debug!(%peer, %err, "websocket handshake failed");
            return;
        }
        None => {
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    serve_websocket(&handle, socket, upgrade.meta(peer)).await;
}
