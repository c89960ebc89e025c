//! Helpers shared by rtm-driver's integration tests.

use std::time::Duration;

// Not every test binary that includes this module waits for a condition.
#[allow(dead_code)]
/// Waits (at most 5 s, checking every millisecond) until `condition` holds.
pub(crate) async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

// Not every test binary that includes this module serves a connection.
#[allow(dead_code)]
/// One connection served in memory by `server`: the sender of what the
/// peer sends, and the receiver of what the server sends it.
pub(crate) async fn connect(
    server: &rtm_driver::ServerHandle,
) -> (
    futures_channel::mpsc::UnboundedSender<rtm_driver::rt::Incoming>,
    tokio::sync::mpsc::UnboundedReceiver<rtm_driver::rt::Outgoing>,
) {
    let (peer, incoming) = futures_channel::mpsc::unbounded::<rtm_driver::rt::Incoming>();
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<rtm_driver::rt::Outgoing>();
    let sink = Box::pin(futures_util::sink::unfold(out_tx, |tx, item| async move {
        let _ = tx.send(item);
        Ok::<_, ()>(tx)
    }));
    let serving = server.clone();
    tokio::spawn(async move {
        serving
            .serve(incoming, sink, rtm_core::ConnMeta::default())
            .await
    });
    (peer, out_rx)
}
