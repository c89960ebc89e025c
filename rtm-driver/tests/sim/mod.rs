//! A deterministic simulation harness for the server driver: the real
//! `ConnectionDriver`, reached through `ServerHandle::accept`, run on a
//! single-threaded executor with a virtual clock, over in-memory sockets,
//! against peers the simulation drives. No real socket, thread or clock.
//!
//! - [`rng`]: the seeded xorshift every random choice comes from;
//! - [`executor`]: [`executor::Sim`], the executor and virtual clock (it
//!   implements `rtm_driver::rt::Runtime`: spawn, sleep, now), whose seeded RNG
//!   picks which ready task runs next;
//! - [`pipe`]: in-memory duplex sockets, each direction a bounded byte
//!   buffer (a full one makes the writer wait, a read wakes it);
//! - [`peer`]: WebSocket clients written byte by byte (handshake, masked
//!   frames out, server frames parsed) that read by a policy (never, in
//!   bursts, as fast as they can) and record what arrives and when;
//! - [`capture`]: the server's own `closing` log lines, caught on this
//!   thread, for the close code of a peer whose socket never took the
//!   close frame.
//!
//! A run is replayed exactly by its seed: the same seed gives the same
//! interleaving, the same virtual times and the same outcome.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub(crate) mod capture;
pub(crate) mod executor;
pub(crate) mod peer;
pub(crate) mod pipe;
pub(crate) mod rng;
