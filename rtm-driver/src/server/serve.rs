//! Where connections come in: an accepted TCP stream (TLS if configured,
//! then the WebSocket handshake, then the connection's task), a stream
//! already upgraded, or the two halves of a socket another library upgraded.

use std::net::{IpAddr, SocketAddr};

use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{AsyncReadExt, AsyncWriteExt, Sink, SinkExt, Stream};
use rtm_core::ConnMeta;

use crate::io::BoxIo;
use crate::messages::{Incoming, Outgoing};
use crate::runtime::timeout;
use crate::server::connection::ConnectionDriver;
use crate::server::handle::ServerHandle;
use crate::server::socket::Messages;
use crate::websocket::handshake::{read_request, Handshake, HandshakePolicy};
use crate::websocket::stream::WebSocketIo;

/// Bytes read per syscall while the handshake request comes in.
const HANDSHAKE_CHUNK: usize = 1024;
/// Bytes read and discarded after a refused handshake, at most.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

impl ServerHandle {
    /// Serves one accepted TCP connection: TLS first when the server has it,
    /// then the WebSocket handshake (a request that is not a valid upgrade
    /// gets its HTTP answer: 400, 403, 404, 426 or 431), then the connection
    /// on a task of its own. TLS and the handshake share one deadline, the
    /// handshake timeout. Returns once the connection's task is spawned (or
    /// the handshake failed).
    ///
    /// Two bounds apply here (see [`TransportOptions`](crate::TransportOptions)):
    /// `max_handshakes` (past it the socket is closed at once) and
    /// `max_connections_per_ip` (past it: `429 Too Many Requests`).
    pub async fn accept(&self, io: BoxIo, peer: SocketAddr) {
        let shared = &self.shared;
        let _handshake = match HandshakeSlot::take(shared, peer.ip()) {
            Ok(slot) => slot,
            Err(SlotRefused::Everywhere) => {
                tracing::debug!(%peer, "too many handshakes in flight: closed at once");
                shared.metrics.handshake_rejected(None);
                return;
            }
            Err(SlotRefused::ThisAddress) => {
                shared.metrics.handshake_rejected(Some(429));
                return too_many(io, peer, "too many handshakes from this address").await;
            }
        };
        let ip = shared.transport.max_connections_per_ip.map(|_| peer.ip());
        if let Some(ip) = ip {
            if !shared.admit_ip(ip) {
                shared.metrics.handshake_rejected(Some(429));
                return too_many(io, peer, "too many connections from this address").await;
            }
        }
        let limit = shared.transport.handshake_timeout;
        let runtime = shared.runtime.clone();
        let upgraded = timeout(&*runtime, limit, self.handshake(io, peer)).await;
        let spawned = match upgraded {
            Some(Some((io, rest, meta))) => self.spawn_upgraded(io, &rest, meta, ip),
            Some(None) => false,
            None => {
                tracing::debug!(%peer, "handshake timed out");
                false
            }
        };
        if let (Some(ip), false) = (ip, spawned) {
            shared.release_ip(ip);
        }
    }

    async fn handshake(&self, io: BoxIo, peer: SocketAddr) -> Option<(BoxIo, Vec<u8>, ConnMeta)> {
        #[cfg(feature = "tls")]
        let io = match &self.shared.transport.tls {
            Some(tls) => {
                let acceptor = futures_rustls::TlsAcceptor::from(tls.rustls_config());
                // Boxed: a plain connection's accept task does not carry TLS's state.
                match Box::pin(acceptor.accept(io)).await {
                    Ok(stream) => Box::new(stream) as BoxIo,
                    Err(err) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return None;
                    }
                }
            }
            None => io,
        };
        let transport = &self.shared.transport;
        let policy = HandshakePolicy {
            path: transport.path.clone(),
            origins: transport.allowed_origins.clone(),
            max_request_bytes: transport.max_handshake_bytes,
        };
        upgrade(io, peer, &policy, self).await
    }

    /// Serves a stream whose WebSocket handshake is done, on a task of its
    /// own; `already_read` holds the bytes read past the handshake request.
    pub fn serve_upgraded(&self, io: BoxIo, already_read: &[u8], meta: ConnMeta) {
        self.spawn_upgraded(io, already_read, meta, None);
    }

    /// `true` when the connection's task was spawned (it then holds `ip`'s count).
    fn spawn_upgraded(
        &self,
        io: BoxIo,
        already_read: &[u8],
        meta: ConnMeta,
        ip: Option<std::net::IpAddr>,
    ) -> bool {
        let Some(driver) = self.upgraded_driver(io, already_read, meta) else {
            return false;
        };
        // Its peer address (the one counted) is in the connection's meta.
        self.shared
            .runtime
            .spawn(Box::pin(driver.holding_ip(ip.is_some())));
        true
    }

    fn upgraded_driver(
        &self,
        io: BoxIo,
        already_read: &[u8],
        meta: ConnMeta,
    ) -> Option<ConnectionDriver<WebSocketIo<BoxIo>>> {
        let max = self.shared.config.limits.max_frame_bytes;
        let mut ws = WebSocketIo::new(io, already_read, max);
        match self.shared.open(meta) {
            Ok((conn, mailbox)) => Some(ConnectionDriver::new(
                (*self.shared).clone(),
                conn,
                ws,
                mailbox,
            )),
            Err((code, reason)) => {
                ws.queue_close(code.0, &reason);
                let grace = self.shared.transport.close_grace;
                let runtime = self.shared.runtime.clone();
                self.shared.runtime.spawn(Box::pin(async move {
                    let flushed = std::future::poll_fn(|cx| ws.poll_flush(cx));
                    let _ = timeout(&*runtime, grace, flushed).await;
                }));
                None
            }
        }
    }

    /// Serves one WebSocket upgraded by another library (axum, a
    /// tungstenite stream of your own), given as a stream of [`Incoming`]
    /// and a sink of [`Outgoing`], until it closes. That library answers
    /// pings and owns the close handshake.
    pub async fn serve<In, Out>(&self, incoming: In, mut outgoing: Out, meta: ConnMeta)
    where
        In: Stream<Item = Incoming> + Unpin + Send,
        Out: Sink<Outgoing> + Unpin + Send,
    {
        match self.shared.open(meta) {
            Ok((conn, mailbox)) => {
                let transport = Messages::new(incoming, outgoing);
                ConnectionDriver::new((*self.shared).clone(), conn, transport, mailbox).await;
            }
            Err((code, reason)) => {
                let _ = outgoing.send(Outgoing::Close(code, reason)).await;
            }
        }
    }
}

