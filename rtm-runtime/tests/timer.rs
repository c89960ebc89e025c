//! A runtime's timer moves in place: reset later it does not fire at its
//! first deadline; reset earlier it fires at the new one. On tokio, smol
//! and async-std, and on a runtime with only `sleep` (the default timer).
#![cfg(all(feature = "tokio", feature = "smol", feature = "async-std"))]

use std::future::poll_fn;
use std::time::Duration;

use rtm_runtime::{AsyncStdRuntime, BoxFuture, Runtime, SmolRuntime, TokioRuntime};

async fn moves_in_place(runtime: &dyn Runtime) {
    let t0 = runtime.now();
    let mut timer = runtime.timer(t0 + Duration::from_millis(30));
    timer
        .as_mut()
        .reset(t0 + Duration::from_millis(120), runtime);
    poll_fn(|cx| timer.as_mut().poll_elapsed(cx)).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(120),
        "fired at its old deadline: {waited:?}"
    );
    let t1 = runtime.now();
    timer.as_mut().reset(t1 + Duration::from_secs(60), runtime);
    timer
        .as_mut()
        .reset(t1 + Duration::from_millis(10), runtime);
    poll_fn(|cx| timer.as_mut().poll_elapsed(cx)).await;
    assert!(
        t1.elapsed() < Duration::from_secs(30),
        "did not move earlier"
    );
}

/// A runtime that only sleeps (its timer is the default one).
struct OnlySleeps(TokioRuntime);

impl Runtime for OnlySleeps {
    fn spawn(&self, task: BoxFuture<()>) {
        self.0.spawn(task)
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        self.0.sleep(duration)
    }
}

#[test]
fn a_timer_moves_in_place_on_every_runtime() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio.block_on(async {
        moves_in_place(&TokioRuntime::current()).await;
        moves_in_place(&OnlySleeps(TokioRuntime::current())).await;
    });
    smol::block_on(moves_in_place(&SmolRuntime));
    async_std::task::block_on(moves_in_place(&AsyncStdRuntime));
}
