//! Serving the page: a listener bounded per address, and HTTP/1 connections
//! with timeouts (issue 17 point 3).
//!
//! `axum::serve` sets no header read timeout and no bound on a request
//! head, so a client could hold sockets open forever with silent or
//! never-finished requests. Here each accepted connection is served by
//! hyper's HTTP/1 connection directly:
//!
//! - the request head must arrive within [`HttpOptions::header_read_timeout`]
//!   (hyper starts that clock whenever it waits for a head: on a new socket,
//!   and on a kept-alive one after each response, so silent sockets and idle
//!   keep-alive sockets are closed by it too);
//! - a head is at most [`MAX_HEAD_BYTES`] (past it: 431, closed);
//! - a connection on which no byte moves either way for
//!   [`HttpOptions::idle_timeout`] is closed (a client that does not read
//!   its responses, a body that never comes);
//! - HTTP/1 only, upgrades allowed (`/rtm`'s WebSocket leaves this loop as
//!   soon as it is upgraded: the RTM server has its own timeouts).
//!
//! Graceful shutdown: stop accepting, finish the requests under way, close
//! idle connections at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request head (request line and headers), in bytes; hyper's
/// read buffer never grows past it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The page server's timeouts.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// How long a request head may take to arrive, counted from when the
    /// server starts waiting for it (the socket's open, or the end of the
    /// previous response on a kept-alive socket).
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte either way.
    pub idle_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and returns once every connection is done (idle ones are
/// closed at once; one mid-request finishes it).
pub async fn serve(
    mut listener: PerIpLimit,
    router: Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, closing_seen) = tokio::sync::watch::channel(());
    // Each connection holds a clone; `recv` answers `None` once all are gone.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let closing = closing_seen.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            serve_connection(io, peer, router, options, closing).await;
            drop(alive);
        });
    }
    drop(listener);
    let _ = closing.send(());
    drop(alive);
    let _ = all_done.recv().await;
}

async fn serve_connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    options: HttpOptions,
    mut closing: tokio::sync::watch::Receiver<()>,
) {
    let progress = io.progress.clone();
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // What `into_make_service_with_connect_info::<Peer>()` would insert.
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        router.call(request)
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut conn = pin!(http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades());
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, %err, "page connection closed");
                }
                return;
            }
            _ = closing.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = progress.stalled(options.idle_timeout) => {
                tracing::debug!(%peer, "page connection idle: closed");
                return;
            }
        }
    }
}

/// A listener that lets one IP address hold at most `max` connections at
/// once (page loads, RTM sockets, silent sockets alike), so one client
/// cannot take every file descriptor. A socket past the bound is closed as
/// soon as it is accepted.
pub struct PerIpLimit {
    listener: tokio::net::TcpListener,
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpLimit {
    pub fn new(listener: tokio::net::TcpListener, max: usize) -> Self {
        PerIpLimit {
            listener,
            max: max.max(1),
            open: Default::default(),
        }
    }

    /// The connections open now (from every address).
    pub fn counter(&self) -> OpenConnections {
        OpenConnections(self.open.clone())
    }

    /// The next connection within its address's bound.
    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            // axum's own accept: it retries (and logs) accept errors.
            let (stream, peer) = axum::serve::Listener::accept(&mut self.listener).await;
            let ip = peer.ip();
            {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let count = open.entry(ip).or_insert(0);
                if *count >= self.max {
                    tracing::debug!(%peer, "too many connections from this address: closed");
                    continue;
                }
                *count += 1;
            }
            let counted = Counted {
                stream,
                ip,
                open: self.open.clone(),
                progress: Arc::new(Progress::new()),
            };
            return (counted, peer);
        }
    }
}

/// How many connections a [`PerIpLimit`] has open.
#[derive(Clone)]
pub struct OpenConnections(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl OpenConnections {
    pub fn total(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The client's address, as axum's `ConnectInfo` (inserted by [`serve`]).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// When a connection last moved a byte.
struct Progress {
    start: Instant,
    /// Milliseconds from `start`.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn moved(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// An accepted connection, counted against its IP until dropped.
pub struct Counted {
    stream: tokio::net::TcpStream,
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    progress: Arc<Progress>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.moved();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
