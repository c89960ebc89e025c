//! Serving one upgraded socket: tokio-tungstenite through the shared
//! tungstenite glue (`rtm_driver::ws`), and axum's own message types.

use futures_util::StreamExt;
use rtm_core::ConnMeta;
use rtm_driver::ws::serve_messages;
use rtm_driver::ServerHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

/// Serves one WebSocket that was already upgraded (by hyper, or by
/// `tokio_tungstenite::accept_async`), until it closes.
pub async fn serve_websocket<S>(handle: &ServerHandle, socket: WebSocketStream<S>, meta: ConnMeta)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = socket.split();
    serve_messages(handle, stream, sink, meta).await;
}

/// Serves one axum WebSocket (from `WebSocketUpgrade::on_upgrade`), until it closes.
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
    use rtm_driver::{Incoming, Outgoing};
    let (sink, stream) = socket.split();
    let stream = stream.map(|message| match message {
        Ok(AxMessage::Text(text)) => {
            Incoming::Text(Bytes::copy_from_slice(text.as_str().as_bytes()))
        }
        Ok(AxMessage::Binary(_)) => Incoming::Binary,
        Ok(AxMessage::Ping(_) | AxMessage::Pong(_)) => Incoming::Activity,
        Ok(AxMessage::Close(frame)) => match frame {
            Some(frame) => Incoming::Closed(Some(frame.code), frame.reason.to_string()),
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
                code,
                reason: reason.into(),
            })),
        }))
    });
    futures_util::pin_mut!(sink);
    handle.serve(stream, sink, meta).await;
}
