//! The cloneable [`ServerHandle`]: a running server as functions and the
//! application see it (sending, getters, shutdown).

use crate::metrics::SendKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rtm_core::{Args, CloseCode, ConnId, ConnInfo, ErrorCode, RtmError, ServerConfig, Topic};
use serde::Serialize;

use crate::broker::BrokerState;
use crate::runtime::RuntimeRef;
use crate::server::broker_link::unix_millis;
use crate::server::mailbox::Mailbox;
use crate::server::options::TransportOptions;
use crate::server::shared::Shared;

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

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("server_id", &self.shared.config.server_id)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// A handle of its own for one connection's task (see the field's doc).
    pub(crate) fn for_connection(shared: &Arc<Shared>) -> ServerHandle {
        ServerHandle {
            shared: Arc::new(shared.clone()),
        }
    }

    pub(crate) fn new(shared: Arc<Shared>) -> ServerHandle {
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
        let sent = self
            .shared
            .router()
            .emit(event, filter, args, |_, mailbox, frame| {
                mailbox.deliver(frame)
            })?;
        self.shared.metrics.sent(SendKind::Emit, sent);
        Ok(sent)
    }

    /// [`ServerHandle::publish`] with arguments already encoded.
    pub fn publish_args(&self, user: &str, event: &str, args: &Args) -> Result<usize, RtmError> {
        if let Some(link) = &self.shared.broker {
            link.check_backlog()?;
        }
        let sent_at = self.shared.broker.as_ref().map(|_| unix_millis());
        let (sent, publish) =
            self.shared
                .router()
                .publish(user, event, args, sent_at, |_, mailbox, frame| {
                    mailbox.deliver(frame)
                })?;
        if let (Some(link), Some(publish)) = (&self.shared.broker, publish) {
            link.publish(publish);
        }
        self.shared.metrics.sent(SendKind::Publish, sent);
        Ok(sent)
    }

    /// [`ServerHandle::push`] with arguments already encoded.
    pub fn push_args(&self, event: &str, tags: &[String], args: &Args) -> Result<usize, RtmError> {
        if let Some(link) = &self.shared.broker {
            link.check_backlog()?;
        }
        let sent_at = self.shared.broker.as_ref().map(|_| unix_millis());
        let (sent, publishes) =
            self.shared
                .router()
                .push(event, tags, args, sent_at, |_, mailbox, frame| {
                    mailbox.deliver(frame)
                })?;
        if let Some(link) = &self.shared.broker {
            for publish in publishes {
                link.publish(publish);
            }
        }
        self.shared.metrics.sent(SendKind::Push, sent);
        Ok(sent)
    }

    /// Publishes waiting to be handed to the broker (0 without one); see
    /// [`ServerBuilder::broker_backlog`](crate::ServerBuilder::broker_backlog).
    pub fn broker_backlog_len(&self) -> usize {
        self.shared
            .broker
            .as_ref()
            .map_or(0, |link| link.backlog_len())
    }

    /// Bytes of publishes waiting for the broker: queued, or handed to it
    /// and not yet answered (0 without one); see
    /// [`ServerBuilder::broker_backlog_bytes`](crate::ServerBuilder::broker_backlog_bytes).
    pub fn broker_backlog_bytes(&self) -> usize {
        self.shared
            .broker
            .as_ref()
            .map_or(0, |link| link.backlog_bytes())
    }

    /// The application's state of type `S`
    /// ([`ServerBuilder::with_state`](crate::ServerBuilder::with_state));
    /// `rtm/internal` when the server has none of that type.
    pub fn state<S: Send + Sync + 'static>(&self) -> Result<&S, RtmError> {
        crate::function::downcast_state(self.shared.state.as_deref())
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

    /// The kept events of the Push stream (`event`, `tag`), from offset
    /// `from` on, oldest first, at most `limit` (at most 10,000), with the
    /// stream's position now (`docs/history.md`).
    ///
    /// Errors: `rtm/bad-request` when `event` keeps no history on this
    /// server ([`ServerBuilder::history`](crate::ServerBuilder::history),
    /// with a broker that keeps it); `rtm/broker-unavailable` when the
    /// broker cannot be read now.
    pub async fn push_history(
        &self,
        event: &str,
        tag: &str,
        from: u64,
        limit: usize,
    ) -> Result<rtm_core::recovery::HistoryPage, RtmError> {
        let topic = Topic::push(&self.shared.config.namespace, event, tag);
        self.read_history(event, topic, from, limit).await
    }

    /// The kept events of `user`'s Publish stream of `event`'s kind, as
    /// [`ServerHandle::push_history`] (a user's stream holds every event
    /// with history published to that user).
    pub async fn publish_history(
        &self,
        user: &str,
        event: &str,
        from: u64,
        limit: usize,
    ) -> Result<rtm_core::recovery::HistoryPage, RtmError> {
        let topic = Topic::user(&self.shared.config.namespace, user);
        self.read_history(event, topic, from, limit).await
    }

    async fn read_history(
        &self,
        event: &str,
        topic: Topic,
        from: u64,
        limit: usize,
    ) -> Result<rtm_core::recovery::HistoryPage, RtmError> {
        const MAX_LIMIT: usize = 10_000;
        let options = self.shared.config.history.options_for(event).copied();
        let (Some(options), Some(link)) = (options, self.shared.broker.as_ref()) else {
            return Err(RtmError::bad_request(format!(
                "'{event}' keeps no history on this server"
            )));
        };
        let read = link
            .broker
            .read_stream(&topic, from, limit.min(MAX_LIMIT), options)
            .await
            .map_err(|e| RtmError::new(ErrorCode::BrokerUnavailable, e.to_string()))?;
        rtm_core::recovery::HistoryPage::decode(read.top, read.envelopes)
            .map_err(|e| RtmError::internal(format!("the broker's history is not understood: {e}")))
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
