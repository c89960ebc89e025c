//! The async-std / smol client: the shared client driver and connector on
//! the chosen async-io executor.

use std::ops::Deref;

use rtm_core::RtmError;
use rtm_driver::rt::RuntimeRef;
use rtm_driver::{ClientHandle, ClientOptions};

/// An RTM client on async-std or smol. Derefs to [`ClientHandle`] for `call`,
/// `call_wait`, `subscribe`, `subscribe_push`, `close`, ….
///
/// `ws://` and, with the `tls` feature (on by default), `wss://`, like `rtm_tokio::Client`.
///
/// ```no_run
/// use rtm_async_std::{Client, ClientOptions};
/// # async fn run() -> Result<(), rtm_async_std::RtmError> {
/// let client = Client::connect("ws://127.0.0.1:7070/", ClientOptions::default()).await?;
/// let _alerts = client.subscribe("alert", |(text,): (String,)| println!("alert: {text}"));
/// let greeting: String = client.call_wait("hello", &("world",)).await?;
/// client.close();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    handle: ClientHandle,
}

impl Client {
    /// Connects on the default runtime ([`crate::default_runtime`]) and waits
    /// for the first open (and auth), at most `options.connect_timeout`.
    /// Reconnects afterwards as the options say.
    ///
    /// A URL that is not `ws://` or `wss://host[:port][/path]` fails at once
    /// with `rtm/bad-request`, without retrying. `wss://` trusts Mozilla's
    /// roots unless [`ClientOptions::tls`] says otherwise.
    #[cfg(any(feature = "async-std", feature = "smol"))]
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, RtmError> {
        Client::connect_on(url, options, crate::default_runtime()).await
    }

    /// Starts a client on the default runtime without waiting: calls made
    /// before it opens are queued.
    #[cfg(any(feature = "async-std", feature = "smol"))]
    pub fn start(url: &str, options: ClientOptions) -> Client {
        Client::start_on(url, options, crate::default_runtime())
    }

    /// [`Client::connect`] on the given runtime.
    pub async fn connect_on(
        url: &str,
        options: ClientOptions,
        runtime: RuntimeRef,
    ) -> Result<Client, RtmError> {
        let handle = ClientHandle::connect(url, options, runtime).await?;
        Ok(Client { handle })
    }

    /// [`Client::start`] on the given runtime.
    pub fn start_on(url: &str, options: ClientOptions, runtime: RuntimeRef) -> Client {
        Client {
            handle: ClientHandle::start_url(url, options, runtime),
        }
    }

    /// The handle (also reachable through `Deref`).
    pub fn handle(&self) -> &ClientHandle {
        &self.handle
    }
}

impl Deref for Client {
    type Target = ClientHandle;

    fn deref(&self) -> &ClientHandle {
        &self.handle
    }
}
