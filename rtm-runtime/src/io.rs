//! The byte streams the server's WebSocket runs on: anything that is
//! [`futures_io::AsyncRead`] + [`futures_io::AsyncWrite`] — a TCP stream of
//! any runtime (tokio's through a small wrapper), a TLS stream, an
//! in-memory pipe in a test.

use futures_io::{AsyncRead, AsyncWrite};

/// A byte stream a connection can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`]: every connection task has the same type (and size)
/// whatever its stream is, plain or TLS.
pub type BoxIo = Box<dyn Io>;
