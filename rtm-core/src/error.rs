//! Errors with the wire codes of PROTOCOL.md, and WebSocket close codes.
//!
//! [`ErrorCode`] is the `error.code` string of an error reply (or a client-side
//! failure that never reaches the wire); [`RtmError`] pairs it with a message.
//! [`CloseCode`] names the WebSocket close codes the protocol uses.

use std::fmt;

/// The `error.code` of an error reply, or a client-side failure code.
///
/// Known codes are variants (each with its wire string in `CODES`: add a
/// new one there); an application may choose its own code for a
/// function's error ([`ErrorCode::Other`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `rtm/bad-request`: unknown `type`, missing `function`, `data` not an array, …
    BadRequest,
    /// `rtm/function-not-found`: no function registered under that name.
    FunctionNotFound,
    /// `rtm/handler-error`: the function returned an error.
    HandlerError,
    /// `rtm/internal`: the function panicked, or its result could not be encoded.
    Internal,
    /// `rtm/too-many-requests`: the per-connection in-flight limit was reached.
    TooManyRequests,
    /// `rtm/unauthenticated`: a request other than `auth` before authentication.
    Unauthenticated,
    /// `rtm/already-authenticated`: a second `auth` on an authenticated connection.
    AlreadyAuthenticated,
    /// `rtm/auth-rejected`: the authentication handler rejected the token.
    AuthRejected,
    /// `rtm/auth-error`: what the JS client reports when auth fails (client side).
    AuthError,
    /// `rtm/forbidden`: the subscribe authorizer denied a push subscription.
    Forbidden,
    /// `rtm/slow-consumer`: the close reason for a connection that does not read.
    SlowConsumer,
    /// `rtm/timeout` (client side): no reply within the call timeout.
    Timeout,
    /// `rtm/disconnected` (client side): the connection was lost while the call was in flight.
    Disconnected,
    /// `rtm/closed` (client side): the client was closed by the application.
    Closed,
    /// `rtm/queue-full` (client side): the offline queue is full.
    QueueFull,
    /// `rtm/broker-unavailable`: a cluster-wide send while the broker is known to be down.
    BrokerUnavailable,
    /// `rtm/no-auth`: Publish on a server without authentication (server API only).
    PublishWithoutAuth,
    /// `rtm/too-many-subscriptions`: a subscribe past the connection's or the
    /// server's subscription limit; none of its tags was added.
    TooManySubscriptions,
    /// Any other code, chosen by the application.
    Other(Box<str>),
}

/// Every known code and its wire string: the one table both directions read.
const CODES: &[(ErrorCode, &str)] = &[
    (ErrorCode::BadRequest, "rtm/bad-request"),
    (ErrorCode::FunctionNotFound, "rtm/function-not-found"),
    (ErrorCode::HandlerError, "rtm/handler-error"),
    (ErrorCode::Internal, "rtm/internal"),
    (ErrorCode::TooManyRequests, "rtm/too-many-requests"),
    (ErrorCode::Unauthenticated, "rtm/unauthenticated"),
    (ErrorCode::AlreadyAuthenticated, "rtm/already-authenticated"),
    (ErrorCode::AuthRejected, "rtm/auth-rejected"),
    (ErrorCode::AuthError, "rtm/auth-error"),
    (ErrorCode::Forbidden, "rtm/forbidden"),
    (ErrorCode::SlowConsumer, "rtm/slow-consumer"),
    (ErrorCode::Timeout, "rtm/timeout"),
    (ErrorCode::Disconnected, "rtm/disconnected"),
    (ErrorCode::Closed, "rtm/closed"),
    (ErrorCode::QueueFull, "rtm/queue-full"),
    (ErrorCode::BrokerUnavailable, "rtm/broker-unavailable"),
    (ErrorCode::PublishWithoutAuth, "rtm/no-auth"),
    (
        ErrorCode::TooManySubscriptions,
        "rtm/too-many-subscriptions",
    ),
];

