//! Mapping tungstenite (and axum) WebSocket messages to the driver's
//! [`Incoming`] / [`Outgoing`], and serving one upgraded socket.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtm_core::ConnMeta;
use rtm_driver::{Incoming, Outgoing, ServerHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::{CloseFrame, Message, WebSocketConfig};

/// The tungstenite configuration for a server's limits and buffers.
pub(crate) fn server_ws_config(handle: &ServerHandle) -> WebSocketConfig {
    let max = handle.config().limits.max_frame_bytes;
    WebSocketConfig::default()
        .read_buffer_size(handle.transport().read_buffer_bytes)
        // Frames gather until the writer's flush (up to 16 KiB): one send per burst.
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

pub(crate) fn incoming(message: Result<Message, WsError>) -> Incoming {
    match message {
        Ok(Message::Text(text)) => Incoming::Text(Bytes::from(text)),
        Ok(Message::Binary(_)) => Incoming::Binary,
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Activity,
        Ok(Message::Close(frame)) => match frame {
            Some(frame) => Incoming::Closed(Some(frame.code.into()), frame.reason.to_string()),
            None => Incoming::Closed(None, String::new()),
        },
        Err(WsError::Capacity(
            CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
        )) => Incoming::TooLarge,
        Err(err) => Incoming::Error(err.to_string()),
    }
}

pub(crate) fn outgoing(message: Outgoing) -> Result<Message, WsError> {
    Ok(match message {
        Outgoing::Text(bytes) => Message::Text(
            bytes
                .try_into()
                .map_err(|_| WsError::Utf8("outgoing frame is not UTF-8".into()))?,
        ),
        Outgoing::Ping => Message::Ping(Bytes::new()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: WsCloseCode::from(code),
            reason: reason.into(),
        })),
    })
}

/// Serves one WebSocket that was already upgraded (by hyper, or by
/// `tokio_tungstenite::accept_async`), until it closes.
pub async fn serve_websocket<S>(handle: &ServerHandle, socket: WebSocketStream<S>, meta: ConnMeta)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = socket.split();
    let stream = stream.map(incoming);
    let sink = sink.with(|m| std::future::ready(outgoing(m)));
    futures_util::pin_mut!(sink);
    handle.serve(stream, sink, meta).await;
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
