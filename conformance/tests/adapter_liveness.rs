//! Our client's heartbeat on every adapter (tokio, async-std, smol): a server
//! that vanished without closing the socket is found out and left for a new
//! connection; a quiet server that answers pings keeps the client open.

use std::time::Duration;

use async_channel::unbounded;
use conformance::adapter::{recv, soon, within, Adapter};
use conformance::on_every_adapter;
use rtm_core::{ClientEvent, ClientState, Heartbeat, RtmError};
use rtm_driver::{CallContext, ClientOptions, ServerBuilder};

fn heartbeat(interval_ms: u64, timeout_ms: u64) -> ClientOptions {
    ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(5))
        .heartbeat(Some(Heartbeat {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        }))
}

/// The silent kind of failure: the server's process hangs (or the network
/// drops everything) while its socket stays open. Nothing, not even a pong,
/// comes back; the client counts the connection as lost and reconnects.
async fn a_server_gone_silent_is_dropped_by_the_heartbeat_and_reconnected(adapter: Adapter) {
    let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (accepted, accepted_rx) = unbounded();
    let (_done, done_rx) = unbounded::<()>();
    // Upgrades the first two connections, then holds them without ever reading.
    adapter.runtime().spawn(Box::pin(async move {
        let mut held = Vec::new();
        for _ in 0..2 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Ok(ws) = async_tungstenite::accept_async(tcp).await {
                held.push(ws);
                let _ = accepted.try_send(());
            }
        }
        // Until the scenario ends (`_done` dropped).
        let _ = done_rx.recv().await;
    }));

    let client = adapter.connect(&url, heartbeat(100, 400)).await.unwrap();
    let events = client.lifecycle();
    recv("the first connection", &accepted_rx).await;
    let reason = within("the heartbeat's verdict", Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(ClientEvent::Closed { reason, .. }) => break reason,
                Ok(_) => {}
                Err(_) => panic!("the client's events ended"),
            }
        }
    })
    .await;
    assert!(reason.contains("nothing from the server"), "{reason}");
    recv("the reconnection", &accepted_rx).await;
    client.close();
}

/// A server that sends nothing of its own (no events, no pings of its own)
/// but answers pings, as every WebSocket server must, is alive.
async fn a_quiet_server_that_answers_pings_keeps_the_client_open(adapter: Adapter) {
    let builder = ServerBuilder::new()
        .heartbeat(None)
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        });
    let addr = "127.0.0.1:0".parse().unwrap();
    let server = adapter.listen(builder, addr).await.unwrap();
    let client = adapter
        .connect(&server.url(), heartbeat(50, 250))
        .await
        .unwrap();
    let events = client.lifecycle();
    // Proving an absence needs time to pass: four timeouts, twenty intervals.
    async_io::Timer::after(Duration::from_secs(1)).await;
    assert!(
        events.try_recv().is_err(),
        "the connection changed state with a live server"
    );
    assert_eq!(client.state(), ClientState::Open);
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    client.close();
    soon("shutdown", server.shutdown()).await;
}

on_every_adapter!(
    a_server_gone_silent_is_dropped_by_the_heartbeat_and_reconnected,
    a_quiet_server_that_answers_pings_keeps_the_client_open,
);
