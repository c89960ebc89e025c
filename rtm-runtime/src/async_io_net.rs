//! Sockets and a resettable timer on the async-io reactor (`async-net`,
//! `async-io`), shared by smol and async-std.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::io::BoxIo;
use crate::seam::{BoxFuture, Listener, Runtime, Timer};

struct AsyncNetListener(async_net::TcpListener);

impl Listener for AsyncNetListener {
    fn accept(&self) -> crate::seam::Accept<'_> {
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

pub(crate) fn listener(listener: std::net::TcpListener) -> io::Result<Box<dyn Listener>> {
    Ok(Box::new(AsyncNetListener(
        async_net::TcpListener::try_from(listener)?,
    )))
}

pub(crate) fn connect(addr: SocketAddr) -> BoxFuture<io::Result<BoxIo>> {
    Box::pin(async move {
        let tcp = async_net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Box::new(tcp) as BoxIo)
    })
}

pub(crate) fn resolve(host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
    Box::pin(async move { async_net::resolve((host.as_str(), port)).await })
}

/// async-io's timer, moved in place.
pub(crate) struct AsyncIoTimer(async_io::Timer);

impl AsyncIoTimer {
    pub(crate) fn at(at: Instant) -> Pin<Box<dyn Timer>> {
        Box::pin(AsyncIoTimer(async_io::Timer::at(at)))
    }
}

impl Timer for AsyncIoTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant, _runtime: &dyn Runtime) {
        self.0.set_at(at);
    }

    fn poll_elapsed(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
