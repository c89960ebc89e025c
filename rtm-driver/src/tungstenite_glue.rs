//! The tungstenite glue: the client's WebSocket configuration, the mapping
//! of tungstenite [`Message`]s to [`Incoming`] / [`Outgoing`] (the client,
//! and sockets an application upgraded with tungstenite itself), and the
//! client's server URL check. The server's own listener does not use
//! tungstenite (see [`crate::websocket`]).
//!
//! It depends on `tungstenite` only, not on any async wrapper of it, so
//! `tokio-tungstenite` (rtm-tokio) and `async-tungstenite` (rtm-async-std)
//! both plug their streams in here.

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rtm_core::{ConnMeta, ErrorCode, RtmError};
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::http::Uri;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::{CloseFrame, Message, WebSocketConfig};

use crate::client::{IncomingStream, OutgoingSink};
use crate::messages::{Incoming, Outgoing, WriteError};
use crate::server::ServerHandle;

/// The tungstenite configuration for a client accepting frames up to `max_frame_bytes`.
pub(crate) fn client_ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Maps one read from a tungstenite stream to what the drivers understand.
///
pub(crate) fn incoming(message: Result<Message, WsError>) -> Incoming {
    match message {
        Ok(Message::Text(text)) => Incoming::Text(Bytes::from(text)),
        Ok(Message::Binary(_)) => Incoming::Binary,
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Incoming::Activity,
        Ok(Message::Close(frame)) => match frame {
            Some(frame) => Incoming::Closed(
                Some(rtm_core::CloseCode(frame.code.into())),
                frame.reason.to_string(),
            ),
            None => Incoming::Closed(None, String::new()),
        },
        Err(WsError::Capacity(
            CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
        )) => Incoming::TooLarge,
        Err(err) => Incoming::Error(err.to_string()),
    }
}

/// Maps one driver write to a tungstenite message (text that is not UTF-8 is an error).
pub(crate) fn outgoing(message: Outgoing) -> Result<Message, WsError> {
    Ok(match message {
        Outgoing::Text(bytes) => Message::Text(
            bytes
                .try_into()
                .map_err(|_| WsError::Utf8("outgoing frame is not UTF-8".into()))?,
        ),
        Outgoing::Ping => Message::Ping(Bytes::new()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: WsCloseCode::from(code.0),
            reason: reason.into(),
        })),
    })
}

/// Serves one upgraded tungstenite WebSocket, given as its two halves, until it closes.
pub async fn serve_messages<St, Si>(handle: &ServerHandle, stream: St, sink: Si, meta: ConnMeta)
where
    St: Stream<Item = Result<Message, WsError>> + Unpin + Send,
    Si: Sink<Message, Error = WsError> + Unpin + Send,
{
    let stream = stream.map(incoming);
    let sink = sink.with(|m| std::future::ready(outgoing(m)));
    futures_util::pin_mut!(sink);
    handle.serve(stream, sink, meta).await;
}

/// A client's server URL, checked before any connection attempt.
///
/// `ws://` URLs are accepted, and `wss://` ones with the `tls` feature;
/// anything else fails with `rtm/bad-request`, which a client reports at
/// once instead of retrying (no retry can fix it).
///
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// The URL to request, with `/` added when it names no path.
    pub url: String,
    /// The host to dial (an IPv6 literal without its brackets), also the
    /// name the server's certificate must carry with TLS.
    pub host: String,
    /// The port to dial (80, or 443 with TLS, when the URL names none).
    pub port: u16,
    /// `wss://`: TLS before the WebSocket handshake.
    pub tls: bool,
}

impl ServerUrl {
    /// Checks `url`: it must parse, use the `ws` or `wss` scheme and name a host.
    pub(crate) fn parse(url: &str) -> Result<ServerUrl, RtmError> {
        let bad =
            |why: &str| RtmError::new(ErrorCode::BadRequest, format!("server URL {url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let tls =
            match uri.scheme_str() {
                Some("ws") => false,
                Some("wss") if cfg!(feature = "tls") => true,
                Some("wss") => return Err(bad(
                    "wss:// needs TLS, which this build leaves out (the adapter's `tls` feature)",
                )),
                _ => return Err(bad("only ws:// and wss:// URLs are supported")),
            };
        let host = match uri.host() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(bad("no host")),
        };
        // An IPv6 literal comes bracketed: `[::1]`.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let url = match uri.path_and_query() {
            Some(path) if !path.as_str().is_empty() => url.to_owned(),
            _ => format!("{url}/"),
        };
        Ok(ServerUrl {
            url,
            host,
            port,
            tls,
        })
    }

    /// A fault of this URL found later (by the WebSocket library, or as a
    /// TLS server name): fatal, as no retry can fix it.
    pub(crate) fn fault(&self, why: impl std::fmt::Display) -> crate::ConnectError {
        let message = format!("server URL {:?}: {why}", self.url);
        crate::ConnectError::Fatal(RtmError::new(ErrorCode::BadRequest, message))
    }

    /// The name the server's certificate must carry: the URL's host.
    #[cfg(feature = "tls")]
    pub(crate) fn server_name(
        &self,
    ) -> Result<rustls_pki_types::ServerName<'static>, crate::ConnectError> {
        rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| self.fault(format!("not a TLS server name ({e})")))
    }
}

/// Boxes the two halves of a client's tungstenite WebSocket for the client driver
/// (what a [`crate::Connector`] returns).
pub(crate) fn client_halves<St, Si>(stream: St, sink: Si) -> (IncomingStream, OutgoingSink)
where
    St: Stream<Item = Result<Message, WsError>> + Send + 'static,
    Si: Sink<Message, Error = WsError> + Send + 'static,
{
    let stream: IncomingStream = Box::pin(stream.map(incoming));
    let sink: OutgoingSink = Box::pin(
        sink.sink_map_err(WriteError::caused_by)
            .with(|m| std::future::ready(outgoing(m).map_err(WriteError::caused_by))),
    );
    (stream, sink)
}

/// The examples of this module's items (private: rustdoc cannot run them).
#[cfg(test)]
mod doc_examples {
    #[test]
    fn tungstenite_messages_become_incoming() {
        use crate::messages::Incoming;
        use crate::tungstenite_glue::incoming;
        use tungstenite::Message;
        assert_eq!(
            incoming(Ok(Message::text("hi"))),
            Incoming::Text("hi".into())
        );
        assert_eq!(
            incoming(Ok(Message::Ping(Default::default()))),
            Incoming::Activity
        );
    }
    #[test]
    fn server_urls_parse_and_bad_ones_fail() {
        use crate::tungstenite_glue::ServerUrl;
        let url = ServerUrl::parse("ws://[::1]:7070/rtm?room=1").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.tls), ("::1", 7070, false));
        assert_eq!(ServerUrl::parse("ws://example.com").unwrap().port, 80);

        let err = ServerUrl::parse("http://127.0.0.1:7070/").unwrap_err();
        assert_eq!(err.code.as_str(), "rtm/bad-request");
        assert!(ServerUrl::parse("not a url").is_err());
    }
}
