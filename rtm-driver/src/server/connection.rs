//! One connection's life: open it in the core, read frames into it, write
//! its outbound queue to the socket, and close it cleanly.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::future::{select, Either};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rtm_core::{CloseCode, ConnMeta};

use crate::runtime::timeout;
use crate::server::handle::{call_hook, ConnSender, ServerHandle};
use crate::transport::{Incoming, Outgoing};

impl ServerHandle {
    /// Serves one WebSocket connection until it closes. `incoming` and
    /// `outgoing` are the two halves of an already-upgraded WebSocket,
    /// mapped to [`Incoming`] / [`Outgoing`] by the adapter.
    ///
    /// Everything it logs is inside a `rtm.conn` tracing span carrying the peer address.
    pub async fn serve<In, Out>(&self, incoming: In, outgoing: Out, meta: ConnMeta)
    where
        In: Stream<Item = Incoming> + Unpin + Send,
        Out: Sink<Outgoing> + Unpin + Send,
    {
        use tracing::Instrument;
        let span =
            tracing::info_span!("rtm.conn", peer = ?meta.peer_addr, conn = tracing::field::Empty);
        self.serve_inner(incoming, outgoing, meta, span.clone())
            .instrument(span)
            .await;
    }

    async fn serve_inner<In, Out>(
        &self,
        mut incoming: In,
        mut outgoing: Out,
        meta: ConnMeta,
        span: tracing::Span,
    ) where
        In: Stream<Item = Incoming> + Unpin + Send,
        Out: Sink<Outgoing> + Unpin + Send,
    {
        let shared = &self.shared;
        if self.is_shutting_down() {
            let _ = outgoing
                .send(Outgoing::Close(
                    CloseCode::GOING_AWAY.0,
                    "server shutting down".into(),
                ))
                .await;
            return;
        }
        // Unbounded channel, bounded by hand in `drain`: a bounded async-channel
        // preallocates every slot, which would cost ~48 KiB per idle connection.
        let (queue, queue_rx) = async_channel::unbounded();
        let (urgent, urgent_rx) = async_channel::bounded(1);
        let queued_bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = queued_bytes.clone();
        let opened = shared.with_inner(|inner| {
            let conn = inner.core.handle_open(meta, Instant::now())?;
            inner.conns.insert(
                conn,
                ConnSender {
                    queue,
                    urgent,
                    queued_bytes,
                },
            );
            Ok::<_, rtm_core::OpenError>((conn, inner.core.conn_info(conn).cloned()))
        });
        let conn = match opened {
            Ok((conn, info)) => {
                if let (Some(hook), Some(info)) = (&shared.on_connect, info) {
                    call_hook(hook, &info);
                }
                conn
            }
            Err(err) => {
                tracing::warn!(%err, "connection refused");
                let _ = outgoing
                    .send(Outgoing::Close(
                        CloseCode::TRY_AGAIN_LATER.0,
                        err.to_string(),
                    ))
                    .await;
                return;
            }
        };
        shared.active.fetch_add(1, Ordering::SeqCst);
        span.record("conn", tracing::field::display(conn));
        tracing::debug!("connected");

        let write_delay = shared.transport.write_delay;
        let writer = async {
            loop {
                let next = {
                    let ordered = queue_rx.recv();
                    let urgent = urgent_rx.recv();
                    futures_util::pin_mut!(ordered, urgent);
                    match select(ordered, urgent).await {
                        Either::Left((message, _)) | Either::Right((message, _)) => message,
                    }
                };
                let Ok(first) = next else { break };
                // Write everything already queued (and, with a write delay, what
                // comes meanwhile), then flush once: one syscall per burst.
                let write = async {
                    let mut message = first;
                    let mut waited = false;
                    loop {
                        let closing = matches!(message, Outgoing::Close(..));
                        if let Outgoing::Text(frame) = &message {
                            written.fetch_sub(frame.len(), Ordering::Relaxed);
                        }
                        outgoing.feed(message).await.map_err(|_| ())?;
                        if closing {
                            let _ = outgoing.flush().await;
                            return Err(());
                        }
                        message = match queue_rx.try_recv() {
                            Ok(more) => more,
                            Err(_) if waited => break,
                            Err(_) => {
                                // Once per burst, before the syscall: with no write
                                // delay, let the tasks already ready (replies, events
                                // for this connection) run first, so one write
                                // carries them too.
                                waited = true;
                                if write_delay.is_zero() {
                                    crate::runtime::yield_now().await;
                                } else {
                                    shared.runtime.sleep(write_delay).await;
                                }
                                match queue_rx.try_recv() {
                                    Ok(more) => more,
                                    Err(_) => break,
                                }
                            }
                        };
                    }
                    outgoing.flush().await.map_err(|_| ())
                };
                // A close on the urgent lane interrupts a write stuck on a full socket.
                let interrupted = {
                    let urgent = urgent_rx.recv();
                    futures_util::pin_mut!(write, urgent);
                    match select(write, urgent).await {
                        Either::Left((Ok(()), _)) => continue,
                        Either::Left((Err(()), _)) => None,
                        Either::Right((close, _)) => close.ok(),
                    }
                };
                // The socket is full, which is why the close jumped the queue: give
                // a slow but live peer a bounded chance to read up to it (1013).
                if let Some(close) = interrupted {
                    let _ = timeout(
                        &*shared.runtime,
                        shared.transport.close_grace,
                        outgoing.send(close),
                    )
                    .await;
                }
                break;
            }
        };
        let reader = async {
            while let Some(message) = incoming.next().await {
                let now = Instant::now();
                match message {
                    Incoming::Text(frame) => {
                        shared.with_core(|core| core.handle_text(conn, frame, now));
                    }
                    Incoming::Binary => shared.with_core(|core| core.handle_binary(conn)),
                    Incoming::Activity => {
                        shared.with_core(|core| core.handle_activity(conn, now));
                    }
                    Incoming::TooLarge => {
                        shared.with_core(|core| core.handle_oversized(conn));
                        // A stream ends after a capacity error: stop reading, let the writer send the 1009 close.
                        return true;
                    }
                    Incoming::Closed(code, _) => {
                        tracing::debug!(%conn, code, "peer closed");
                        break;
                    }
                    Incoming::Error(err) => {
                        tracing::debug!(%conn, %err, "connection error");
                        break;
                    }
                }
            }
            false
        };
        futures_util::pin_mut!(writer, reader);
        match select(reader, writer).await {
            Either::Left((false, _)) => {}
            Either::Left((true, writer)) => {
                let _ = timeout(&*shared.runtime, shared.transport.close_grace, writer).await;
            }
            Either::Right(((), reader)) => {
                // We sent a close: read until the peer answers it (or give up),
                // so the socket is not reset under data the peer has yet to read.
                let _ = timeout(&*shared.runtime, shared.transport.close_grace, reader).await;
            }
        }
        shared.with_core(|core| core.handle_close(conn));
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}
