//! Serving one upgraded socket: tokio-tungstenite through the shared
//! tungstenite glue (`rtm_driver::rt::serve_messages`), and axum's own message types.

use futures_util::StreamExt;
use rtm_core::ConnMeta;
use rtm_driver::rt::serve_messages;
use rtm_driver::ServerHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

/// Serves one WebSocket that was already upgraded (by hyper, or by
/// `tokio_tungstenite::accept_async`), until it closes. tokio-tungstenite
/// reads the frames and owns the close handshake (its close codes, not this
/// crate's; see the note on `serve_axum`).
pub async fn serve_websocket<S>(handle: &ServerHandle, socket: WebSocketStream<S>, meta: ConnMeta)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = socket.split();
    serve_messages(handle, stream, sink, meta).await;
}

/// Serves one axum WebSocket (from `WebSocketUpgrade::on_upgrade`), until it closes.
///
/// Prefer [`upgrade_axum`] where you can: here axum's WebSocket (tungstenite)
/// reads the frames, answers pings and owns the close handshake, so a
/// protocol fault closes with its codes and timing, not this crate's (1002,
/// 1007, 1009 with a lingering close, one pong pending at most; see the
/// protocol document's transport section). Use this one when the route
/// already takes axum's `WebSocketUpgrade` for reasons of its own.
///
/// ```no_run
/// use axum::{extract::ws::WebSocketUpgrade, routing::get, Router};
/// use rtm_tokio::{Server, ServerBuilderExt};
///
/// # async fn run() {
/// let rtm = Server::builder().embedded();
/// let app: Router = Router::new().route("/rtm", get(move |ws: WebSocketUpgrade| {
///     let rtm = rtm.clone();
///     async move { ws.on_upgrade(move |socket| async move {
///         rtm_tokio::serve_axum(&rtm, socket, Default::default()).await
///     }) }
/// }));
/// # }
/// ```
#[cfg(feature = "axum")]
pub async fn serve_axum(
    handle: &ServerHandle,
    socket: axum::extract::ws::WebSocket,
    meta: ConnMeta,
) {
    use axum::extract::ws::{CloseFrame as AxCloseFrame, Message as AxMessage};
    use bytes::Bytes;
    use futures_util::SinkExt;
    use rtm_driver::rt::{Incoming, Outgoing};
    let (sink, stream) = socket.split();
    let stream = stream.map(|message| match message {
        Ok(AxMessage::Text(text)) => {
            Incoming::Text(Bytes::copy_from_slice(text.as_str().as_bytes()))
        }
        Ok(AxMessage::Binary(_)) => Incoming::Binary,
        Ok(AxMessage::Ping(_) | AxMessage::Pong(_)) => Incoming::Activity,
        Ok(AxMessage::Close(frame)) => match frame {
            Some(frame) => Incoming::Closed(
                Some(rtm_core::CloseCode(frame.code)),
                frame.reason.to_string(),
            ),
            None => Incoming::Closed(None, String::new()),
        },
        Err(err) => Incoming::Error(err.to_string()),
    });
    let sink = sink.with(|message: Outgoing| {
        std::future::ready(Ok::<_, axum::Error>(match message {
            Outgoing::Text(bytes) => {
                AxMessage::Text(String::from_utf8_lossy(&bytes).into_owned().into())
            }
            Outgoing::Ping => AxMessage::Ping(Bytes::new()),
            Outgoing::Close(code, reason) => AxMessage::Close(Some(AxCloseFrame {
                code: code.0,
                reason: reason.into(),
            })),
        }))
    });
    futures_util::pin_mut!(sink);
    handle.serve(stream, sink, meta).await;
}

/// Serves RTM on an axum route with the server's own WebSocket — the same
/// as its own listener: a request that is not a valid upgrade gets its HTTP
/// answer (400, 403, 426), a client's close is echoed, faults get their
/// close code (1002, 1007, 1009) and every close lingers until the peer's.
/// Answers `101` and serves the upgraded connection on a task of its own.
/// Prefer it to [`serve_axum`], which goes through axum's WebSocket.
///
/// The route's path is the one served; `peer` is the client's address (from
/// `ConnectInfo`, when the app is served `into_make_service_with_connect_info`).
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::extract::{ConnectInfo, Request, State};
/// use axum::{routing::get, Router};
/// use rtm_tokio::{Server, ServerBuilderExt, ServerHandle};
///
/// async fn upgrade(
///     State(rtm): State<ServerHandle>,
///     ConnectInfo(peer): ConnectInfo<SocketAddr>,
///     request: Request,
/// ) -> axum::response::Response {
///     rtm_tokio::upgrade_axum(&rtm, request, Some(peer))
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let rtm = Server::builder().embedded();
/// let app = Router::new().route("/rtm", get(upgrade)).with_state(rtm.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "axum")]
pub fn upgrade_axum(
    handle: &ServerHandle,
    mut request: axum::extract::Request,
    peer: Option<std::net::SocketAddr>,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode, Version};
    use axum::response::IntoResponse;
    use rtm_driver::rt::{check_request, HandshakePolicy};

    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let policy = HandshakePolicy {
        // The route matched the path already.
        path: request.uri().path().to_owned(),
        origins: handle.transport().allowed_origins.clone(),
        max_request_bytes: handle.transport().max_handshake_bytes,
    };
    let headers: Vec<(&str, &[u8])> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let http_1_1 = request.version() == Version::HTTP_11;
    let checked = check_request(
        request.method().as_str(),
        http_1_1,
        &target,
        &headers,
        &policy,
    );
    let upgrade = match checked {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = (status, format!("{}\n", rejection.reason)).into_response();
            if rejection.status == 426 {
                let headers = response.headers_mut();
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let accept = upgrade.accept_key();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let handle = handle.clone();
    let meta = ConnMeta {
        peer_addr: peer,
        path: Some(upgrade.target.clone()),
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                handle.serve_upgraded(Box::new(rtm_runtime::TokioIo::new(io)), &[], meta);
            }
            Err(err) => tracing::debug!(%err, "the upgrade did not complete"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}
