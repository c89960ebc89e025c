//! Connections as the application sees them: ids, metadata, identity.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

/// A connection on one server. Ids are never reused while the server lives
/// (they count up from 1), so a late result for a closed connection cannot
/// reach a newer one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The id numbered `n` (adapters hand them out in order).
    pub fn from_u64(n: u64) -> Self {
        ConnId(n)
    }

    /// The id as a number (for logs and maps).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the transport knows about a connection when it opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnMeta {
    /// The peer's address, when there is one.
    pub peer_addr: Option<SocketAddr>,
    /// The request path of the WebSocket upgrade (with its query string).
    pub path: Option<String>,
}

/// Who is on the other end, as the authentication handler decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id: Publish to this user reaches this connection.
    pub user_id: Arc<str>,
    /// The connection's `authentication` data, visible to functions and Emit filters.
    pub data: Value,
}

impl Identity {
    /// An identity with this user id and data.
    ///
    /// ```
    /// let who = rtm_core::Identity::new("alice", serde_json::json!({"role": "admin"}));
    /// assert_eq!(&*who.user_id, "alice");
    /// ```
    pub fn new(user_id: impl Into<Arc<str>>, data: Value) -> Self {
        Identity {
            user_id: user_id.into(),
            data,
        }
    }
}

/// Everything a function, an authorizer or an Emit filter may know about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Its id on this server.
    pub id: ConnId,
    /// What the transport said at open.
    pub meta: ConnMeta,
    /// Set once authenticated; `None` on a server without authentication.
    pub identity: Option<Identity>,
    /// When the connection was admitted (the `now` its
    /// [`Connection`](crate::Connection) was made with).
    pub opened_at: Instant,
}

impl ConnInfo {
    /// The user id, once authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| &*i.user_id)
    }

    /// The `authentication` data (`Value::Null` without an identity).
    pub fn authentication(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.identity.as_ref().map_or(&NULL, |i| &i.data)
    }
}
