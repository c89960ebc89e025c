//! The client's way to a server, written once for every runtime: resolve the
//! URL's host and connect (the runtime's sockets), TLS for `wss://`
//! (rustls through `futures-rustls`), then the WebSocket handshake
//! (`async-tungstenite` over the byte stream).

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use rtm_core::RtmError;

use crate::client::{ClientHandle, ClientOptions, ConnectError, Connector};
use crate::runtime::RuntimeRef;
use crate::tungstenite_glue::{client_halves, client_ws_config, ServerUrl};

/// The connector for `url`: on every attempt (the first and each
/// reconnect), a fresh TCP connection, TLS when the URL is `wss://`, and the
/// WebSocket handshake. A URL no attempt can fix (not `ws://` or `wss://`,
/// no host) fails the attempt as fatal (`rtm/bad-request`).
pub(crate) fn websocket(url: &str, options: &ClientOptions, runtime: RuntimeRef) -> Connector {
    let url = url.to_owned();
    let config = client_ws_config(options.max_frame_bytes);
    #[cfg(feature = "tls")]
    let tls = options.tls.clone();
    Arc::new(move || {
        let url = url.clone();
        let runtime = runtime.clone();
        #[cfg(feature = "tls")]
        let tls = tls.clone();
        Box::pin(async move {
            let target = ServerUrl::parse(&url).map_err(ConnectError::Fatal)?;
            let request = target
                .url
                .as_str()
                .into_client_request()
                .map_err(|e| target.fault(e))?;
            let (host, port) = (target.host.clone(), target.port);
            let addrs = runtime
                .resolve(host.clone(), port)
                .await
                .map_err(|e| ConnectError::retry(format!("resolve {host}: {e}")).caused_by(e))?;
            let mut last = ConnectError::retry(format!("{host} resolves to no address"));
            let mut io = None;
            for addr in addrs {
                match runtime.connect(addr).await {
                    Ok(stream) => {
                        io = Some(stream);
                        break;
                    }
                    Err(err) => {
                        let reason = format!("connect to {host}:{port} ({addr}): {err}");
                        last = ConnectError::retry(reason).caused_by(err);
                    }
                }
            }
            let Some(io) = io else {
                return Err(last);
            };
            #[cfg(feature = "tls")]
            let io = if target.tls {
                // Mozilla's roots are built only for a wss:// URL, once per process.
                let tls = tls.unwrap_or_else(crate::tls::ClientTls::webpki_roots);
                let connector = futures_rustls::TlsConnector::from(tls.rustls_config());
                let stream = connector
                    .connect(target.server_name()?, io)
                    .await
                    .map_err(|e| {
                        ConnectError::retry(format!("TLS with {host}:{port}: {e}")).caused_by(e)
                    })?;
                Box::new(stream) as crate::io::BoxIo
            } else {
                io
            };
            let (socket, _) =
                async_tungstenite::client_async_with_config(request, io, Some(config))
                    .await
                    .map_err(|e| ConnectError::retry(e.to_string()).caused_by(e))?;
            let (sink, stream) = socket.split();
            Ok(client_halves(stream, sink))
        })
    })
}

impl ClientHandle {
    /// Starts a client for `url` on `runtime` without waiting: calls made
    /// before it opens are queued. Adapters' `Client::start` is this.
    pub fn start_url(url: &str, options: ClientOptions, runtime: RuntimeRef) -> ClientHandle {
        let connector = websocket(url, &options, runtime.clone());
        ClientHandle::start(options.core, connector, runtime)
    }

    /// Connects to `url` on `runtime` and waits for the first open (and
    /// auth), at most `options.connect_timeout`; reconnects afterwards as
    /// the options say. A URL that is not `ws://` or `wss://host[:port][/path]`
    /// fails at once with `rtm/bad-request`. Adapters' `Client::connect` is this.
    pub async fn connect(
        url: &str,
        options: ClientOptions,
        runtime: RuntimeRef,
    ) -> Result<ClientHandle, RtmError> {
        let limit: Duration = options.connect_timeout;
        let client = ClientHandle::start_url(url, options, runtime);
        client.wait_open(limit).await?;
        Ok(client)
    }
}
