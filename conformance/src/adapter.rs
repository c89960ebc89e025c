//! Client/server scenarios written once and run on every adapter: tokio
//! (rtm-tokio), async-std and smol (rtm-async-std).
//!
//! A scenario is an `async fn(Adapter)`; [`Adapter::run`] drives it on that
//! adapter's executor, where [`Adapter::listen`] and [`Adapter::connect`] give
//! it a server and clients of that adapter. [`on_every_adapter!`](crate::on_every_adapter) turns a
//! list of scenarios into one `#[test]` per scenario and adapter.
//!
//! ```
//! use conformance::adapter::{soon, Adapter};
//! use rtm_driver::{CallContext, ClientOptions, ServerBuilder};
//!
//! async fn add_round_trip(adapter: Adapter) {
//!     let builder = ServerBuilder::new().register("add", |_: CallContext, (a, b): (i64, i64)| {
//!         async move { Ok::<_, rtm_core::RtmError>(a + b) }
//!     });
//!     let server = adapter.listen(builder, "127.0.0.1:0".parse().unwrap()).await.unwrap();
//!     let client = adapter.connect(&server.url(), ClientOptions::default()).await.unwrap();
//!     let sum: i64 = soon("add", client.call_wait("add", &(2, 3))).await.unwrap();
//!     assert_eq!(sum, 5);
//!     client.close();
//!     soon("shutdown", server.shutdown()).await;
//! }
//!
//! for adapter in Adapter::ALL {
//!     adapter.run(add_round_trip);
//! }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtm_core::{ConnMeta, RtmError};
use rtm_driver::rt::RuntimeRef;
use rtm_driver::{ClientHandle, ClientOptions, Listening, ServerBuilder, ServerHandle};

/// How long anything that should happen promptly may take in a scenario.
pub const SOON: Duration = Duration::from_secs(5);

/// An adapter, with the executor it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Adapter {
    /// rtm-tokio on a multi-threaded tokio runtime.
    Tokio,
    /// rtm-async-std on async-std's executor.
    AsyncStd,
    /// rtm-async-std on smol's executor.
    Smol,
}

impl Adapter {
    /// Every adapter.
    pub const ALL: [Adapter; 3] = [Adapter::Tokio, Adapter::AsyncStd, Adapter::Smol];

    /// Runs `scenario` to completion on this adapter's executor.
    ///
    /// # Panics
    /// If the tokio runtime cannot be built (a test harness failure).
    pub fn run<F, Fut>(self, scenario: F)
    where
        F: FnOnce(Adapter) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.block_on(scenario(self)).expect("a tokio runtime");
    }

    /// Drives `future` to completion on this adapter's executor; fails only
    /// when the tokio runtime cannot be built.
    pub fn block_on<T>(self, future: impl Future<Output = T>) -> io::Result<T> {
        Ok(match self {
            Adapter::Tokio => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(future),
            Adapter::AsyncStd => async_std::task::block_on(future),
            Adapter::Smol => smol::block_on(future),
        })
    }

    /// Its `rtm-fixture --runtime` value.
    ///
    /// ```
    /// use conformance::adapter::Adapter;
    /// let names: Vec<_> = Adapter::ALL.iter().map(|a| a.arg()).collect();
    /// assert_eq!(names, ["tokio", "async-std", "smol"]);
    /// ```
    pub fn arg(self) -> &'static str {
        match self {
            Adapter::Tokio => "tokio",
            Adapter::AsyncStd => "async-std",
            Adapter::Smol => "smol",
        }
    }

    /// The runtime servers and clients of this adapter spawn on. For tokio,
    /// call it inside [`Adapter::run`].
    pub fn runtime(self) -> RuntimeRef {
        match self {
            Adapter::Tokio => Arc::new(rtm_tokio::TokioRuntime::current()),
            Adapter::AsyncStd => Arc::new(rtm_async_std::AsyncStdRuntime),
            Adapter::Smol => Arc::new(rtm_async_std::SmolRuntime),
        }
    }

    /// Starts `builder` listening on `addr` with this adapter.
    pub async fn listen(self, builder: ServerBuilder, addr: SocketAddr) -> io::Result<Listening> {
        match self {
            Adapter::Tokio => rtm_tokio::ServerBuilderExt::listen(builder, addr).await,
            Adapter::AsyncStd | Adapter::Smol => {
                rtm_async_std::ServerBuilderExt::listen_on(builder, addr, self.runtime()).await
            }
        }
    }

    /// Starts a client of this adapter without waiting for it to open:
    /// calls made meanwhile are queued.
    pub fn start(self, url: &str, options: ClientOptions) -> ClientHandle {
        match self {
            Adapter::Tokio => rtm_tokio::Client::start(url, options).handle().clone(),
            Adapter::AsyncStd | Adapter::Smol => {
                rtm_async_std::Client::start_on(url, options, self.runtime())
                    .handle()
                    .clone()
            }
        }
    }

    /// Connects a client of this adapter and waits until it is open.
    pub async fn connect(
        self,
        url: &str,
        options: ClientOptions,
    ) -> Result<ClientHandle, RtmError> {
        match self {
            Adapter::Tokio => Ok(rtm_tokio::Client::connect(url, options)
                .await?
                .handle()
                .clone()),
            Adapter::AsyncStd | Adapter::Smol => {
                Ok(
                    rtm_async_std::Client::connect_on(url, options, self.runtime())
                        .await?
                        .handle()
                        .clone(),
                )
            }
        }
    }
}

