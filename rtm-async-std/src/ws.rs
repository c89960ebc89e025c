//! Serving one already-upgraded async-tungstenite socket.

use async_tungstenite::WebSocketStream;
use futures_io::{AsyncRead, AsyncWrite};
use rtm_core::ConnMeta;
use rtm_driver::rt::serve_messages;
use rtm_driver::ServerHandle;

/// Serves one WebSocket that was already upgraded (for example by
/// `async_tungstenite::accept_async` in your own accept loop, or by an
/// HTTP server), until it closes.
///
/// ```no_run
/// use rtm_async_std::{Server, ServerBuilderExt};
///
/// # async fn run() -> std::io::Result<()> {
/// let rtm = Server::builder().embedded();
/// let listener = async_net::TcpListener::bind("127.0.0.1:7070").await?;
/// let (tcp, peer) = listener.accept().await?;
/// if let Ok(socket) = async_tungstenite::accept_async(tcp).await {
///     let meta = rtm_async_std::ConnMeta { peer_addr: Some(peer), path: None };
///     rtm_async_std::serve_websocket(&rtm, socket, meta).await;
/// }
/// # Ok(()) }
/// ```
pub async fn serve_websocket<S>(handle: &ServerHandle, socket: WebSocketStream<S>, meta: ConnMeta)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = socket.split();
    serve_messages(handle, stream, sink, meta).await;
}
