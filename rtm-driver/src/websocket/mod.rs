//! The server's own WebSocket transport (RFC 6455), written once for every
//! runtime: the opening handshake ([`handshake`]) and the framing
//! ([`codec`]) are sans-IO; [`stream`] runs them over any byte stream.
//!
//! Why not a WebSocket library's stream: the server must answer a bad
//! handshake with an HTTP status (not silence), serve the bytes that came in
//! the same packet as the upgrade request, echo a client's close, send the
//! close code a fault earns (1002, 1007, 1009) and then keep reading up to
//! the peer's close (a lingering close, so the kernel does not reset the
//! socket under the close frame), hold at most one pong, and bound what it
//! queues for a peer in bytes. Each of those needs the bytes.

pub(crate) mod codec;
pub(crate) mod handshake;
pub(crate) mod stream;
