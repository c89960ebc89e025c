//! The server driver: one [`rtm_core::Server`] behind a lock, fed by one
//! task per connection, a timer task and (with a broker) a broker task.
//!
//! Every mutation of the core is followed by draining its outputs under the
//! same lock: frames go to each connection's bounded outbound queue (a full
//! queue closes that connection as a slow consumer, never blocking the
//! others), functions and handlers are spawned, broker commands are queued
//! in order for the broker task.

mod builder;
mod connection;
mod handle;
mod listening;

pub use builder::{AuthHandler, Authorizer, ConnHook, ServerBuilder, TransportOptions};
pub use handle::ServerHandle;
pub use listening::{Listening, Server};
