//! The server driver: one task per connection, a router they share.
//!
//! Each connection's task (`ConnectionDriver`) owns its protocol state, its socket
//! and its running functions; nothing on the call path takes a lock. Emit,
//! Publish and Push fan out through the shared [`rtm_core::Router`] (behind
//! a read-write lock) into each target's mailbox. With a broker, one task
//! carries publishes and topic changes out and another hands messages in.

mod broker_link;
mod builder;
mod driver;
mod handle;
mod listening;
mod mailbox;
mod serve;
mod transport;

pub use builder::{AuthHandler, Authorizer, ConnHook, ServerBuilder, TransportOptions};
#[doc(hidden)]
pub use driver::connection_task_size;
pub use handle::ServerHandle;
pub use listening::{Listening, Server};
