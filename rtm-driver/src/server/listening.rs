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
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A new server builder (see [`ServerBuilder`] for the options).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// A non-blocking listening socket on `addr` with an accept queue of
/// `backlog` (std's `bind` fixes it at 128, which a reconnect storm fills).
/// `SO_REUSEADDR` is set on Unix, as every server does, so a restarted
/// server can bind while old connections linger in TIME_WAIT (a port that
/// another socket listens on is still `AddrInUse`).
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX).max(1);
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A running server with its listener (from an adapter's `listen`).
pub struct Listening {
    handle: ServerHandle,
    local_addr: SocketAddr,
    /// Completes once the accept loop has stopped; awaited by `shutdown`.
    accept_stopped: Mutex<Option<BoxFuture<()>>>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("local_addr", &self.local_addr)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
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
        let std_listener = bind(addr, builder.transport.listen_backlog)?;
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

#[cfg(test)]
mod tests {
    use super::bind;
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300))
    }

    /// The kernel completes up to backlog + 1 connections nobody accepted;
    /// the next SYN is dropped. So the backlog given is the one applied.
    #[test]
    fn the_accept_queue_holds_the_backlog_given() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect(addr).expect("within the backlog"));
        }
        let refused = (0..3)
            .map(|_| connect(addr))
            .filter_map(Result::err)
            .count();
        assert!(refused > 0, "a full accept queue takes no more connections");
    }

    /// The default (1,024) absorbs a burst std's fixed 128 would not.
    #[test]
    fn the_default_backlog_absorbs_a_burst_of_200_connections() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = 200.min(somaxconn);
        let backlog = crate::server::TransportOptions::default().listen_backlog;
        let listener = bind("127.0.0.1:0".parse().unwrap(), backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Vec<_> = (0..burst).map(|_| connect(addr)).collect();
        let failed = held.iter().filter(|c| c.is_err()).count();
        assert_eq!(failed, 0, "{failed} of {burst} connections not completed");
    }

    /// A port another socket listens on stays taken despite SO_REUSEADDR.
    #[test]
    fn a_port_in_use_is_still_refused() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, 16).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
    }
}
