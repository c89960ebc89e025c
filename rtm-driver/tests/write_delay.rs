//! Write coalescing, observed on an in-memory transport that records every
//! frame and every flush: without a write delay a burst waits one scheduler
//! pass before its write; with `ServerBuilder::write_delay` it waits that long.
mod common;

use common::until;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Sink;
use rtm_core::ConnMeta;
use rtm_driver::rt::{Incoming, Outgoing};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Written {
    Frame(String),
    Flush,
}

/// Always ready; records what the connection writes.
struct RecordingSink {
    log: Arc<Mutex<Vec<Written>>>,
}

impl RecordingSink {
    fn push(&self, written: Written) {
        self.log.lock().unwrap().push(written);
    }
}

impl Sink<Outgoing> for RecordingSink {
    type Error = ();
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Outgoing) -> Result<(), ()> {
        if let Outgoing::Text(text) = item {
            self.push(Written::Frame(String::from_utf8_lossy(&text).into_owned()));
        }
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.push(Written::Flush);
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

/// A server with one in-memory connection; returns its write log.
async fn connected(write_delay: Duration) -> (ServerHandle, Arc<Mutex<Vec<Written>>>) {
    let server = ServerBuilder::new()
        .heartbeat(None)
        .write_delay(write_delay)
        .start(Arc::new(TokioRuntime::current()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (peer, incoming) = futures_channel::mpsc::unbounded::<Incoming>();
    let sink = RecordingSink { log: log.clone() };
    let serving = server.clone();
    tokio::spawn(async move {
        serving.serve(incoming, sink, ConnMeta::default()).await;
        drop(peer);
    });
    until("the connection is open", || server.connection_count() == 1).await;
    (server, log)
}

fn emit(server: &ServerHandle, n: u32) {
    assert_eq!(server.emit("tick", |_| true, &[n]).unwrap(), 1);
}

fn frame(n: u32) -> Written {
    Written::Frame(format!(r#"{{"event":"tick","data":[{n}]}}"#))
}

fn flushes(log: &Mutex<Vec<Written>>) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|w| **w == Written::Flush)
        .count()
}

#[tokio::test]
async fn without_a_write_delay_each_frame_is_flushed_at_once() {
    let (server, log) = connected(Duration::ZERO).await;
    emit(&server, 1);
    until("the first frame is flushed", || flushes(&log) == 1).await;
    emit(&server, 2);
    until("the second frame is flushed", || flushes(&log) == 2).await;
    assert_eq!(
        *log.lock().unwrap(),
        [frame(1), Written::Flush, frame(2), Written::Flush]
    );
}

#[tokio::test]
async fn without_a_write_delay_frames_ready_in_the_same_scheduler_pass_share_one_flush() {
    // One thread: the writer, woken by the first emit, runs before the task
    // spawned after it; its one yield before writing lets that task's frame in.
    let (server, log) = connected(Duration::ZERO).await;
    let emitter = server.clone();
    tokio::spawn(async move {
        emit(&emitter, 1);
        let later = emitter.clone();
        tokio::spawn(async move { emit(&later, 2) });
    });
    until("the burst is flushed", || flushes(&log) >= 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(*log.lock().unwrap(), [frame(1), frame(2), Written::Flush]);
}

#[tokio::test]
async fn with_a_write_delay_frames_queued_during_the_wait_share_one_flush() {
    let (server, log) = connected(Duration::from_millis(400)).await;
    emit(&server, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(flushes(&log), 0, "flushed before the delay was over");
    emit(&server, 2);
    emit(&server, 3);
    until("the burst is flushed", || flushes(&log) == 1).await;
    assert_eq!(
        *log.lock().unwrap(),
        [frame(1), frame(2), frame(3), Written::Flush]
    );
    // The next frame starts a new wait: nothing is lost or held forever.
    emit(&server, 4);
    until("the next frame is flushed", || flushes(&log) == 2).await;
    assert_eq!(log.lock().unwrap().last(), Some(&Written::Flush));
    assert_eq!(log.lock().unwrap().len(), 6);
}

/// The frame `emit("tick", [n])` sends for a one-digit `n`.
const TICK_FRAME: &str = r#"{"event":"tick","data":[0]}"#;

#[tokio::test]
async fn a_slow_consumer_close_does_not_wait_for_the_write_delay() {
    // A hard bound of 2 frames and a delay far beyond the test's timeout:
    // the third frame passes the bound, and the close must go out at once.
    let server = ServerBuilder::new()
        .heartbeat(None)
        .max_outbound_bytes(2 * TICK_FRAME.len())
        .max_outbound_burst_bytes(2 * TICK_FRAME.len())
        .write_delay(Duration::from_secs(60))
        .start(Arc::new(TokioRuntime::current()));
    let (peer, incoming) = futures_channel::mpsc::unbounded::<Incoming>();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let serving = server.clone();
    tokio::spawn(async move {
        serving
            .serve(incoming, ClosingSink(Some(closed_tx)), ConnMeta::default())
            .await;
        drop(peer);
    });
    until("the connection is open", || server.connection_count() == 1).await;
    for n in 0..4 {
        let _ = server.emit("tick", |_| true, &[n]);
    }
    let code = tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the close waited for the write delay")
        .expect("the sink was dropped without a close");
    assert_eq!(code, 1013);
    until("the connection is closed", || {
        server.connection_count() == 0
    })
    .await;
}

/// Always ready; reports the first close code it is given.
struct ClosingSink(Option<tokio::sync::oneshot::Sender<u16>>);

impl Sink<Outgoing> for ClosingSink {
    type Error = ();
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), ()> {
        if let Outgoing::Close(code, _) = item {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(code.0);
            }
        }
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}
