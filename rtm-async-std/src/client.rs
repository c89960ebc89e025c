//! The async-std / smol client: async-net sockets and async-tungstenite
//! under the shared client driver.

use std::ops::Deref;
use std::sync::Arc;

use async_net::TcpStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_io::{AsyncRead, AsyncWrite};
use rtm_core::RtmError;
use rtm_driver::client::{ConnectError, Connector};
#[cfg(feature = "tls")]
use rtm_driver::tls::ClientTls;
use rtm_driver::ws::{client_halves, client_ws_config, ServerUrl};
use rtm_driver::{ClientHandle, ClientOptions, IncomingStream, OutgoingSink, RuntimeRef};

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
#[derive(Clone)]
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
        let limit = options.connect_timeout;
        let client = Client::start_on(url, options, runtime);
        client.handle.wait_open(limit).await?;
        Ok(client)
    }

    /// [`Client::start`] on the given runtime.
    pub fn start_on(url: &str, options: ClientOptions, runtime: RuntimeRef) -> Client {
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
                    let connector = futures_rustls::TlsConnector::from(tls.rustls_config());
                    let tcp = connector
                        .connect(target.server_name()?, tcp)
                        .await
                        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
                    return open(request, tcp, config).await;
                }
                open(request, tcp, config).await
            })
        });
        let handle = ClientHandle::start(options.core, connector, runtime);
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
    let (socket, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| e.to_string())?;
    let (sink, stream) = socket.split();
    Ok(client_halves(stream, sink))
}
