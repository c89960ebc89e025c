//! What a WebSocket carries, stripped of any WebSocket library's types.
//!
//! An adapter maps its library's stream of messages into [`Incoming`] and
//! its sink into one of [`Outgoing`]; the drivers never see tungstenite.

use bytes::Bytes;

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
    Closed(Option<u16>, String),
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
    Close(u16, String),
}

/// Why writing to a WebSocket failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("websocket write failed: {0}")]
pub struct WriteError(pub String);
