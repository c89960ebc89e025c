//! Helpers shared by rtm-driver's integration tests.

use std::time::Duration;

/// Waits (at most 5 s, checking every millisecond) until `condition` holds.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}
