//! What a WebSocket carries, stripped of any WebSocket library's types.
//!
//! An adapter maps its library's stream of messages into [`Incoming`] and
//! its sink into one of [`Outgoing`]; the drivers never see tungstenite.

use bytes::Bytes;
use rtm_core::CloseCode;

/// A message read from a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (UTF-8 already checked by the WebSocket library).
    Text(Bytes),
    /// A binary frame.
    Binary,
    /// A ping or pong: the peer is alive.
    Activity,
    /// The peer sent a frame over the size limit.
    TooLarge,
    /// The peer closed (with its close code, when it sent one).
    Closed(Option<CloseCode>, String),
    /// The transport failed.
    Error(String),
}

/// A message to write to a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame.
    Text(Bytes),
    /// A ping.
    Ping,
    /// A close frame with this code and reason.
    Close(CloseCode, String),
}

/// Why writing to a WebSocket failed, with the WebSocket library's error as
/// its source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("websocket write failed: {message}")]
pub struct WriteError {
    message: String,
    #[source]
    source: Option<rtm_broker::Cause>,
}

impl WriteError {
    /// A write failure, said as `message`.
    pub fn new(message: impl Into<String>) -> Self {
        WriteError {
            message: message.into(),
            source: None,
        }
    }

    /// A write failure caused by `cause` (its message, and it as the source).
    pub fn caused_by(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        WriteError {
            message: cause.to_string(),
            source: Some(std::sync::Arc::new(cause)),
        }
    }
}
