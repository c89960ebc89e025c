//! Serving one upgraded socket: tokio-tungstenite through the shared
//! tungstenite glue (`rtm_driver::rt::serve_messages`), and an upgrade
//! request of an axum route with the server's own WebSocket.

use futures_util::StreamExt;
use rtm_core::ConnMeta;
use rtm_driver::rt::serve_messages;
use rtm_driver::ServerHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

/// Serves one WebSocket that was already upgraded (by hyper, or by
/// `tokio_tungstenite::accept_async`), until it closes. tokio-tungstenite
/// reads the frames and owns the close handshake, so a protocol fault
/// closes with its codes and timing, not this crate's (1002, 1007, 1009
/// with a lingering close; see the protocol document's transport section):
/// prefer [`Server::builder`](crate::Server)'s listener or
/// `http::RtmService` where you can.
pub async fn serve_websocket<S>(handle: &ServerHandle, socket: WebSocketStream<S>, meta: ConnMeta)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = socket.split();
    serve_messages(handle, stream, sink, meta).await;
}

/// Answers an upgrade request on an axum route with the server's own
/// WebSocket (`http::RtmService`): a request that is not a valid
/// upgrade gets its HTTP answer (400, 403, 426); an upgrade `101`, the
/// connection then served on a task of its own.
#[cfg(feature = "axum")]
pub(crate) fn upgrade(
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
