//! In-memory broker and transport, so whole clusters run inside a test without sockets.
//!
//! - [`Cluster`]: N [`ServerCore`](crate::ServerCore) cores sharing a [`QueuedBroker`],
//!   with in-memory connections whose received frames land in an [`Inbox`];
//! - [`App`]: what the application does (authenticate, authorize, run
//!   functions), called synchronously by the cluster; [`TokenApp`] is a small
//!   default (token → user id, `echo`, `whoami`, `publish`, `push`, `fail`);
//! - [`QueuedBroker`]: the broker on its own, sans-IO: subscriptions and a FIFO
//!   queue of [`Delivery`]s that moves only when stepped;
//! - [`vectors`]: the interpreter of the shared wire vectors, over any [`vectors::Wire`].
//!
//! Everything is deterministic: no threads, no sockets, time only moves when
//! the test passes a later `Instant`.
pub mod fixture;
pub mod vectors;

mod app;
mod cluster;
mod queued_broker;

pub use app::{App, TokenApp};

/// A subscribe ticket as a connection would hand it out, for tests of code
/// that carries tickets (mailboxes, queues) without a connection.
pub fn subscribe_ticket(conn: crate::ConnId, event: &str, tags: &[&str]) -> crate::SubscribeTicket {
    crate::connection::SubscribeTicket::new(
        conn,
        crate::RequestId::new("t"),
        crate::PushSub {
            event: event.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            since: None,
        },
    )
}
pub use cluster::{Cluster, Inbox};
pub use queued_broker::{Delivery, QueuedBroker};
