//! smol: [`SmolRuntime`] (async-io's timer and sockets, smol's executor).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::async_io_net;
use crate::io::BoxIo;
use crate::seam::{BoxFuture, Listener, Runtime, Timer};

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
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        smol::spawn(task).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn timer(&self, at: Instant) -> std::pin::Pin<Box<dyn Timer>> {
        async_io_net::AsyncIoTimer::at(at)
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
