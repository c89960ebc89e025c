//! Idle memory per connection is mostly its task: a guard on the size of
//! what is spawned per connection, so growing it fails a test instead of a
//! benchmark nobody runs. The types do not depend on features (plain and
//! TLS streams are both a `BoxIo`), so this holds under any feature set.
//! `cargo test --workspace` runs it with every feature of this crate on
//! (`fixture` and `tls`, through `conformance`), which is `--all-features`.
use std::sync::Arc;

use rtm_driver::rt::BoxIo;
use rtm_driver::ServerBuilder;
use rtm_runtime::{TokioIo, TokioRuntime};

/// Bytes, at most, of the future that accepts a socket (TLS and the handshake).
const ACCEPT_TASK_MAX: usize = 2048;

#[tokio::test]
async fn the_accept_task_stays_small_with_or_without_tls() {
    let handle = ServerBuilder::new().start(Arc::new(TokioRuntime::current()));
    let (io, _peer) = tokio::io::duplex(64);
    let io: BoxIo = Box::new(TokioIo::new(io));
    let accept = handle.accept(io, "127.0.0.1:1".parse().unwrap());
    let size = std::mem::size_of_val(&accept);
    eprintln!("accept task: {size} bytes");
    assert!(size <= ACCEPT_TASK_MAX, "{size} bytes > {ACCEPT_TASK_MAX}");
}
