//! Publishing in call order, pipelined.
//!
//! [`RedisBroker::publish`](crate::RedisBroker) queues the command when it is
//! called (not when its future is first polled), and one task sends whatever
//! has queued meanwhile as a single pipeline, one pipeline at a time. So
//! publishes reach Redis in the order they were called, and a burst costs one
//! round trip instead of one per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedReceiver;
use futures_channel::oneshot;
use futures_util::StreamExt;
use redis::cluster_routing::Slot;
use redis::Value;
use rtm_broker::{BrokerError, BrokerState};
use rtm_core::StreamPosition;

use crate::history;
use crate::shared::{lock, Shared, Signal};

/// At most this many publishes go in one pipeline.
const MAX_BATCH: usize = 512;

/// One publish waiting to be sent.
pub(crate) struct Queued {
    pub(crate) cmd: redis::Cmd,
    /// The topic's cluster slot, on a cluster only (a pipeline there holds
    /// one slot only).
    pub(crate) slot: Option<Slot>,
    pub(crate) done: Answer,
    /// When it was queued (the publish duration is measured from the
    /// oldest of a pipeline).
    pub(crate) queued_at: Instant,
}

/// Who waits for a queued command's outcome.
pub(crate) enum Answer {
    /// A publish.
    Published(oneshot::Sender<Result<(), BrokerError>>),
    /// A history append: the event's position.
    Appended(oneshot::Sender<Result<StreamPosition, BrokerError>>),
}

impl Answer {
    fn send(self, reply: Result<Value, BrokerError>) {
        match self {
            Answer::Published(done) => {
                let _ = done.send(reply.map(|_| ()));
            }
            Answer::Appended(done) => {
                let _ = done.send(reply.and_then(|v| history::position("a history append", &v)));
            }
        }
    }
}

/// Sends queued publishes until the broker handle (and so the queue) is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.next().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        send(&shared, &mut batch).await;
    }
}

/// Sends `batch` (one pipeline per node, or per slot on a cluster) and
/// answers every publish in it.
async fn send(shared: &Shared, batch: &mut Vec<Queued>) {
    let counters = &shared.counters;
    let publisher = {
        let live = lock(&shared.live);
        match (&live.state, &live.publisher) {
            (BrokerState::Up, Some(conn)) => Ok(conn.clone()),
            (BrokerState::Down { reason }, _) => Err(reason.clone()),
            (BrokerState::Up, None) => Err("no connection".to_string()),
        }
    };
    let results: Vec<Result<Value, BrokerError>> = match publisher {
        Err(reason) => vec![Err(BrokerError::unavailable(reason)); batch.len()],
        Ok(mut conn) => {
            let cmds = batch
                .iter_mut()
                .map(|queued| (queued.slot, std::mem::take(&mut queued.cmd)))
                .collect();
            let sent = conn.publish_all(cmds).await;
            if sent.iter().any(Result::is_err) {
                let _ = shared.signals.unbounded_send(Signal::Check);
            }
            sent.into_iter()
                .map(|r| {
                    r.map_err(|e| {
                        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                            BrokerError::unavailable(e.to_string()).caused_by(e.clone())
                        } else {
                            BrokerError::failed(e.to_string()).caused_by(e.clone())
                        }
                    })
                })
                .collect()
        }
    };
    let failed = results.iter().filter(|r| r.is_err()).count();
    let oldest = batch.first().map(|queued| queued.queued_at);
    let took = oldest.map_or(Duration::ZERO, |at| at.elapsed());
    counters.pipeline((results.len() - failed) as u64, failed as u64, took);
    for (queued, result) in batch.drain(..).zip(results) {
        queued.done.send(result);
    }
}
