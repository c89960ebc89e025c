//! async-std: [`AsyncStdRuntime`] (async-io's timer and sockets, async-std's executor).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::async_io_net;
use crate::io::BoxIo;
use crate::seam::{BoxFuture, Listener, Runtime, Timer};

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
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    fn spawn(&self, task: BoxFuture<()>) {
        // Detached: dropping an async-std JoinHandle does not cancel the task.
        drop(async_std::task::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(duration))
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
