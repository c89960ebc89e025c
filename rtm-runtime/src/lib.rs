//! # rtm-runtime
//!
//! [`rtm_driver::Runtime`] (spawn, sleep, TCP listen and connect, name
//! resolution) for the runtimes RTM supports, written once and shared by
//! the adapters and the Redis broker: `TokioRuntime` (feature `tokio`),
//! `SmolRuntime` (feature `smol`) and `AsyncStdRuntime` (feature
//! `async-std`). smol and async-std share the async-io reactor (and its
//! sockets, `async-net`), so their two impls differ only in how they spawn
//! and sleep; tokio's sockets are seen through [`TokioIo`].
#![warn(missing_docs)]

#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use std::time::Duration;

#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use std::io;
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use std::net::SocketAddr;

#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use rtm_driver::io::BoxIo;
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
use rtm_driver::runtime::{BoxFuture, Listener};
pub use rtm_driver::Runtime;

/// Spawns on a tokio runtime and sleeps with tokio's timer.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl TokioRuntime {
    /// The tokio runtime of the calling thread. Panics outside one, like `tokio::spawn`.
    pub fn current() -> Self {
        Self::from_handle(tokio::runtime::Handle::current())
    }

    /// The tokio runtime of the calling thread, if there is one.
    pub fn try_current() -> Option<Self> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(Self::from_handle)
    }

    /// A given tokio runtime.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle }
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        // Detached: tasks end by themselves.
        drop(self.handle.spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        // Creating a tokio timer needs the runtime's context.
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        let _guard = self.handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(Box::new(TokioListener(listener)))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        let _guard = self.handle.enter();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(TokioIo::new(tcp)) as BoxIo)
        })
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let _guard = self.handle.enter();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

#[cfg(feature = "tokio")]
struct TokioListener(tokio::net::TcpListener);

#[cfg(feature = "tokio")]
impl Listener for TokioListener {
    fn accept(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = io::Result<(BoxIo, SocketAddr)>> + Send + '_>,
    > {
        Box::pin(async move {
            let (tcp, peer) = self.0.accept().await?;
            let _ = tcp.set_nodelay(true);
            Ok((Box::new(TokioIo::new(tcp)) as BoxIo, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Spawns on smol's global executor and sleeps with async-io's timer.
///
/// ```
/// use std::time::Duration;
/// use rtm_runtime::{Runtime, SmolRuntime};
///
/// smol::block_on(async {
///     let (tx, rx) = async_channel::bounded(1);
///     SmolRuntime.spawn(Box::pin(async move {
///         let _ = tx.send(7).await;
///     }));
///     SmolRuntime.sleep(Duration::from_millis(1)).await;
///     assert_eq!(rx.recv().await, Ok(7));
/// });
/// ```
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

#[cfg(feature = "smol")]
impl Runtime for SmolRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        smol::spawn(task).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        async_io_net::listener(listener)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        async_io_net::connect(addr)
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        async_io_net::resolve(host, port)
    }
}

/// Spawns on async-std's executor and sleeps with its (async-io) timer.
///
/// ```
/// use std::time::Duration;
/// use rtm_runtime::{AsyncStdRuntime, Runtime};
///
/// async_std::task::block_on(async {
///     let (tx, rx) = async_channel::bounded(1);
///     AsyncStdRuntime.spawn(Box::pin(async move {
///         let _ = tx.send(7).await;
///     }));
///     AsyncStdRuntime.sleep(Duration::from_millis(1)).await;
///     assert_eq!(rx.recv().await, Ok(7));
/// });
/// ```
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

#[cfg(feature = "async-std")]
impl Runtime for AsyncStdRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        // Detached: dropping an async-std JoinHandle does not cancel the task.
        drop(async_std::task::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(duration))
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        async_io_net::listener(listener)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        async_io_net::connect(addr)
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        async_io_net::resolve(host, port)
    }
}

/// Sockets on the async-io reactor (`async-net`), shared by smol and async-std.
#[cfg(any(feature = "smol", feature = "async-std"))]
mod async_io_net {
    use std::io;
    use std::net::SocketAddr;

    use rtm_driver::io::BoxIo;
    use rtm_driver::runtime::{BoxFuture, Listener};

    struct AsyncNetListener(async_net::TcpListener);

    impl Listener for AsyncNetListener {
        fn accept(&self) -> rtm_driver::runtime::Accept<'_> {
            Box::pin(async move {
                let (tcp, peer) = self.0.accept().await?;
                let _ = tcp.set_nodelay(true);
                Ok((Box::new(tcp) as BoxIo, peer))
            })
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.local_addr()
        }
    }

    pub(super) fn listener(listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(AsyncNetListener(
            async_net::TcpListener::try_from(listener)?,
        )))
    }

    pub(super) fn connect(addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
        Box::pin(async move {
            let tcp = async_net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as BoxIo)
        })
    }

    pub(super) fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { async_net::resolve((host.as_str(), port)).await })
    }
}

/// A tokio byte stream seen through the `futures-io` traits, which the
/// server's WebSocket (and TLS) run on for every runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use futures_util::{AsyncReadExt, AsyncWriteExt};
/// let (a, b) = tokio::io::duplex(64);
/// let (mut a, mut b) = (rtm_runtime::TokioIo::new(a), rtm_runtime::TokioIo::new(b));
/// a.write_all(b"hi").await?;
/// let mut got = [0u8; 2];
/// b.read_exact(&mut got).await?;
/// assert_eq!(&got, b"hi");
/// # Ok(()) }
/// ```
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct TokioIo<T>(T);

#[cfg(feature = "tokio")]
impl<T> TokioIo<T> {
    /// Wraps a tokio stream.
    pub fn new(inner: T) -> Self {
        TokioIo(inner)
    }

    /// The tokio stream.
    pub fn get_ref(&self) -> &T {
        &self.0
    }
}

#[cfg(feature = "tokio")]
impl<T: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for TokioIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        match std::pin::Pin::new(&mut self.0).poll_read(cx, &mut read) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(read.filled().len())),
            std::task::Poll::Ready(Err(err)) => std::task::Poll::Ready(Err(err)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cfg(feature = "tokio")]
impl<T: tokio::io::AsyncWrite + Unpin> futures_io::AsyncWrite for TokioIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
