//! The tokio client: tokio-tungstenite sockets under the shared client driver.

use std::ops::Deref;
use std::sync::Arc;

use futures_util::StreamExt;
use rtm_core::RtmError;
use rtm_driver::client::{ConnectError, Connector};
#[cfg(feature = "tls")]
use rtm_driver::tls::ClientTls;
use rtm_driver::ws::{client_halves, client_ws_config, ServerUrl};
use rtm_driver::{ClientHandle, ClientOptions, IncomingStream, OutgoingSink};
use rtm_runtime::TokioRuntime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
    /// A URL that is not `ws://` or `wss://host[:port][/path]` fails at once
    /// with `rtm/bad-request`, without retrying. `wss://` trusts Mozilla's
    /// roots unless [`ClientOptions::tls`] says otherwise.
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
        #[cfg(feature = "tls")]
        let tls = options.tls.clone();
        let connector: Connector = Arc::new(move || {
            let url = url.clone();
            #[cfg(feature = "tls")]
            let tls = tls.clone();
            Box::pin(async move {
                let target = ServerUrl::parse(&url).map_err(ConnectError::Fatal)?;
                let request = target
                    .url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| target.fault(e))?;
                let (host, port) = (target.host.as_str(), target.port);
                let tcp = TcpStream::connect((host, port))
                    .await
                    .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                #[cfg(feature = "tls")]
                if target.tls {
                    // Mozilla's roots are built only for a wss:// URL, once per process.
                    let tls = tls.unwrap_or_else(ClientTls::webpki_roots);
                    let connector = tokio_rustls::TlsConnector::from(tls.rustls_config());
                    let tcp = connector
                        .connect(target.server_name()?, tcp)
                        .await
                        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
                    return open(request, tcp, config).await;
                }
                open(request, tcp, config).await
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

/// The WebSocket handshake on a plain or TLS stream, then the halves the driver uses.
async fn open<S>(
    request: Request,
    stream: S,
    config: WebSocketConfig,
) -> Result<(IncomingStream, OutgoingSink), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, _) = client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let (sink, stream) = socket.split();
    Ok(client_halves(stream, sink))
}
