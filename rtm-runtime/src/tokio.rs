//! tokio: [`TokioRuntime`] and [`TokioIo`] (tokio streams as futures-io).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::io::BoxIo;
use crate::seam::{BoxFuture, Listener, Runtime, Timer};

/// Spawns on a tokio runtime and sleeps with tokio's timer.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

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

    fn timer(&self, at: Instant) -> Pin<Box<dyn Timer>> {
        let _guard = self.handle.enter();
        let deadline = tokio::time::Instant::from_std(at);
        Box::pin(TokioTimer(Box::pin(tokio::time::sleep_until(deadline))))
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

struct TokioListener(tokio::net::TcpListener);

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
#[derive(Debug)]
pub struct TokioIo<T>(T);

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

/// tokio's sleep, moved in place.
struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Timer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant, _runtime: &dyn Runtime) {
        self.0.as_mut().reset(tokio::time::Instant::from_std(at));
    }

    fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
