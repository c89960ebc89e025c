//! The outbound bound (in bytes), at its edge, with an in-memory transport whose
//! sink never accepts a write (a peer that stopped reading).
mod common;

use common::until;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Sink;
use rtm_core::ConnMeta;
use rtm_driver::rt::{Incoming, Outgoing};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;

/// A sink that is never ready, and says when a write first waits on it.
struct StuckSink {
    waiting: Arc<AtomicBool>,
}

impl Sink<Outgoing> for StuckSink {
    type Error = ();
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.waiting.store(true, Ordering::SeqCst);
        Poll::Pending
    }
    fn start_send(self: Pin<&mut Self>, _: Outgoing) -> Result<(), ()> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Pending
    }
}

fn emit(server: &ServerHandle) -> usize {
    server.emit("tick", |_| true, &[1]).unwrap()
}

#[tokio::test]
async fn a_connection_holds_exactly_max_outbound_bytes_unwritten() {
    const BOUND: usize = 4;
    /// What `emit` sends.
    const FRAME: &str = r#"{"event":"tick","data":[1]}"#;
    let server = ServerBuilder::new()
        .max_outbound_bytes(BOUND * FRAME.len())
        .heartbeat(None)
        .start(Arc::new(TokioRuntime::current()));
    let waiting = Arc::new(AtomicBool::new(false));
    let (_peer, incoming) = futures_channel::mpsc::unbounded::<Incoming>();
    let sink = StuckSink {
        waiting: waiting.clone(),
    };
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(incoming, sink, ConnMeta::default()).await });
    until("the connection is open", || server.connection_count() == 1).await;

    // The first frame leaves the mailbox and waits on the socket.
    assert_eq!(emit(&server), 1);
    until("the writer waits on the socket", || {
        waiting.load(Ordering::SeqCst)
    })
    .await;
    // Up to the bound, counting the frame the socket has not taken.
    for _ in 1..BOUND {
        assert_eq!(emit(&server), 1);
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.connection_count(), 1, "closed before the bound");
    // One more byte than the bound: closed as a slow consumer.
    emit(&server);
    until("closed past the bound", || server.connection_count() == 0).await;
}
