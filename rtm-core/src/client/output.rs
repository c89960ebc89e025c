//! What the client core tells its adapter: outputs, lifecycle events, states, call ids.

use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::error::RtmError;
use crate::frame::Args;

/// Names one call awaiting its reply: returned by [`Client::call_wait`](super::Client::call_wait),
/// [`Client::subscribe_push`](super::Client::subscribe_push) and [`Client::unsubscribe_push`](super::Client::unsubscribe_push), and carried
/// back by [`ClientOutput::CallDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(crate) u64);

impl CallId {
    /// The number behind the id (unique per client, increasing).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// Where the client is in its connection lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    /// A socket is being opened (a [`ClientOutput::Connect`] was issued).
    Connecting,
    /// The socket is open and the `auth` request awaits its reply.
    Authenticating,
    /// Ready: calls are sent at once.
    Open,
    /// The connection was lost; attempt number `attempt` starts at the next deadline.
    WaitingToReconnect {
        /// The attempt that will start (1 for the first after a drop).
        attempt: u32,
    },
    /// Closed for good: by [`Client::close`](super::Client::close), a rejected auth,
    /// a fatal error ([`Client::handle_fatal_error`](super::Client::handle_fatal_error)), or no reconnect left.
    Closed,
}

/// Something worth telling the application about the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A socket is being opened.
    Connecting,
    /// The socket opened.
    Opened,
    /// The `auth` request was sent.
    Authenticating,
    /// The server accepted the auth; this is its reply's `data`.
    Authenticated(Box<RawValue>),
    /// The socket closed. If [`Client::state`](super::Client::state) is now [`ClientState::Closed`],
    /// no reconnect follows.
    Closed {
        /// The WebSocket close code, if any.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// Attempt `attempt` will start after `delay`.
    Reconnecting {
        /// The attempt number (1 for the first after a drop).
        attempt: u32,
        /// How long until it starts.
        delay: Duration,
    },
    /// Something went wrong that no call owns: a bad frame from the server, a
    /// rejected auth, a re-sent subscription the server denied.
    Error(RtmError),
    /// The events this client missed on a push subscription's stream
    /// (`event`, `tag`) could not be recovered (`reason`: `epoch-changed`,
    /// `trimmed`, `too-many`, `too-old`, `ahead`, `gap`; docs/protocol.md):
    /// reload what they would have told from the application's own store.
    /// Later events of the stream are delivered as usual. For the user's
    /// stream (the events with history Published to the user) `event` is
    /// empty and `tag` is `"user"`.
    Resync {
        /// The event name (empty: the user's stream).
        event: String,
        /// The tag (`"user"`: the user's stream).
        tag: String,
        /// Why, as the wire says it.
        reason: String,
    },
    /// A push subscription the server refused with a temporary error
    /// (`rtm/broker-unavailable`, `rtm/timeout`) is sent again after `delay`,
    /// until it is taken or unsubscribed.
    SubscribeRetry {
        /// The event name.
        event: String,
        /// Its tags.
        tags: Vec<String>,
        /// The retry's number (1 for the first).
        attempt: u32,
        /// How long until it is sent again.
        delay: Duration,
        /// Why it was refused.
        error: RtmError,
    },
}

/// What the client core asks of its adapter. See the [module docs](super) for the loop.
///
/// Exhaustive on purpose: an adapter matches every variant, so one added
/// later is a compile error where it must be carried out.
#[derive(Debug)]
pub enum ClientOutput {
    /// Open a WebSocket now, then call [`Client::handle_open`](super::Client::handle_open), or
    /// [`Client::handle_close`](super::Client::handle_close) if it fails.
    Connect,
    /// Send this text frame.
    Transmit(Bytes),
    /// Send a WebSocket ping: the server has been quiet for the heartbeat's interval.
    Ping,
    /// Close the socket with 1000 (the application called [`Client::close`](super::Client::close),
    /// the auth was rejected, or the server stayed silent past the heartbeat's timeout).
    Disconnect,
    /// A call finished: the reply's `data`, or why it failed.
    CallDone {
        /// The call.
        call: CallId,
        /// The reply's `data`, or its error (wire codes, or the client-side
        /// `rtm/timeout`, `rtm/disconnected`, `rtm/closed`, `rtm/auth-rejected`).
        result: Result<Box<RawValue>, RtmError>,
    },
    /// An event frame arrived; dispatch it to the subscribers of `event`.
    Event {
        /// The event name.
        event: String,
        /// Its arguments.
        args: Args,
    },
    /// A lifecycle change or an error nobody else owns.
    Lifecycle(ClientEvent),
}
