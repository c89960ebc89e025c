//! The socket side of a server: [`TransportOptions`].

use std::time::Duration;

use crate::websocket::handshake::AllowedOrigins;

/// The socket side of a server: how connections are accepted, upgraded,
/// written and closed.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// The WebSocket path served (default `/`); other paths get 404.
    pub path: String,
    /// Which browser origins may connect (default: any; see
    /// [`AllowedOrigins`]). Others get 403 before the upgrade.
    pub allowed_origins: AllowedOrigins,
    /// The largest handshake request (request line and headers) read, in
    /// bytes (default 8 KiB); larger gets 431.
    pub max_handshake_bytes: usize,
    /// Connections from one IP address at once, counting those still in
    /// their TLS or WebSocket handshake (default: no limit; usually a proxy
    /// enforces this). Past it, a new connection from that address gets
    /// `429 Too Many Requests`. Applies to the adapter's own listener.
    pub max_connections_per_ip: Option<usize>,
    /// Connections in their TLS or WebSocket handshake at once (default
    /// 4,096). Handshakes do not count toward `max_connections`; this bounds
    /// what sockets that connect and stay silent can hold. Past it, a new
    /// connection is closed at once. Applies to the adapter's own listener.
    pub max_handshakes: usize,
    /// Connections from one IP address in their TLS or WebSocket handshake
    /// at once (default 256; `None`: no limit of its own). Keeps one
    /// address from holding every one of the `max_handshakes` slots with
    /// sockets that connect and stay silent. Through a reverse proxy
    /// (every peer the proxy's address) a handshake arrives whole and takes
    /// well under a millisecond, so 256 at once means a quarter of a
    /// million new connections a second. Past it, a new connection from
    /// that address gets `429 Too Many Requests`. Applies to the adapter's
    /// own listener.
    pub max_handshakes_per_ip: Option<usize>,
    /// The listening socket's accept queue: connections the kernel completes
    /// before the accept loop takes them (default 1,024; Linux caps it at
    /// `net.core.somaxconn`). A burst of reconnecting clients larger than it
    /// sees SYNs dropped and retried a second later. Applies to the
    /// adapter's own listener.
    pub listen_backlog: u32,
    /// After the server sent a close frame, how many bytes it reads (and
    /// discards) waiting for the peer's close before giving up (default 16
    /// MiB): enough for a peer to finish sending an oversized message and
    /// then read the 1009, bounded so a peer cannot keep a closing
    /// connection busy.
    pub close_drain_bytes: usize,
    /// How long a connection's writer waits, after its first queued frame,
    /// for more frames to send in the same socket write (default zero: one
    /// scheduler pass, no timer). See [`ServerBuilder::write_delay`](crate::ServerBuilder::write_delay).
    pub write_delay: Duration,
    /// After the server sent a close frame, how long it keeps the socket for
    /// the peer to read up to the close and answer it (default 2 s); a peer
    /// that does neither is dropped then. Graceful shutdown waits as long.
    pub close_grace: Duration,
    /// How long a new connection on the adapter's listener may take to
    /// finish its handshakes (TLS, if any, and the WebSocket upgrade) before
    /// it is dropped (default 10 s): a peer that connects and sends nothing
    /// holds a socket no longer than this.
    pub handshake_timeout: Duration,
    /// TLS on the adapter's listener (`wss://`); `None` (default): plain `ws://`.
    /// Sockets upgraded elsewhere (`serve_websocket`, axum) bring their own.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            path: "/".into(),
            allowed_origins: AllowedOrigins::Any,
            max_handshake_bytes: 8 * 1024,
            close_drain_bytes: 16 * 1024 * 1024,
            max_connections_per_ip: None,
            max_handshakes: 4096,
            max_handshakes_per_ip: Some(256),
            listen_backlog: 1024,
            write_delay: Duration::ZERO,
            handshake_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(2),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
