//! The runtime seam: what an async runtime must provide, in one small trait
//! (shaped like quinn's `Runtime`). Everything else in the drivers is plain
//! futures code, so supporting a runtime is one impl of [`Runtime`] (this
//! crate has tokio's, smol's and async-std's, a few dozen lines each).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::io::BoxIo;

/// A boxed `Send + 'static` future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A shared runtime handle.
pub type RuntimeRef = Arc<dyn Runtime>;

/// A timer at a deadline that can be moved, as quinn's `AsyncTimer`: a
/// connection re-arms its one timer in place when its next deadline moves,
/// instead of boxing a new sleep each time.
pub trait Timer: Send {
    /// Fires at `at` instead (earlier or later than before). `runtime` is
    /// the one that made the timer (a timer that cannot move itself makes a
    /// new sleep with it).
    fn reset(self: Pin<&mut Self>, at: Instant, runtime: &dyn Runtime);
    /// Ready once the deadline has passed.
    fn poll_elapsed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// The [`Timer`] of a runtime that only has [`Runtime::sleep`]: a new sleep
/// on every reset.
struct SleepTimer(BoxFuture<()>);

impl Timer for SleepTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant, runtime: &dyn Runtime) {
        self.0 = runtime.sleep(at.saturating_duration_since(runtime.now()));
    }

    fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// What [`Listener::accept`] returns: the next connection and its peer's address.
pub type Accept<'a> = Pin<Box<dyn Future<Output = io::Result<(BoxIo, SocketAddr)>> + Send + 'a>>;

/// A TCP listener on a runtime's reactor.
pub trait Listener: Send + Sync + 'static {
    /// The next connection (with `TCP_NODELAY`) and its peer's address.
    fn accept(&self) -> Accept<'_>;
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Spawning, timers and sockets: all that RTM's drivers and brokers need
/// from a runtime.
///
/// `spawn` and `sleep` are required; the rest have defaults: `now` reads
/// the system's monotonic clock, and the socket methods fail with
/// [`io::ErrorKind::Unsupported`], which is enough for a runtime used only
/// by a broker or by servers fed sockets from elsewhere.
///
/// ```
/// use std::time::Duration;
/// use rtm_runtime::{BoxFuture, Runtime};
///
/// /// A runtime on plain threads (for illustration; `rtm-runtime` has real ones).
/// struct Threads;
/// impl Runtime for Threads {
///     fn spawn(&self, task: BoxFuture<()>) {
///         std::thread::spawn(move || block_on(task));
///     }
///     fn sleep(&self, duration: Duration) -> BoxFuture<()> {
///         Box::pin(async move { std::thread::sleep(duration) })
///     }
/// }
/// # fn block_on(mut f: BoxFuture<()>) {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     while f.as_mut().poll(&mut cx).is_pending() { std::thread::yield_now() }
/// # }
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<()>);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;

    /// Now, on the clock the timers use. Must not go backwards.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// A [`Timer`] firing at `at`. The default sleeps with
    /// [`Runtime::sleep`] (and makes a new sleep on every reset); the
    /// runtimes of this crate move their timers in place.
    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(SleepTimer(
            self.sleep(at.saturating_duration_since(self.now())),
        ))
    }

    /// A non-blocking listener already bound (by `std`), handed to this
    /// runtime's reactor.
    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        drop(listener);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this runtime does not listen",
        ))
    }

    /// A TCP connection to `addr` (with `TCP_NODELAY`).
    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        let _ = addr;
        Box::pin(std::future::ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this runtime does not connect",
        ))))
    }

    /// The addresses of `host` (a name or an IP literal).
    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        // IP literals need no lookup; a runtime with a resolver overrides this.
        let addrs = host
            .parse::<std::net::IpAddr>()
            .map(|ip| vec![SocketAddr::new(ip, port)])
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this runtime does not resolve names",
                )
            });
        Box::pin(std::future::ready(addrs))
    }
}

/// A shared runtime is a runtime (so an `Arc<dyn Runtime>` can be handed to
/// anything that takes `impl Runtime`).
impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn spawn(&self, task: BoxFuture<()>) {
        (**self).spawn(task)
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        (**self).sleep(duration)
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        (**self).timer(at)
    }
    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        (**self).listener(listener)
    }
    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        (**self).connect(addr)
    }
    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        (**self).resolve(host, port)
    }
}

/// Runs `future` for at most `limit`; `None` when time ran out.
pub async fn timeout<T>(
    runtime: &dyn Runtime,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    use futures_util::future::{select, Either};
    let future = std::pin::pin!(future);
    match select(future, runtime.sleep(limit)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// Lets every task already ready run once before the caller goes on.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
