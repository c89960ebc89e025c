//! The application's connection hooks run outside the server's lock: a hook
//! may call the server, and a panicking hook is contained. In-memory
//! transports (channels) stand in for sockets.
mod common;

use common::until;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use rtm_core::ConnMeta;
use rtm_driver::rt::{Incoming, Outgoing};
use rtm_driver::{ServerBuilder, ServerHandle};
use rtm_runtime::TokioRuntime;
use serde_json::{json, Value};

/// One in-memory connection: what its peer sends, and what the server wrote.
struct Peer {
    send: UnboundedSender<Incoming>,
    written: UnboundedReceiver<Outgoing>,
}

fn open(server: &ServerHandle) -> Peer {
    let (send, incoming) = unbounded::<Incoming>();
    let (tx, written) = unbounded::<Outgoing>();
    let outgoing = Box::pin(futures_util::sink::unfold(tx, |tx, frame| async move {
        tx.unbounded_send(frame).map_err(|_| ())?;
        Ok::<_, ()>(tx)
    }));
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(incoming, outgoing, ConnMeta::default()).await });
    Peer { send, written }
}

/// The next text frame the server wrote to `peer`, as JSON.
async fn next_json(peer: &mut Peer) -> Value {
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match peer.written.next().await {
                Some(Outgoing::Text(frame)) => return serde_json::from_slice(&frame).unwrap(),
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    });
    next.await.expect("a frame within 5 s")
}

fn request(frame: Value) -> Incoming {
    Incoming::Text(frame.to_string().into())
}

/// Runs `scenario` on a runtime of its own thread and fails if it does not
/// finish within 10 s: a hook called under the server's lock would deadlock a
/// worker forever, and the test must fail rather than hang.
fn run_bounded<F: std::future::Future<Output = ()> + Send + 'static>(scenario: F) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario);
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the scenario did not finish: {e}"));
}

#[test]
fn a_disconnect_hook_may_emit_to_the_connections_left() {
    run_bounded(disconnect_hook_emits());
}

async fn disconnect_hook_emits() {
    let handle: Arc<OnceLock<ServerHandle>> = Arc::default();
    let in_hook = handle.clone();
    let server = ServerBuilder::new()
        .heartbeat(None)
        .on_disconnect(move |info| {
            if let Some(server) = in_hook.get() {
                let _ = server.emit("left", |_| true, &(info.id.to_string(),));
            }
        })
        .start(Arc::new(TokioRuntime::current()));
    let _ = handle.set(server.clone());
    let leaving = open(&server);
    let mut staying = open(&server);
    until("both connections are open", || {
        server.connection_count() == 2
    })
    .await;

    drop(leaving.send);
    let event = next_json(&mut staying).await;
    assert_eq!(event["event"], "left", "{event}");
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn a_panicking_hook_is_contained_and_the_server_keeps_serving() {
    run_bounded(panicking_hooks());
}

async fn panicking_hooks() {
    let server = ServerBuilder::new()
        .heartbeat(None)
        .register(
            "echo",
            |_ctx: rtm_driver::CallContext, (x,): (Value,)| async move {
                Ok::<_, rtm_core::RtmError>(x)
            },
        )
        .on_connect(|_| panic!("on_connect failed"))
        .on_disconnect(|_| panic!("on_disconnect failed"))
        .start(Arc::new(TokioRuntime::current()));
    let first = open(&server);
    let mut second = open(&server);
    until("both connections are open", || {
        server.connection_count() == 2
    })
    .await;
    // The first leaves: its disconnect hook panics in the task that closed it.
    drop(first.send);
    until("the first is gone", || server.connection_count() == 1).await;
    second
        .send
        .unbounded_send(request(
            json!({"id": "1", "type": "invoke", "function": "echo", "data": [7]}),
        ))
        .unwrap();
    assert_eq!(next_json(&mut second).await, json!({"id": "1", "data": 7}));
}
