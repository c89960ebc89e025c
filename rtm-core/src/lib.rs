//! # rtm-core
//!
//! The RTM wire protocol as a sans-IO state machine: no sockets, no clocks, no
//! async runtime. Adapters (`rtm-tokio`, `rtm-async-std`) feed it inputs and
//! carry out its outputs; tests drive it directly, jumping time at will.
//!
//! - [`frame`]: parse requests and server frames, encode replies and events;
//! - [`server`]: the [`Server`] state machine;
//! - [`client`]: the [`Client`] state machine;
//! - [`topic`] and [`envelope`]: how events travel between servers on a broker;
//! - [`testkit`]: an in-memory broker and transport to run clusters in tests.
#![warn(missing_docs)]

pub mod broker;
pub mod client;
pub mod config;
pub mod conn;
pub mod envelope;
pub mod error;
pub mod frame;
mod routing;
pub mod runtime;
pub mod server;
pub mod testkit;
pub mod topic;

pub use client::{CallId, Client, ClientConfig, ClientEvent, ClientOutput, ClientState, Reconnect};
pub use config::{Heartbeat, Limits, ServerConfig};
pub use conn::{ConnId, ConnInfo, ConnMeta, Identity};
pub use envelope::Envelope;
pub use error::{CloseCode, ErrorCode, RtmError};
pub use frame::{Args, PushSub, RequestId};
pub use runtime::Runtime;
pub use server::{
    AuthTicket, BrokerCommand, CallTicket, FunctionId, OpenError, Server, ServerOutput,
    SubscribeTicket,
};
pub use topic::Topic;
