//! Publishing in call order, pipelined.
//!
//! [`RedisBroker::publish`](crate::RedisBroker) queues the command when it is
//! called (not when its future is first polled), and one task sends whatever
//! has queued meanwhile as a single pipeline, one pipeline at a time. So
//! publishes reach Redis in the order they were called, and a burst costs one
//! round trip instead of one per message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_channel::mpsc::UnboundedReceiver;
use futures_channel::oneshot;
use futures_util::StreamExt;
use redis::Value;
use rtm_core::broker::{BrokerError, BrokerState};

use crate::broker::{lock, Shared, Signal};

/// At most this many publishes go in one pipeline.
const MAX_BATCH: usize = 512;

/// One publish waiting to be sent.
pub(crate) struct Queued {
    pub(crate) cmd: redis::Cmd,
    pub(crate) done: oneshot::Sender<Result<(), BrokerError>>,
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

/// Sends `batch` as one pipeline and answers every publish in it.
async fn send(shared: &Shared, batch: &mut Vec<Queued>) {
    let counters = &shared.counters;
    let count = batch.len() as u64;
    let publisher = {
        let live = lock(&shared.live);
        match (&live.state, &live.publisher) {
            (BrokerState::Up, Some(conn)) => Ok(conn.clone()),
            (BrokerState::Down { reason }, _) => Err(reason.clone()),
            (BrokerState::Up, None) => Err("no connection".to_string()),
        }
    };
    let result = match publisher {
        Err(reason) => Err(BrokerError::Unavailable(reason)),
        Ok(mut conn) => {
            let mut pipe = redis::pipe();
            for queued in batch.iter_mut() {
                pipe.add_command(std::mem::take(&mut queued.cmd));
            }
            match pipe.query_async::<Vec<Value>>(&mut conn).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = shared.signals.unbounded_send(Signal::Check);
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        Err(BrokerError::Unavailable(e.to_string()))
                    } else {
                        Err(BrokerError::Failed(e.to_string()))
                    }
                }
            }
        }
    };
    match &result {
        Ok(()) => counters.published.fetch_add(count, Ordering::Relaxed),
        Err(_) => counters.publish_errors.fetch_add(count, Ordering::Relaxed),
    };
    for queued in batch.drain(..) {
        let _ = queued.done.send(result.clone());
    }
}
