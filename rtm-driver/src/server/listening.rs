//! The adapters' shared entry points: `Server::builder()`, and the
//! `Listening` server that their `listen` returns, with its accept loop —
//! written once, on the runtime's listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{select, Either};

use crate::runtime::{BoxFuture, Listener, RuntimeRef};
use crate::server::{ServerBuilder, ServerHandle};

/// Entry point of every adapter: `Server::builder()` → register functions, set options → `.listen(addr)`.
pub struct Server;

impl Server {
    /// A new server builder (see [`ServerBuilder`] for the options).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// A running server with its listener (from an adapter's `listen`).
pub struct Listening {
    handle: ServerHandle,
    local_addr: SocketAddr,
    /// Completes once the accept loop has stopped; awaited by `shutdown`.
    accept_stopped: Mutex<Option<BoxFuture<()>>>,
}

impl Listening {
    /// Starts the server on `runtime` and listens on `addr` (port 0 picks a
    /// free port). Every accepted connection goes through
    /// [`ServerHandle::accept`]: TLS when the builder has it, the WebSocket
    /// handshake, then a task of its own. The adapters' `listen` is this,
    /// with their runtime.
    ///
    /// Fails when `addr` cannot be bound (the error's kind says why:
    /// `AddrInUse`, `AddrNotAvailable`, `PermissionDenied`).
    pub async fn start(
        builder: ServerBuilder,
        addr: SocketAddr,
        runtime: RuntimeRef,
    ) -> io::Result<Listening> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = runtime.listener(std_listener)?;
        let local_addr = listener.local_addr()?;
        let handle = builder.start(runtime.clone());
        let (done, stopped) = futures_channel::oneshot::channel::<()>();
        let accepting = accept_loop(handle.clone(), listener);
        runtime.spawn(Box::pin(async move {
            accepting.await;
            // Dropping `done` (and the listener with the loop) says the socket is closed.
            drop(done);
        }));
        let accept_stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        Ok(Listening::new(handle, local_addr, accept_stopped))
    }

    /// For adapters: a server listening on `local_addr`. `accept_stopped`
    /// is awaited after the server's shutdown has begun, and completes once
    /// the adapter's accept loop has ended and closed the listening socket.
    pub fn new(
        handle: ServerHandle,
        local_addr: SocketAddr,
        accept_stopped: BoxFuture<()>,
    ) -> Self {
        let listening = Listening {
            handle,
            local_addr,
            accept_stopped: Mutex::new(Some(accept_stopped)),
        };
        tracing::info!(url = %listening.url(), "listening");
        listening
    }

    /// The server: emit, publish, push, counts.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/PATH` (`wss://` when the server has TLS), for clients.
    pub fn url(&self) -> String {
        #[cfg(feature = "tls")]
        let scheme = match self.handle.transport().tls {
            Some(_) => "wss",
            None => "ws",
        };
        #[cfg(not(feature = "tls"))]
        let scheme = "ws";
        format!(
            "{scheme}://{}{}",
            self.local_addr,
            self.handle.transport().path
        )
    }

    /// Graceful shutdown: stop accepting, finish (or time out) in-flight
    /// calls, close every connection with 1001. Returns once the listening
    /// socket is closed too.
    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
        let stopped = self.accept_stopped.lock().ok().and_then(|mut s| s.take());
        if let Some(stopped) = stopped {
            stopped.await;
        }
        tracing::info!(addr = %self.local_addr, "stopped listening");
    }
}

/// Accepts until shutdown begins; each connection is served on a task of its own.
async fn accept_loop(handle: ServerHandle, listener: Box<dyn Listener>) {
    let runtime = handle.runtime().clone();
    loop {
        let accepted = {
            let stop = std::pin::pin!(handle.shutdown_started());
            let accept = listener.accept();
            match select(stop, accept).await {
                Either::Left(_) => return,
                Either::Right((accepted, _)) => accepted,
            }
        };
        match accepted {
            Ok((io, peer)) => {
                let handle = handle.clone();
                runtime.spawn(Box::pin(async move { handle.accept(io, peer).await }));
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                runtime.sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
