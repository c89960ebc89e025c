//! The tokio client: the shared client driver and connector on tokio.

use std::ops::Deref;
use std::sync::Arc;

use rtm_core::RtmError;
use rtm_driver::{ClientHandle, ClientOptions};
use rtm_runtime::TokioRuntime;

/// An RTM client on tokio. Derefs to [`ClientHandle`] for `call`,
/// `call_wait`, `subscribe`, `subscribe_push`, `close`, ….
///
/// ```no_run
/// use rtm_tokio::{Client, ClientOptions};
/// # async fn run() -> Result<(), rtm_tokio::RtmError> {
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
    /// Connects and waits for the first open (and auth), at most
    /// `options.connect_timeout`. Reconnects afterwards as the options say.
    ///
    /// A URL that is not `ws://` or `wss://host[:port][/path]` fails at once
    /// with `rtm/bad-request`, without retrying. `wss://` trusts Mozilla's
    /// roots unless [`ClientOptions::tls`] says otherwise.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, RtmError> {
        let runtime = Arc::new(TokioRuntime::current());
        let handle = ClientHandle::connect(url, options, runtime).await?;
        Ok(Client { handle })
    }

    /// Starts a client without waiting: calls made before it opens are queued.
    pub fn start(url: &str, options: ClientOptions) -> Client {
        let runtime = Arc::new(TokioRuntime::current());
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
