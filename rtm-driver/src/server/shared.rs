//! What a server's tasks share: [`Shared`], and the application's handlers
//! and hooks as the connection tasks call them.
//!
//! Calls take no lock: each connection's task runs them. The router sits in
//! [`Routing`] (a read-write lock whose write guard carries out what the
//! router decided); the broker, if any, behind its [`BrokerLink`].

use std::any::Any;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::Duration;

use rtm_core::Functions;
use rtm_core::{
    Args, CloseCode, ConnId, ConnInfo, ConnMeta, Connection, Identity, OutboundBounds, Router,
    RtmError, ServerConfig, SharedLimits,
};

use crate::function::{ErasedFunction, SubscribeRequest};
use crate::metrics::Metrics;
use crate::runtime::{BoxFuture, RuntimeRef};
use crate::server::broker_link::BrokerLink;
use crate::server::mailbox::Mailbox;
use crate::server::options::TransportOptions;
use crate::server::per_ip::PerIpLimit;
use crate::server::routing::{RouterMut, Routing};

/// Turns the `auth` request's `data` array into an identity, or rejects it.
pub(crate) type AuthHandler =
    Arc<dyn Fn(Arc<ConnInfo>, Args) -> BoxFuture<Result<Identity, RtmError>> + Send + Sync>;

/// Decides whether a connection may hold a push subscription (event, tags).
pub(crate) type Authorizer =
    Arc<dyn Fn(SubscribeRequest) -> BoxFuture<Result<(), RtmError>> + Send + Sync>;

/// A connection lifecycle hook. It runs on the connection's own task, under
/// no lock: it may call the server (emit, publish, …); keep it quick, as the
/// connection waits for it.
pub type ConnHook = Arc<dyn Fn(&ConnInfo) + Send + Sync>;

/// A registered function as the connection tasks run it.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) run: ErasedFunction,
    /// Runs on a task of its own (outliving its connection if it must).
    pub(crate) detached: bool,
}

/// Everything a server's tasks share.
pub(crate) struct Shared {
    pub(crate) routing: Arc<Routing>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) functions: Arc<Functions>,
    /// Limits counted across connections (per user, sign-ins per address);
    /// `None` without any, so calls take no lock for them.
    pub(crate) limits: Option<Mutex<SharedLimits>>,
    pub(crate) handlers: Vec<Registered>,
    /// The application's state ([`ServerBuilder::with_state`](crate::ServerBuilder::with_state)).
    pub(crate) state: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) runtime: RuntimeRef,
    pub(crate) auth: Option<AuthHandler>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) on_connect: Option<ConnHook>,
    pub(crate) on_disconnect: Option<ConnHook>,
    pub(crate) on_auth_timeout: Option<ConnHook>,
    pub(crate) broker: Option<Arc<BrokerLink>>,
    pub(crate) transport: TransportOptions,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) next_conn: AtomicU64,
    /// Connections admitted and not yet ended (their tasks are running).
    pub(crate) live: AtomicUsize,
    /// Accepted connections still in their TLS or WebSocket handshake.
    pub(crate) handshakes: AtomicUsize,
    /// Handshakes in flight per peer IP (with `max_handshakes_per_ip`).
    pub(crate) handshakes_per_ip: Option<PerIpLimit>,
    /// Connections per peer IP (with `max_connections_per_ip`).
    pub(crate) per_ip: Option<PerIpLimit>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown_tx: async_channel::Sender<()>,
    pub(crate) shutdown_rx: async_channel::Receiver<()>,
    /// The server's instruments (`crate::metrics`).
    pub(crate) metrics: Arc<Metrics>,
}

impl Shared {
    /// The router, for fan-out and getters.
    pub(crate) fn router(&self) -> RwLockReadGuard<'_, Router<Arc<Mailbox>>> {
        self.routing.read()
    }

    /// The router, to change it (what it settles reaches the connections
    /// when the guard is dropped).
    pub(crate) fn router_mut(&self) -> RouterMut<'_> {
        self.routing.write()
    }

    /// A connection's task ended.
    pub(crate) fn connection_ended(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts one more connection from `ip`; `false` (nothing counted) at
    /// `max_connections_per_ip`.
    pub(crate) fn admit_ip(&self, ip: IpAddr) -> bool {
        self.per_ip.as_ref().is_none_or(|limit| limit.count(ip))
    }

    /// A connection from `ip` counted by [`Shared::admit_ip`] ended.
    pub(crate) fn release_ip(&self, ip: IpAddr) {
        if let Some(limit) = &self.per_ip {
            limit.release(ip);
        }
    }

    /// Admits a connection: its protocol state and its mailbox, registered
    /// in the router. `Err` with the close to send when it is refused.
    pub(crate) fn open(
        self: &Arc<Self>,
        meta: ConnMeta,
    ) -> Result<(Connection, Arc<Mailbox>), (CloseCode, String)> {
        if self.shutting_down.load(Ordering::SeqCst) {
            self.metrics.connection_refused();
            return Err((CloseCode::GOING_AWAY, "server shutting down".into()));
        }
        let max = self.config.limits.max_connections;
        if self.live.fetch_add(1, Ordering::SeqCst) >= max {
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.metrics.connection_refused();
            tracing::warn!(max, "connection refused: too many connections");
            return Err((
                CloseCode::TRY_AGAIN_LATER,
                format!("too many connections (limit {max})"),
            ));
        }
        let id = ConnId::from_u64(self.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
        let conn = Connection::new(
            id,
            meta,
            self.config.clone(),
            self.functions.clone(),
            self.runtime.now(),
        );
        let mailbox = Arc::new(Mailbox::new(OutboundBounds::of(&self.config.limits)));
        let open = !self.config.requires_auth();
        self.router_mut()
            .insert(conn.info().clone(), mailbox.clone(), open);
        self.metrics.connection_opened(open);
        tracing::debug!(conn = %id, peer = ?conn.info().meta.peer_addr, "connected");
        if let Some(hook) = &self.on_connect {
            call_hook(hook, conn.info());
        }
        Ok((conn, mailbox))
    }
}

/// Calls an application hook; a panic in it is logged, never spread into
/// the connection task that happened to run it.
pub(crate) fn call_hook(hook: &ConnHook, info: &ConnInfo) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| hook(info))).is_err() {
        tracing::error!(conn = %info.id, "a connection hook panicked");
    }
}