impl Adapter {
    /// Starts `builder` without a listener (the embedding case).
    pub fn embedded(self, builder: ServerBuilder) -> ServerHandle {
        builder.start(self.runtime())
    }

    /// Accepts one TCP connection on a fresh loopback port, upgrades it with
    /// this adapter's WebSocket library and serves it with the adapter's
    /// `serve_websocket`, as an application embedding RTM would. Returns the
    /// `ws://` URL to connect to.
    pub async fn serve_one_upgraded(self, handle: ServerHandle) -> io::Result<String> {
        match self {
            Adapter::Tokio => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("ws://{}/", listener.local_addr()?);
                tokio::spawn(async move {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        return;
                    };
                    let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    rtm_tokio::serve_websocket(&handle, socket, meta(peer)).await;
                });
                Ok(url)
            }
            Adapter::AsyncStd | Adapter::Smol => {
                let listener = async_net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("ws://{}/", listener.local_addr()?);
                self.runtime().spawn(Box::pin(async move {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        return;
                    };
                    let Ok(socket) = async_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    rtm_async_std::serve_websocket(&handle, socket, meta(peer)).await;
                }));
                Ok(url)
            }
        }
    }
}

fn meta(peer: SocketAddr) -> ConnMeta {
    ConnMeta {
        peer_addr: Some(peer),
        path: None,
    }
}

/// Awaits `future` at most `limit`; panics naming `what` when it does not
/// complete. Works on every executor (an async-io timer).
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    use futures_util::future::{select, Either};
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(async_io::Timer::after(limit));
    match select(future, timer).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Awaits `future` at most `limit`; `None` when it did not complete.
pub async fn timeout_opt<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    use futures_util::future::{select, Either};
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(async_io::Timer::after(limit));
    match select(future, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// [`within`] [`SOON`].
pub async fn soon<F: Future>(what: &str, future: F) -> F::Output {
    within(what, SOON, future).await
}

/// Polls `condition` (state with no event to await) until it holds; panics
/// after [`SOON`].
pub async fn until(what: &str, condition: impl FnMut() -> bool) {
    until_within(what, SOON, condition).await
}

/// [`until`] with its own limit.
pub async fn until_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        async_io::Timer::after(Duration::from_millis(5)).await;
    }
}

/// Receives the next value of a test channel, loudly.
pub async fn recv<T>(what: &str, rx: &async_channel::Receiver<T>) -> T {
    soon(what, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("channel closed waiting for {what}"))
}

/// Receives `count` values of a test channel, loudly; panics when they did
/// not all come within `limit`.
pub async fn recv_n<T>(
    what: &str,
    count: usize,
    limit: Duration,
    rx: &async_channel::Receiver<T>,
) -> Vec<T> {
    within(what, limit, async {
        let mut values = Vec::with_capacity(count);
        while values.len() < count {
            match rx.recv().await {
                Ok(value) => values.push(value),
                Err(_) => panic!("channel closed after {} of {count}: {what}", values.len()),
            }
        }
        values
    })
    .await
}

/// One `#[test]` per scenario and adapter: `tokio::NAME`, `async_std::NAME`
/// and `smol::NAME`, each running `NAME(adapter)` with [`Adapter::run`].
#[macro_export]
macro_rules! on_every_adapter {
    ($($scenario:ident),* $(,)?) => {
        mod tokio {
            $(#[test]
            fn $scenario() {
                $crate::adapter::Adapter::Tokio.run(super::$scenario)
            })*
        }
        mod async_std {
            $(#[test]
            fn $scenario() {
                $crate::adapter::Adapter::AsyncStd.run(super::$scenario)
            })*
        }
        mod smol {
            $(#[test]
            fn $scenario() {
                $crate::adapter::Adapter::Smol.run(super::$scenario)
            })*
        }
    };
}
