//! Benchmarks of the server core's hot paths, with no IO: what one core can do
//! on one thread before any adapter or socket costs are added.
//!
//! - `invoke_round_trip`: invoke frame in → `Invoke` out → result in → reply bytes out;
//! - `emit_10k`: one Emit to 10,000 open connections, all 10,000 `Transmit`s drained;
//! - `parse_request`: parsing the invoke frame alone;
//! - `publish_broker_3conns`: Publish on one server, carried by the broker
//!   envelope to a second server holding the user's 3 connections.
//!
//! Run: `cargo bench -p rtm-core --bench core -- --warm-up-time 2 --measurement-time 5`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtm_core::frame::{parse_request, Request};
use rtm_core::{
    Args, BrokerCommand, ConnId, ConnMeta, Identity, ServerConfig, ServerCore, ServerOutput,
};

/// A realistic invoke: a UUIDv4 id as the JS client mints them, ~100 bytes in all.
const INVOKE: &[u8] =
    br#"{"id":"4f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b","type":"invoke","function":"add","data":[1,2]}"#;

const EMIT_TARGETS: usize = 10_000;

/// The frame as a transport hands it over: an owned, refcounted buffer.
fn invoke_frame() -> Bytes {
    Bytes::copy_from_slice(INVOKE)
}

fn invoke_round_trip(c: &mut Criterion) {
    let now = Instant::now();
    let mut server = ServerCore::new(ServerConfig::new("bench"));
    server.register_function("add");
    let conn = server
        .handle_open(ConnMeta::default(), now)
        .expect("open one connection");
    let frame = invoke_frame();

    // Check the round trip once outside the timed loop.
    server.handle_text(conn, frame.clone(), now);
    let Some(ServerOutput::Invoke { ticket, .. }) = server.poll_output() else {
        panic!("expected an Invoke output");
    };
    server.handle_call_result(ticket, Ok(&3));
    let Some(ServerOutput::Transmit { frame: reply, .. }) = server.poll_output() else {
        panic!("expected the reply");
    };
    assert_eq!(
        &reply[..],
        br#"{"id":"4f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b","data":3}"#
    );
    assert!(server.poll_output().is_none());

    let mut group = c.benchmark_group("invoke_round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("add", |b| {
        b.iter(|| {
            server.handle_text(conn, frame.clone(), now);
            let Some(ServerOutput::Invoke { ticket, .. }) = server.poll_output() else {
                panic!("expected an Invoke output");
            };
            server.handle_call_result(ticket, Ok(&3));
            let Some(ServerOutput::Transmit { frame, .. }) = server.poll_output() else {
                panic!("expected the reply");
            };
            black_box(frame);
            debug_assert!(server.poll_output().is_none());
        })
    });
    group.finish();
}

fn emit_10k(c: &mut Criterion) {
    let now = Instant::now();
    let mut server = ServerCore::new(ServerConfig::new("bench"));
    for _ in 0..EMIT_TARGETS {
        server
            .handle_open(ConnMeta::default(), now)
            .expect("open 10,000 connections");
    }
    let args = Args::encode(&("Hello from server!",)).expect("encode args");

    // Encoded once: every target gets a clone of the same buffer.
    let sent = server.emit("alert", |_| true, &args).expect("emit");
    assert_eq!(sent, EMIT_TARGETS);
    let mut ptrs = Vec::with_capacity(EMIT_TARGETS);
    while let Some(out) = server.poll_output() {
        let ServerOutput::Transmit { frame, .. } = out else {
            panic!("emit produced {out:?}");
        };
        ptrs.push(frame.as_ptr());
    }
    assert_eq!(ptrs.len(), EMIT_TARGETS);
    assert!(
        ptrs.iter().all(|&p| p == ptrs[0]),
        "every connection must get the same bytes"
    );

    let mut group = c.benchmark_group("emit_10k");
    group.throughput(Throughput::Elements(EMIT_TARGETS as u64));
    group.bench_function("all_pass_filter", |b| {
        b.iter(|| {
            let sent = server.emit("alert", |_| true, &args).unwrap_or(0);
            let mut drained = 0;
            while let Some(out) = server.poll_output() {
                drop(black_box(out));
                drained += 1;
            }
            debug_assert_eq!(drained, sent);
            black_box(drained);
        })
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let frame = invoke_frame();
    let mut group = c.benchmark_group("parse_request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("invoke", |b| {
        b.iter(|| {
            let request = parse_request(black_box(&frame));
            debug_assert!(matches!(request, Ok(Request::Invoke { .. })));
            black_box(request.is_ok());
        })
    });
    group.finish();
}

/// A server with auth and a broker, its connections authenticated as `user`.
fn clustered_server(id: &str, user: &str, conns: usize, now: Instant) -> (ServerCore, Vec<ConnId>) {
    let mut server = ServerCore::new(ServerConfig {
        auth_timeout: Some(Duration::from_secs(10)),
        broker: true,
        ..ServerConfig::new(id)
    });
    let mut ids = Vec::with_capacity(conns);
    for _ in 0..conns {
        let conn = server
            .handle_open(ConnMeta::default(), now)
            .expect("open a connection");
        server.handle_text(
            conn,
            Bytes::from_static(br#"{"id":"a","type":"auth","data":["token"]}"#),
            now,
        );
        let Some(ServerOutput::Authenticate { ticket, .. }) = server.poll_output() else {
            panic!("expected Authenticate");
        };
        server.handle_auth_result(ticket, Ok(Identity::new(user, serde_json::Value::Null)));
        while server.poll_output().is_some() {}
        ids.push(conn);
    }
    (server, ids)
}

fn publish_broker(c: &mut Criterion) {
    let now = Instant::now();
    let (mut sender, _) = clustered_server("s1", "someone-else", 1, now);
    let (mut receiver, _) = clustered_server("s2", "alice", 3, now);
    let args = Args::encode(&("hi alice",)).expect("encode args");

    // Check the path once outside the timed loop: nothing local, one broker
    // message, three deliveries on the receiving side.
    assert_eq!(sender.publish("alice", "dm", &args).ok(), Some(0));
    let Some(ServerOutput::Broker(BrokerCommand::Publish { topic, payload, .. })) =
        sender.poll_output()
    else {
        panic!("expected a broker Publish");
    };
    assert!(sender.poll_output().is_none());
    assert_eq!(
        receiver.handle_broker_message(topic.as_str(), payload).ok(),
        Some(3)
    );
    while receiver.poll_output().is_some() {}

    let mut group = c.benchmark_group("publish_broker_3conns");
    group.throughput(Throughput::Elements(3));
    group.bench_function("publish_then_receive", |b| {
        b.iter(|| {
            let local = sender.publish("alice", "dm", &args).unwrap_or(usize::MAX);
            debug_assert_eq!(local, 0);
            let Some(ServerOutput::Broker(BrokerCommand::Publish { topic, payload, .. })) =
                sender.poll_output()
            else {
                panic!("expected a broker Publish");
            };
            let delivered = receiver
                .handle_broker_message(topic.as_str(), payload)
                .unwrap_or(0);
            let mut drained = 0;
            while let Some(out) = receiver.poll_output() {
                drop(black_box(out));
                drained += 1;
            }
            debug_assert_eq!((delivered, drained), (3, 3));
            black_box(drained);
        })
    });
    group.finish();
}

criterion_group!(benches, invoke_round_trip, emit_10k, parse, publish_broker);
criterion_main!(benches);
