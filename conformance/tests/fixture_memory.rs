//! What one abusive peer can make a server hold, measured: the resident
//! memory of an `rtm-fixture` process (its own process, so nothing else in
//! the test counts) before and after, on tokio, async-std and smol.
//!
//! - a peer that floods pings and never reads: at most one pong waits;
//! - a peer that stops reading while big events are broadcast: closed 1013
//!   once `max_outbound_bytes` (1 MiB) is queued for it, the server's growth
//!   a small multiple of that bound.
//!
//! Each prints its figures (`cargo test -p conformance --test fixture_memory
//! -- --nocapture`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixture_on;
use conformance::raw_tcp::{frame, End, RawPeer, PING, PONG};
use conformance::{Adapter, Fixture, RawConn};
use serde_json::json;

const MIB: f64 = 1024.0 * 1024.0;

fn addr(fixture: &Fixture) -> SocketAddr {
    format!("127.0.0.1:{}", fixture.port()).parse().unwrap()
}

fn rss(fixture: &Fixture) -> u64 {
    fixture.rss_bytes().expect("the fixture's VmRSS")
}

/// 200,000 pings from a peer that never reads: the server holds at most one
/// pong for it (each ping replaces the pong not yet written), and another
/// connection's calls stay quick meanwhile.
///
/// The flooder keeps the kernel's default receive buffer. A forced tiny one
/// (4 KiB) made Linux drop in-window pongs under memory pressure; its zero
/// window then refused the server's ACKs (their sequence number lay past
/// it), so the flooder's own sends waited on retransmission timeouts
/// backing off to minutes: a TCP stall, not the server's, that ended in the
/// heartbeat's close. 18-byte pongs still fill a default buffer within a
/// few thousand.
async fn a_ping_flood_from_a_peer_that_never_reads_holds_one_pong(runtime: Adapter) {
    const PINGS: usize = 200_000;
    let f = fixture_on(runtime, &[]);
    let mut other = RawConn::connect(f.url()).await.unwrap();
    other.call_ok("echo", json!([0])).await.unwrap();
    let before = rss(&f);
    let mut flooder = RawPeer::upgrade(addr(&f), "/").await;
    let ping = frame(true, PING, b"0123456789abcdef");
    let burst: Vec<u8> = ping.repeat(1000);
    let mut slowest = Duration::ZERO;
    for round in 0..PINGS / 1000 {
        match tokio::time::timeout(Duration::from_secs(20), flooder.try_send(&burst)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "the server dropped the flooding connection after {round} thousand pings: {e}"
            ),
            Err(_) => panic!("the server stopped reading the flooder after {round} thousand pings"),
        }
        if round % 20 == 0 {
            let started = Instant::now();
            other.call_ok("echo", json!([round])).await.unwrap();
            slowest = slowest.max(started.elapsed());
        }
    }
    // Let the server read the last of them.
    other.call_ok("echo", json!(["after"])).await.unwrap();
    let grown = rss(&f).saturating_sub(before);
    // Now read: what the kernels held, then the one pong still waiting.
    let mut pongs = 0usize;
    loop {
        match flooder.read_frame_within(Duration::from_millis(500)).await {
            Ok(frame) if frame.opcode == PONG => pongs += 1,
            Ok(frame) => panic!("a frame other than a pong: opcode {}", frame.opcode),
            Err(End::Timeout) => break,
            Err(end) => panic!("the flooder's stream ended: {end:?}"),
        }
    }
    eprintln!(
        "{runtime:?}: {PINGS} pings from a peer that never reads: {pongs} pongs; server RSS +{:.2} MiB; slowest echo meanwhile {slowest:?}",
        grown as f64 / MIB
    );
    assert!(pongs >= 1, "no pong at all");
    assert!(
        pongs < PINGS / 2,
        "{pongs} pongs for {PINGS} pings: pongs were queued, not replaced"
    );
    assert!(
        (grown as f64) < 4.0 * MIB,
        "a ping flood grew the server by {:.1} MiB",
        grown as f64 / MIB
    );
    // A gross-failure check only (the figure above is what to read): on a
    // loaded 2-core CI machine a quiet echo can wait long for the CPU.
    assert!(
        slowest < Duration::from_secs(3),
        "another connection waited {slowest:?} during the flood"
    );
}

/// A peer that stops reading while 300 events of 400 KB are broadcast: it is
/// closed as a slow consumer, and the server grows by a small multiple of
/// the 1 MiB bound, not by what was broadcast.
async fn a_stalled_reader_of_big_broadcasts_is_closed_and_bounded_in_bytes(runtime: Adapter) {
    const EVENTS: usize = 300;
    let f = fixture_on(runtime, &[]);
    let mut broadcaster = RawConn::connect(f.url()).await.unwrap();
    let before = rss(&f);
    let _stalled = RawPeer::upgrade_with_window(addr(&f), "/", 4096).await;
    // The 101 is written before the server registers the connection: wait
    // (bounded) until it counts both.
    let registered = Instant::now();
    while broadcaster.call_ok("count", json!([])).await.unwrap() != json!(2) {
        assert!(
            registered.elapsed() < Duration::from_secs(5),
            "the stalled reader was not registered within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let big = "b".repeat(400_000);
    let mut peak = 0;
    for n in 0..EVENTS {
        broadcaster
            .call_ok("broadcast", json!([big]))
            .await
            .unwrap();
        // Its own copy of the event.
        broadcaster.next_event().await.unwrap();
        if n % 25 == 0 {
            peak = peak.max(rss(&f));
        }
    }
    peak = peak.max(rss(&f));
    let count = broadcaster.call_ok("count", json!([])).await.unwrap();
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{runtime:?}: {EVENTS} × 400 KB broadcast with one stalled reader: server RSS peak +{:.2} MiB (bound 1 MiB per connection); connections after: {count}",
        grown as f64 / MIB
    );
    assert_eq!(count, json!(1), "the stalled reader was not closed");
    assert!(
        (grown as f64) < 16.0 * MIB,
        "a stalled reader grew the server by {:.1} MiB",
        grown as f64 / MIB
    );
}

macro_rules! on_every_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod tokio_server {
            $(#[tokio::test]
            async fn $scenario() { super::$scenario(conformance::Adapter::Tokio).await })*
        }
        mod async_std_server {
            $(#[tokio::test]
            async fn $scenario() { super::$scenario(conformance::Adapter::AsyncStd).await })*
        }
        mod smol_server {
            $(#[tokio::test]
            async fn $scenario() { super::$scenario(conformance::Adapter::Smol).await })*
        }
    };
}

on_every_runtime!(
    a_ping_flood_from_a_peer_that_never_reads_holds_one_pong,
    a_stalled_reader_of_big_broadcasts_is_closed_and_bounded_in_bytes,
);