impl ErrorCode {
    /// The wire string, e.g. `"rtm/function-not-found"`.
    pub fn as_str(&self) -> &str {
        if let ErrorCode::Other(code) = self {
            return code;
        }
        CODES
            .iter()
            .find(|(code, _)| code == self)
            .map_or("rtm/internal", |(_, wire)| wire)
    }

    /// Parses a wire string; unknown codes become [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        CODES
            .iter()
            .find(|(_, wire)| *wire == code)
            .map_or_else(|| ErrorCode::Other(code.into()), |(known, _)| known.clone())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its wire code and a human-readable message.
///
/// This is what an error reply carries (`data.error.code` / `data.error.message`)
/// and what a function handler returns to fail a call.
///
/// ```
/// use rtm_core::{ErrorCode, RtmError};
/// let err = RtmError::handler("out of stock");
/// assert_eq!(err.code, ErrorCode::HandlerError);
/// assert_eq!(err.to_string(), "rtm/handler-error: out of stock");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RtmError {
    /// The wire code.
    pub code: ErrorCode,
    /// The message shown to the caller.
    pub message: String,
}

impl RtmError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RtmError {
            code,
            message: message.into(),
        }
    }

    /// `rtm/handler-error` with this message: the usual way for a function to fail.
    pub fn handler(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::HandlerError, message)
    }

    /// `rtm/bad-request` with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `rtm/internal` with this message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<serde_json::Error> for RtmError {
    fn from(err: serde_json::Error) -> Self {
        RtmError::bad_request(format!("invalid arguments: {err}"))
    }
}

impl From<String> for RtmError {
    /// A plain message is a function's failure: `rtm/handler-error`.
    fn from(message: String) -> Self {
        RtmError::handler(message)
    }
}

impl From<&str> for RtmError {
    /// A plain message is a function's failure: `rtm/handler-error`.
    fn from(message: &str) -> Self {
        RtmError::handler(message)
    }
}

/// A WebSocket close code, as the protocol uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure (client `close()`).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down, or the peer went silent.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1003: a binary frame was received.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1002: the peer broke the WebSocket protocol (RFC 6455 §7.4.1).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1007: a text frame that is not a request object.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1009: a frame over the size limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1005: the peer's close frame had no code (for reports only, never
    /// sent: RFC 6455 §7.4.1).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the stream ended without a close frame (for reports only,
    /// never sent).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1013: try again later (slow consumer, too many connections).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4003: authentication rejected.
    pub const AUTH_REJECTED: CloseCode = CloseCode(4003);
    /// 4008: authentication timed out.
    pub const AUTH_TIMEOUT: CloseCode = CloseCode(4008);
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_through_its_wire_string() {
        let codes = [
            ErrorCode::BadRequest,
            ErrorCode::FunctionNotFound,
            ErrorCode::HandlerError,
            ErrorCode::Internal,
            ErrorCode::TooManyRequests,
            ErrorCode::Unauthenticated,
            ErrorCode::AlreadyAuthenticated,
            ErrorCode::AuthRejected,
            ErrorCode::AuthError,
            ErrorCode::Forbidden,
            ErrorCode::SlowConsumer,
            ErrorCode::Timeout,
            ErrorCode::Disconnected,
            ErrorCode::Closed,
            ErrorCode::QueueFull,
            ErrorCode::BrokerUnavailable,
            ErrorCode::PublishWithoutAuth,
            ErrorCode::TooManySubscriptions,
            ErrorCode::Other("app/out-of-stock".into()),
        ];
        for code in codes {
            assert_eq!(ErrorCode::parse(code.as_str()), code);
        }
    }
}

#[cfg(test)]
mod codes {
    use super::*;

    #[test]
    fn every_code_reads_and_writes_through_the_one_table() {
        for (code, wire) in CODES {
            assert_eq!(code.as_str(), *wire);
            assert_eq!(&ErrorCode::parse(wire), code);
        }
        assert_eq!(ErrorCode::parse("app/x"), ErrorCode::Other("app/x".into()));
        assert_eq!(ErrorCode::Other("app/x".into()).as_str(), "app/x");
    }
}
