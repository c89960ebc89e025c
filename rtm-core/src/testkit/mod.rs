//! In-memory broker and transport, so whole clusters run inside a test without sockets.
pub mod fixture;
