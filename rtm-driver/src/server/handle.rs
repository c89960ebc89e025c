//! What a server's tasks share, and the cloneable [`ServerHandle`] over it.
//!
//! The [`Router`] sits behind a read-write lock: Emit, Publish, Push and
//! broker deliveries take it for reading (so they run on several cores at
//! once), a connection joining, subscribing or leaving takes it for
//! writing. Calls take no lock at all: each connection's task runs them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::broker::BrokerState;
use rtm_core::connection::Functions;
use rtm_core::{
    Args, CloseCode, ConnId, ConnInfo, ConnMeta, Connection, Router, RtmError, ServerConfig, Topic,
};
use serde::Serialize;

use crate::function::ErasedFunction;
use crate::runtime::RuntimeRef;
use crate::server::broker_link::{self, BrokerLink};
use crate::server::builder::{AuthHandler, Authorizer, ConnHook, ServerBuilder, TransportOptions};
use crate::server::mailbox::Mailbox;

/// A registered function as the connection tasks run it.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) run: ErasedFunction,
    /// Runs on a task of its own (outliving its connection if it must).
    pub(crate) detached: bool,
}

/// Everything a server's tasks share.
pub(crate) struct Shared {
    router: RwLock<Router<Arc<Mailbox>>>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) functions: Arc<Functions>,
    pub(crate) handlers: Vec<Handler>,
    pub(crate) runtime: RuntimeRef,
    pub(crate) auth: Option<AuthHandler>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) on_connect: Option<ConnHook>,
    pub(crate) on_disconnect: Option<ConnHook>,
    pub(crate) on_auth_timeout: Option<ConnHook>,
    pub(crate) broker: Option<BrokerLink>,
    pub(crate) transport: TransportOptions,
    shutdown_timeout: Duration,
    next_conn: AtomicU64,
    /// Connections admitted and not yet ended (their tasks are running).
    live: AtomicUsize,
    /// Accepted connections still in their TLS or WebSocket handshake.
    pub(crate) handshakes: AtomicUsize,
    /// Handshakes in flight per peer IP (only with `max_handshakes_per_ip`).
    pub(crate) handshakes_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections per peer IP (only with `max_connections_per_ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    shutting_down: AtomicBool,
    shutdown_tx: async_channel::Sender<()>,
    shutdown_rx: async_channel::Receiver<()>,
}

impl Shared {
    pub(crate) fn router(&self) -> RwLockReadGuard<'_, Router<Arc<Mailbox>>> {
        // Router methods do not panic; a poisoned lock still guards consistent state.
        self.router.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn router_mut(&self) -> RwLockWriteGuard<'_, Router<Arc<Mailbox>>> {
        self.router.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Topics to subscribe and unsubscribe on the broker (none without one).
    pub(crate) fn topic_changes(&self, subscribe: &[Topic], unsubscribe: &[Topic]) {
        if let Some(link) = &self.broker {
            link.change(subscribe, unsubscribe);
        }
    }

    /// A connection's task ended.
    pub(crate) fn connection_ended(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts one more connection from `ip`; `false` (nothing counted) at
    /// `max_connections_per_ip`.
    pub(crate) fn admit_ip(&self, ip: IpAddr) -> bool {
        let Some(max) = self.transport.max_connections_per_ip else {
            return true;
        };
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection from `ip` counted by [`Shared::admit_ip`] ended.
    pub(crate) fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Admits a connection: its protocol state and its mailbox, registered
    /// in the router. `Err` with the close to send when it is refused.
    pub(crate) fn open(
        self: &Arc<Self>,
        meta: ConnMeta,
    ) -> Result<(Connection, Arc<Mailbox>), (CloseCode, String)> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err((CloseCode::GOING_AWAY, "server shutting down".into()));
        }
        let max = self.config.limits.max_connections;
        if self.live.fetch_add(1, Ordering::SeqCst) >= max {
            self.live.fetch_sub(1, Ordering::SeqCst);
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
        let mailbox = Arc::new(Mailbox::new(self.config.limits.max_outbound_bytes));
        let open = !self.config.requires_auth();
        self.router_mut()
            .insert(conn.info().clone(), mailbox.clone(), open);
        tracing::debug!(conn = %id, peer = ?conn.info().meta.peer_addr, "connected");
        if let Some(hook) = &self.on_connect {
            call_hook(hook, conn.info());
        }
        Ok((conn, mailbox))
    }
}

/// A running server: cloneable, usable from functions and from outside.
///
/// Emit, Publish and Push take their arguments as anything that serializes
/// to a JSON array (a tuple, a `Vec`, a slice): `("Hello from server!",)`.
/// Each is encoded once and handed to every target connection's task; none
/// waits for a socket.
#[derive(Clone)]
pub struct ServerHandle {
    /// An `Arc` of its own around the shared state: each connection's task
    /// makes one for the functions it runs, so cloning a handle per call
    /// counts on a counter of that connection, not one every core shares.
    #[allow(clippy::redundant_allocation)] // the extra allocation is the point
    pub(crate) shared: Arc<Arc<Shared>>,
}

impl ServerHandle {
    /// A handle of its own for one connection's task (see the field's doc).
    pub(crate) fn for_connection(shared: &Arc<Shared>) -> ServerHandle {
        ServerHandle {
            shared: Arc::new(shared.clone()),
        }
    }

    pub(crate) fn start(builder: ServerBuilder, runtime: RuntimeRef) -> ServerHandle {
        let mut functions = Functions::default();
        let mut handlers = Vec::new();
        let mut named: Vec<_> = builder.functions.into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, handler) in named {
            let id = functions.register(&name);
            debug_assert_eq!(id.0 as usize, handlers.len());
            handlers.push(handler);
        }
        let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
        let broker = builder.broker.map(|broker| {
            BrokerLink::new(broker, builder.broker_backlog, builder.broker_backlog_bytes)
        });
        let shared = Arc::new(Shared {
            router: RwLock::new(Router::new(&builder.config)),
            config: Arc::new(builder.config),
            functions: Arc::new(functions),
            handlers,
            runtime,
            auth: builder.auth,
            authorizer: builder.authorizer,
            on_connect: builder.on_connect,
            on_disconnect: builder.on_disconnect,
            on_auth_timeout: builder.on_auth_timeout,
            broker,
            transport: builder.transport,
            shutdown_timeout: builder.shutdown_timeout,
            next_conn: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            handshakes_per_ip: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            shutdown_rx,
        });
        broker_link::start(&shared);
        ServerHandle {
            shared: Arc::new(shared),
        }
    }

    // ----- sending -----

    /// Emit: sends `event` to every connection on this server that `filter`
    /// accepts (only authenticated ones on a server with auth). Returns how many.
    ///
    /// The event is encoded once; every connection gets the same bytes.
    /// `filter` runs under the router's read lock, once per connection: keep
    /// it a quick test of [`ConnInfo`] that does not change the server's
    /// connections (subscribing or closing from it would wait on that lock).
    pub fn emit<A: Serialize + ?Sized>(
        &self,
        event: &str,
        filter: impl FnMut(&ConnInfo) -> bool,
        args: &A,
    ) -> Result<usize, RtmError> {
        self.emit_args(event, filter, &Args::encode(args)?)
    }

    /// Publish: sends `event` to every connection of `user` on every server
    /// sharing the broker. Needs a server with authentication; fails with
    /// `rtm/broker-unavailable` (nothing sent) while the broker is down or
    /// its backlog is full. Returns the number of local deliveries.
    pub fn publish<A: Serialize + ?Sized>(
        &self,
        user: &str,
        event: &str,
        args: &A,
    ) -> Result<usize, RtmError> {
        self.publish_args(user, event, &Args::encode(args)?)
    }

    /// Push: sends `event` once to every connection, on every server,
    /// subscribed to `event` with at least one of `tags`. Returns the number
    /// of local deliveries.
    pub fn push<A: Serialize + ?Sized>(
        &self,
        event: &str,
        tags: &[String],
        args: &A,
    ) -> Result<usize, RtmError> {
        self.push_args(event, tags, &Args::encode(args)?)
    }

    /// [`ServerHandle::emit`] with arguments already encoded.
    pub fn emit_args(
        &self,
        event: &str,
        filter: impl FnMut(&ConnInfo) -> bool,
        args: &Args,
    ) -> Result<usize, RtmError> {
        self.shared
            .router()
            .emit(event, filter, args, |_, mailbox, frame| {
                mailbox.deliver(frame)
            })
    }

    /// [`ServerHandle::publish`] with arguments already encoded.
    pub fn publish_args(&self, user: &str, event: &str, args: &Args) -> Result<usize, RtmError> {
        if let Some(link) = &self.shared.broker {
            link.check_backlog()?;
        }
        let (sent, publish) =
            self.shared
                .router()
                .publish(user, event, args, |_, mailbox, frame| {
                    mailbox.deliver(frame)
                })?;
        if let (Some(link), Some(publish)) = (&self.shared.broker, publish) {
            link.publish(publish);
        }
        Ok(sent)
    }

    /// [`ServerHandle::push`] with arguments already encoded.
    pub fn push_args(&self, event: &str, tags: &[String], args: &Args) -> Result<usize, RtmError> {
        if let Some(link) = &self.shared.broker {
            link.check_backlog()?;
        }
        let (sent, publishes) =
            self.shared
                .router()
                .push(event, tags, args, |_, mailbox, frame| {
                    mailbox.deliver(frame)
                })?;
        if let Some(link) = &self.shared.broker {
            for publish in publishes {
                link.publish(publish);
            }
        }
        Ok(sent)
    }

    /// Publishes waiting to be handed to the broker (0 without one); see
    /// [`ServerBuilder::broker_backlog`].
    pub fn broker_backlog_len(&self) -> usize {
        self.shared
            .broker
            .as_ref()
            .map_or(0, BrokerLink::backlog_len)
    }

    /// Bytes of publishes waiting for the broker: queued, or handed to it
    /// and not yet answered (0 without one); see
    /// [`ServerBuilder::broker_backlog_bytes`].
    pub fn broker_backlog_bytes(&self) -> usize {
        self.shared
            .broker
            .as_ref()
            .map_or(0, BrokerLink::backlog_bytes)
    }

    /// The runtime the server runs on (to sleep or spawn from a function).
    pub fn runtime(&self) -> &RuntimeRef {
        &self.shared.runtime
    }

    /// Closes one connection with this code and reason (its task writes the
    /// close after what is already queued).
    pub fn close_connection(&self, conn: ConnId, code: CloseCode, reason: &'static str) {
        if let Some(mailbox) = self.shared.router().handle(conn) {
            mailbox.close(code, reason);
        }
    }

    // ----- getters -----

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.shared.router().connection_count()
    }

    /// A snapshot of every connection's info.
    pub fn connections(&self) -> Vec<Arc<ConnInfo>> {
        self.shared.router().connections().cloned().collect()
    }

    /// The broker topics this server needs now (empty without a broker).
    pub fn broker_topics(&self) -> Vec<Topic> {
        self.shared.router().topics().cloned().collect()
    }

    /// The broker's state; `None` without a broker.
    pub fn broker_state(&self) -> Option<BrokerState> {
        self.shared.broker.as_ref().map(|link| link.broker.state())
    }

    /// Broker operations that failed so far.
    pub fn broker_errors(&self) -> u64 {
        self.shared
            .broker
            .as_ref()
            .map_or(0, |link| link.errors.load(Ordering::Relaxed))
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Socket-side options (path, buffers, timeouts) for adapters.
    pub fn transport(&self) -> &TransportOptions {
        &self.shared.transport
    }

    /// Whether [`ServerHandle::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// Completes when shutdown begins (for accept loops).
    pub async fn shutdown_started(&self) {
        // The channel is closed, never written: recv completes with Err then.
        let _ = self.shared.shutdown_rx.recv().await;
    }

    /// Graceful shutdown: stop accepting; each connection stops reading new
    /// requests, finishes those in flight and closes with 1001 (after the
    /// shutdown timeout, whatever is still running is closed anyway); then
    /// waits (at most the close grace) for the connections' tasks to end.
    pub async fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            tracing::debug!("shutdown already begun");
        } else {
            tracing::info!(
                connections = self.connection_count(),
                "shutting down: in-flight calls finish, then every connection closes with 1001"
            );
        }
        self.shared.shutdown_tx.close();
        self.each_mailbox(Mailbox::drain);
        let transport = &self.shared.transport;
        if !self.wait_ended(self.shared.shutdown_timeout).await {
            self.each_mailbox(|mailbox| {
                mailbox.close(CloseCode::GOING_AWAY, "server shutting down")
            });
            self.wait_ended(transport.close_grace).await;
        }
    }

    fn each_mailbox(&self, f: impl Fn(&Mailbox)) {
        let mailboxes: Vec<Arc<Mailbox>> = {
            let router = self.shared.router();
            router
                .connections()
                .filter_map(|info| router.handle(info.id).cloned())
                .collect()
        };
        for mailbox in &mailboxes {
            f(mailbox);
        }
    }

    /// Waits up to `limit` for every connection's task to end.
    async fn wait_ended(&self, limit: Duration) -> bool {
        let runtime = &self.shared.runtime;
        let deadline = runtime.now() + limit;
        loop {
            if self.shared.live.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if runtime.now() >= deadline {
                return false;
            }
            self.shared.runtime.sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Calls an application hook; a panic in it is logged, never spread into
/// the connection task that happened to run it.
pub(crate) fn call_hook(hook: &ConnHook, info: &ConnInfo) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| hook(info))).is_err() {
        tracing::error!(conn = %info.id, "a connection hook panicked");
    }
}
