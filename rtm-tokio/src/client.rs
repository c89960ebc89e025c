//! The tokio client: tokio-tungstenite sockets under the shared client driver.

use std::ops::Deref;
use std::sync::Arc;

use futures_util::StreamExt;
use rtm_core::RtmError;
use rtm_driver::client::{ConnectError, Connector};
use rtm_driver::ws::{client_halves, client_ws_config, ServerUrl};
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
#[derive(Clone)]
pub struct Client {
    handle: ClientHandle,
}

impl Client {
    /// Connects and waits for the first open (and auth), at most
    /// `options.connect_timeout`. Reconnects afterwards as the options say.
    ///
    /// A URL that is not `ws://host[:port][/path]` (`wss://` included: no
    /// TLS here) fails at once with `rtm/bad-request`, without retrying.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, RtmError> {
        let limit = options.connect_timeout;
        let client = Client::start(url, options);
        client.handle.wait_open(limit).await?;
        Ok(client)
    }

    /// Starts a client without waiting: calls made before it opens are queued.
    pub fn start(url: &str, options: ClientOptions) -> Client {
        let url = url.to_owned();
        let config = client_ws_config(options.max_frame_bytes);
        let connector: Connector = Arc::new(move || {
            let url = url.clone();
            Box::pin(async move {
                let target = ServerUrl::parse(&url).map_err(ConnectError::Fatal)?;
                let (socket, _) = tokio_tungstenite::connect_async_with_config(
                    target.url.as_str(),
                    Some(config),
                    true,
                )
                .await
                .map_err(|e| e.to_string())?;
                let (sink, stream) = socket.split();
                Ok(client_halves(stream, sink))
            })
        });
        let handle =
            ClientHandle::start(options.core, connector, Arc::new(TokioRuntime::current()));
        Client { handle }
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
