//! The server driver: one task per connection, a router they share.
//!
//! Each connection's task (`connection`'s `ConnectionDriver`) owns its
//! protocol state, its socket and its running functions; nothing on the
//! call path takes a lock. Emit, Publish and Push fan out through the
//! shared [`rtm_core::Router`] (behind a read-write lock, `routing`) into
//! each target's mailbox. With a broker, `broker_link`'s tasks carry
//! publishes and topic changes out and hand messages in.
//!
//! The modules depend on each other one way: `mailbox` ← `routing` ←
//! `broker_link` ← `shared` ← `handle` ← `builder`, and `connection`,
//! `serve` and `listening` on top.

mod broker_link;
mod builder;
mod connection;
mod handle;
mod listening;
mod mailbox;
mod options;
mod per_ip;
mod routing;
mod serve;
mod shared;
mod socket;

pub use builder::ServerBuilder;
pub use handle::ServerHandle;
pub use listening::{Listening, Server};
pub use options::TransportOptions;
pub use per_ip::{IpPermit, PerIpLimit};
pub use shared::ConnHook;
