//! The adapters' shared entry points: `Server::builder()`, and the
//! `Listening` server that their `listen` returns.

use std::net::SocketAddr;
use std::sync::Mutex;

use crate::runtime::BoxFuture;
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
