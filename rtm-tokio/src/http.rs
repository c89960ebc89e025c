//! RTM in an axum app, and serving that app as an internet-facing server
//! must be served (feature `axum`).
//!
//! - [`RtmService`]: RTM on a route, `Router::route_service("/rtm", …)`,
//!   with the server's own WebSocket (the same handshake answers, close
//!   codes and lingering close as [`Server::builder`](crate::Server)'s
//!   listener).
//! - [`serve`]: serves the app on a listener with what `axum::serve` does
//!   not bound: a request head must arrive within a deadline and fit in a
//!   bound, a connection that moves no byte is closed, one address holds at
//!   most so many connections ([`PerIpLimit`], the same counting the
//!   server's own listener does), and shutdown is graceful. It gives
//!   handlers the client's address as axum's `ConnectInfo<SocketAddr>`.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use rtm_tokio::http::{serve, HttpOptions, RtmService};
//! use rtm_tokio::{CallContext, RtmError, Server, ServerBuilderExt};
//!
//! # async fn run() -> std::io::Result<()> {
//! let rtm = Server::builder()
//!     .register("ping", || async { Ok::<_, RtmError>("pong") })
//!     .embedded();
//! let app = Router::new()
//!     .route("/", get(|| async { "a page" }))
//!     .route_service("/rtm", RtmService::new(rtm.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! serve(listener, app, HttpOptions::default(), async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     rtm.shutdown().await; // RTM sockets close (1001), then HTTP drains
//! })
//! .await;
//! # Ok(()) }
//! ```
//!
//! `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`
//! serves an app with an [`RtmService`] too, without those bounds.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rtm_driver::rt::IpPermit;
pub use rtm_driver::rt::PerIpLimit;
use rtm_driver::ServerHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// RTM on an axum route: `Router::route_service("/rtm", RtmService::new(handle))`.
///
/// A request that is not a valid upgrade gets its HTTP answer (400, 403,
/// 426); an upgrade is answered `101` and served on a task of its own by
/// the server's own WebSocket. The client's address comes from axum's
/// `ConnectInfo<SocketAddr>` when the app is served by [`serve`] or
/// `into_make_service_with_connect_info::<SocketAddr>()`.
#[derive(Clone, Debug)]
pub struct RtmService {
    handle: ServerHandle,
}

impl RtmService {
    /// Serves `handle`'s server (started with
    /// [`ServerBuilderExt::embedded`](crate::ServerBuilderExt::embedded)).
    pub fn new(handle: ServerHandle) -> Self {
        RtmService { handle }
    }
}

impl tower_service::Service<Request> for RtmService {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        std::future::ready(Ok(crate::ws::upgrade(&self.handle, request, peer)))
    }
}

/// What [`serve`] bounds.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long a request head may take to arrive, counted from when the
    /// server starts waiting for it: a new socket's open, or the end of the
    /// previous response on a kept-alive one (so it also closes silent and
    /// idle kept-alive sockets). Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte either way (a client that
    /// does not read its responses, a body that never comes) before it is
    /// closed. Upgraded connections (RTM's WebSocket) have their own
    /// heartbeat instead. Default 30 s.
    pub idle_timeout: Duration,
    /// The longest request head (request line and headers), in bytes; past
    /// it: 431 and the connection closed. Default 16 KiB; at least 8 KiB
    /// (hyper's smallest read buffer), a smaller value counts as 8 KiB.
    pub max_head_bytes: usize,
    /// Connections one IP address may hold open at once (page loads and RTM
    /// sockets alike); a socket past it is closed as soon as it is accepted.
    /// Keep a clone to read the counts. Default 256 per address; `None`: no
    /// bound (behind a reverse proxy every client has the proxy's address).
    pub per_ip: Option<PerIpLimit>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            per_ip: Some(PerIpLimit::new(256)),
        }
    }
}

/// Serves `app` on `listener` (HTTP/1.1, upgrades allowed) with `options`'
/// bounds until `shutdown` completes; then stops accepting and returns once
/// every connection is done (idle ones are closed at once, one mid-request
/// finishes it). Accept errors (out of file descriptors) are retried, as
/// `axum::serve` does.
pub async fn serve(
    mut listener: tokio::net::TcpListener,
    app: Router,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, closing_seen) = tokio::sync::watch::channel(());
    // Each connection holds a clone; `recv` answers `None` once all are gone.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    let options = Arc::new(options);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let permit = match &options.per_ip {
            Some(limit) => match limit.admit(peer.ip()) {
                Some(permit) => Some(permit),
                None => {
                    tracing::debug!(%peer, "too many connections from this address: closed");
                    continue;
                }
            },
            None => None,
        };
        let io = Counted {
            stream,
            _permit: permit,
            progress: Arc::new(Progress::new()),
        };
        let (app, options) = (app.clone(), options.clone());
        let (closing, alive) = (closing_seen.clone(), alive.clone());
        tokio::spawn(async move {
            serve_connection(io, peer, app, &options, closing).await;
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
    app: Router,
    options: &HttpOptions,
    mut closing: tokio::sync::watch::Receiver<()>,
) {
    let progress = io.progress.clone();
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        // What `into_make_service_with_connect_info::<SocketAddr>()` inserts.
        request.extensions_mut().insert(ConnectInfo(peer));
        app.call(request)
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_head_bytes.max(8192))
        .keep_alive(true);
    let mut conn = pin!(http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades());
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, %err, "HTTP connection closed");
                }
                return;
            }
            _ = closing.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = progress.stalled(options.idle_timeout) => {
                tracing::debug!(%peer, "HTTP connection idle: closed");
                return;
            }
        }
    }
}

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
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
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

/// An accepted connection: counted against its address until dropped (an
/// upgraded RTM socket keeps it), noting when bytes move.
struct Counted {
    stream: tokio::net::TcpStream,
    _permit: Option<IpPermit>,
    progress: Arc<Progress>,
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