/// Answers `429 Too Many Requests` (with `reason`) and closes.
async fn too_many(mut io: BoxIo, peer: SocketAddr, reason: &'static str) {
    tracing::debug!(%peer, reason, "refused");
    let refusal = crate::websocket::handshake::Rejection {
        status: 429,
        reason,
    };
    let _ = io.write_all(&refusal.response()).await;
    let _ = io.close().await;
}

/// One of the `max_handshakes` slots (and of its address's
/// `max_handshakes_per_ip`), given back when dropped.
struct HandshakeSlot<'a> {
    shared: &'a crate::server::shared::Shared,
    /// Counted in `handshakes_per_ip`.
    _ip: Option<crate::server::per_ip::IpPermit>,
}

/// Why no handshake slot was given.
enum SlotRefused {
    /// `max_handshakes` are in flight.
    Everywhere,
    /// `max_handshakes_per_ip` are in flight from this address.
    ThisAddress,
}

impl<'a> HandshakeSlot<'a> {
    fn take(shared: &'a crate::server::shared::Shared, ip: IpAddr) -> Result<Self, SlotRefused> {
        use std::sync::atomic::Ordering;
        let max = shared.transport.max_handshakes;
        if shared.handshakes.fetch_add(1, Ordering::SeqCst) >= max {
            shared.handshakes.fetch_sub(1, Ordering::SeqCst);
            return Err(SlotRefused::Everywhere);
        }
        // From here the global slot is held: dropping `slot` gives it back.
        let mut slot = HandshakeSlot { shared, _ip: None };
        if let Some(limit) = &shared.handshakes_per_ip {
            slot._ip = Some(limit.admit(ip).ok_or(SlotRefused::ThisAddress)?);
        }
        Ok(slot)
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.shared
            .handshakes
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads the handshake request and answers it: `Some` with the stream, the
/// bytes after the request and the connection's metadata once upgraded.
async fn upgrade<IO>(
    mut io: IO,
    peer: SocketAddr,
    policy: &HandshakePolicy,
    server: &ServerHandle,
) -> Option<(IO, Vec<u8>, ConnMeta)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let filled = buf.len();
        buf.resize(filled + HANDSHAKE_CHUNK, 0);
        let n = match io.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        buf.truncate(filled + n);
        match read_request(&buf, policy) {
            Handshake::Incomplete => continue,
            Handshake::Upgrade(request, used) => {
                if io.write_all(&request.accept()).await.is_err() {
                    return None;
                }
                let meta = ConnMeta {
                    peer_addr: Some(peer),
                    path: Some(request.target.clone()),
                };
                buf.drain(..used);
                return Some((io, buf, meta));
            }
            Handshake::Reject(rejection) => {
                tracing::debug!(%peer, %rejection, "handshake refused");
                server
                    .shared
                    .metrics
                    .handshake_rejected(Some(rejection.status));
                let _ = io.write_all(&rejection.response()).await;
                let _ = io.close().await;
                // Read what the client still sends, so closing does not reset
                // the connection under the answer before the client reads it.
                let drain = async {
                    let mut left = REFUSAL_DRAIN_BYTES;
                    buf.resize(HANDSHAKE_CHUNK, 0);
                    while left > 0 {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                };
                let grace = server.shared.transport.close_grace;
                let _ = timeout(&*server.shared.runtime, grace, drain).await;
                return None;
            }
        }
    }
}
