//! # rtm-core
//!
//! The RTM wire protocol as a sans-IO state machine: no sockets, no clocks, no
//! async runtime. Adapters (`rtm-tokio`, `rtm-async-std`, through
//! `rtm-driver`; the async seams are crates of their own, `rtm-runtime` and
//! `rtm-broker`) feed it inputs and carry out its outputs; tests drive it directly, jumping time at will.
//! Reach for it to unit-test your routing without sockets, or to write a
//! transport or a runtime binding of your own.
//!
//! ## Two halves, or one
//!
//! The server side comes in two halves, so an adapter can run each
//! connection on its own task with no lock on the call path:
//!
//! - [`Connection`]: one socket's protocol state — the auth phase and its
//!   deadline, requests in flight and their ids, replies, the heartbeat;
//! - [`Router`]: what the connections share — who holds which user and
//!   (event, tag), broker topics, and the fan-out of Emit, Publish and Push
//!   (taking `&self`, so it can sit behind a read-write lock).
//!
//! [`ServerCore`] puts both together behind one `&mut self` API with
//! connection ids: what a deterministic test or a single-threaded host
//! wants (`rtm-driver` uses the halves).
//!
//! ## The drive loop
//!
//! A [`ServerCore`], a [`Connection`] and a [`Client`] are plain `&mut self`
//! structs. Their methods come in four groups, used in this order:
//!
//! 1. **inputs**, `handle_*`: a connection opened, a text frame arrived, a
//!    function finished, a broker message came, time passed
//!    ([`ServerCore::handle_timeout`]);
//! 2. **commands**: [`ServerCore::emit`], [`ServerCore::publish`], [`ServerCore::push`];
//! 3. **outputs**: after every input or command, drain
//!    [`ServerCore::poll_output`] until `None` (frames to send, closes, functions
//!    to run, broker commands);
//! 4. **timer**: sleep until [`ServerCore::poll_timeout`] or the next input,
//!    then call [`ServerCore::handle_timeout`] with the current time.
//!
//! Time is passed in as [`std::time::Instant`] and must never go backwards.
//!
//! ## The seed's flow, without sockets
//!
//! The server emits `alert` to every open connection; the client core
//! receives it as an event for its subscription:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use rtm_core::{Args, Client, ClientConfig, ClientOutput, ConnMeta, ServerCore, ServerConfig, ServerOutput};
//!
//! let now = Instant::now();
//! let mut server = ServerCore::new(ServerConfig::new("server-1"));
//! let conn = server.handle_open(ConnMeta::default(), now).unwrap();
//!
//! // The application's Emit: every connection the filter accepts.
//! let sent = server.emit("alert", |_conn| true, &Args::encode(&("Hello from server!",)).unwrap()).unwrap();
//! assert_eq!(sent, 1);
//! let Some(ServerOutput::Transmit { frame, .. }) = server.poll_output() else { panic!() };
//!
//! // The bytes reach a client core (over a socket, in real life).
//! let mut client = Client::new(ClientConfig::default(), now);
//! client.handle_open(now);
//! client.handle_text(frame, now);
//! let event = std::iter::from_fn(|| client.poll_output()).find_map(|output| match output {
//!     ClientOutput::Event { event, args } => Some((event, args)),
//!     _ => None,
//! });
//! let (event, args) = event.unwrap();
//! let (text,): (String,) = args.deserialize().unwrap();
//! assert_eq!((event.as_str(), text.as_str()), ("alert", "Hello from server!"));
//! ```
//!
//! ## Modules
//!
//! - [`frame`]: parse requests and server frames, encode replies and events;
//! - [`server`]: the [`ServerCore`] state machine, its outputs and tickets;
//! - [`client`]: the [`Client`] state machine (calls, subscriptions,
//!   reconnects, offline queue, heartbeat);
//! - [`config`], [`error`]: limits and their defaults; error codes and close
//!   codes as on the wire (`docs/protocol.md` in the repository lists them);
//! - [`topic`] and [`envelope`]: how events travel between servers on a broker;
//! - `testkit` (feature `testkit`): an in-memory broker and transport to run
//!   clusters in tests, the fixture functions and the wire-vector interpreter.
#![warn(missing_docs)]

mod broker_topics;
pub mod client;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod functions;
pub mod outbound;
pub mod peer;
pub mod positions;
pub mod rate;
pub mod recovery;
pub mod router;
pub mod server;
pub mod stream;
mod sub_queue;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod topic;

pub use broker_topics::TopicChanges;
pub use client::{CallId, Client, ClientConfig, ClientEvent, ClientOutput, ClientState, Reconnect};
pub use config::{Heartbeat, Limits, ServerConfig};
pub use connection::{
    AuthTicket, CallTicket, ConnOutput, Connection, JoinTicket, Settled, SubscribeTicket,
    TimerReason,
};
pub use envelope::Envelope;
pub use error::{CloseCode, ErrorCode, RtmError};
pub use frame::{Args, PushSub, RequestId};
pub use functions::{FunctionId, Functions, SharedLimits};
pub use outbound::{Outbound, OutboundBounds};
pub use peer::{ConnId, ConnInfo, ConnMeta, Identity};
pub use rate::{Rate, RateLimit};
pub use router::{Received, RecentPushes, Router};
pub use server::{BrokerCommand, OpenError, ServerCore, ServerOutput};
pub use stream::{EventPattern, HistoryConfig, StreamOptions, StreamPosition};
pub use topic::Topic;
