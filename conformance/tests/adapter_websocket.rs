//! WebSocket transport conformance (RFC 6455), byte by byte, on every
//! adapter: closes that carry their code and end cleanly (the peer reads a
//! close frame, then FIN, never a reset), HTTP answers to bad handshakes,
//! the first frame in the upgrade's packet, the order calls start in, and
//! the origin guard.

use std::net::SocketAddr;
use std::time::Duration;

use conformance::adapter::{soon, until, Adapter};
use conformance::on_every_adapter;
use conformance::raw_tcp::{
    close_payload, frame, frame_with, upgrade_request, End, RawPeer, CLOSE, CONTINUATION, TEXT,
};
use rtm_core::{Identity, RtmError};
use rtm_driver::AllowedOrigins;
use rtm_driver::{CallContext, Listening, ServerBuilder};
use serde_json::{json, Value};

async fn listen(adapter: Adapter, builder: ServerBuilder) -> Listening {
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

fn echo() -> ServerBuilder {
    ServerBuilder::new().register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
        Ok::<_, RtmError>(x)
    })
}

fn invoke(id: &str, function: &str, data: Value) -> Vec<u8> {
    let text = json!({"id": id, "type": "invoke", "function": function, "data": data});
    frame(true, TEXT, text.to_string().as_bytes())
}

async fn reply(peer: &mut RawPeer) -> Value {
    let frame = peer.read_frame().await.expect("a reply frame");
    assert_eq!(frame.opcode, TEXT, "{frame:?}");
    serde_json::from_slice(&frame.payload).expect("JSON")
}

/// The close handshake seen from the peer: the server's close code, then a
/// clean end of the stream.
async fn closed_cleanly_with(peer: &mut RawPeer, code: u16) {
    let (got, reason, end) = peer.expect_close(1000).await;
    assert_eq!(got, code, "close code (reason {reason:?})");
    assert_eq!(
        end,
        End::Eof,
        "after close {code}: the stream must end with FIN"
    );
}

// ----- 1. the client's close is answered -----

async fn a_clients_close_is_echoed_with_its_code_and_the_stream_ends_cleanly(adapter: Adapter) {
    let server = listen(adapter, echo()).await;
    let addr = server.local_addr();
    for (code, split) in [(1000, false), (4001, false), (1000, true)] {
        let mut peer = RawPeer::upgrade(addr, "/").await;
        peer.send(&invoke("1", "echo", json!([1]))).await;
        assert_eq!(reply(&mut peer).await, json!({"id": "1", "data": 1}));
        let close = frame(true, CLOSE, &close_payload(code, "bye"));
        if split {
            // Whole or split over three writes: the same close.
            for part in [&close[..1], &close[1..4], &close[4..]] {
                peer.send(part).await;
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
        } else {
            peer.send(&close).await;
        }
        let echoed = peer.read_frame().await.expect("the echoed close");
        assert_eq!(echoed.close().map(|c| c.0), Some(code), "split {split}");
        assert_eq!(peer.end_within(Duration::from_secs(5)).await, End::Eof);
    }
    soon("shutdown", server.shutdown()).await;
}

// ----- 2. every close the server starts reaches the peer -----

async fn faults_get_their_close_code_and_a_clean_end(adapter: Adapter) {
    let server = listen(adapter, echo()).await;
    let addr = server.local_addr();
    let mut rsv1 = frame(true, TEXT, b"{}");
    rsv1[0] |= 0x40;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8",
            frame(true, TEXT, &[0x7B, 0xFF, 0x7D]),
            1007,
        ),
        ("RSV1 without an extension", rsv1, 1002),
        (
            "a close carrying 1006",
            frame(true, CLOSE, &close_payload(1006, "")),
            1002,
        ),
        (
            "an unmasked client frame",
            frame_with(true, 0, TEXT, false, b"{}"),
            1002,
        ),
        (
            "a continuation with nothing to continue",
            frame(true, CONTINUATION, b"x"),
            1002,
        ),
        ("a binary frame", frame(true, 0x2, b"bin"), 1003),
        ("not JSON", frame(true, TEXT, b"hello"), 1007),
    ];
    for (what, bytes, code) in cases {
        let mut peer = RawPeer::upgrade(addr, "/").await;
        peer.send(&bytes).await;
        let (got, reason, end) = peer.expect_close(10).await;
        assert_eq!(got, code, "{what}: reason {reason:?}");
        assert_eq!(end, End::Eof, "{what}");
    }
    soon("shutdown", server.shutdown()).await;
}

async fn an_oversized_message_gets_1009_not_a_reset(adapter: Adapter) {
    // One 4 MB frame at the default 1 MiB limit.
    let server = listen(adapter, echo()).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let big = vec![b'x'; 4_000_000];
    peer.send(&frame(true, TEXT, &big)).await;
    closed_cleanly_with(&mut peer, 1009).await;
    soon("shutdown", server.shutdown()).await;

    // Fragments back to back past a 64 KiB limit.
    let server = listen(adapter, echo().max_frame_bytes(65_536)).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let part = vec![b'y'; 30_000];
    let mut bytes = frame(false, TEXT, &part);
    for _ in 0..3 {
        bytes.extend(frame(false, CONTINUATION, &part));
    }
    bytes.extend(frame(true, CONTINUATION, &part));
    peer.send(&bytes).await;
    closed_cleanly_with(&mut peer, 1009).await;
    soon("shutdown", server.shutdown()).await;
}

/// Shutdown (1001) while the peer is in the middle of sending a frame: the
/// server keeps reading past its close, so the rest of the frame does not
/// reset the connection under the close.
async fn shutdown_mid_frame_closes_1001_and_lingers(adapter: Adapter) {
    let server = listen(adapter, echo()).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let whole = invoke("1", "echo", json!(["z".repeat(500_000)]));
    let (first, rest) = whole.split_at(whole.len() / 2);
    peer.send(first).await;
    let handle = server.handle().clone();
    until("the server to hold the connection", || {
        handle.connection_count() == 1
    })
    .await;
    let shutdown = async {
        server.shutdown().await;
    };
    let peer_side = async {
        async_io::Timer::after(Duration::from_millis(100)).await;
        let _ = peer.try_send(rest).await;
        peer.expect_close(5).await
    };
    let ((), (code, _, end)) = soon(
        "shutdown and the peer",
        futures_util::future::join(shutdown, peer_side),
    )
    .await;
    assert_eq!((code, end), (1001, End::Eof));
}

/// Auth rejected (4003) with more requests pipelined behind the auth: they
/// are read and dropped, and the peer gets 4003 and a clean end.
async fn an_auth_rejection_with_requests_behind_it_closes_4003_cleanly(adapter: Adapter) {
    let builder = echo().auth(|_info, _data: Vec<Value>| async move {
        Err::<Identity, _>(RtmError::new(rtm_core::ErrorCode::AuthRejected, "no"))
    });
    let server = listen(adapter, builder).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    let mut bytes = frame(true, TEXT, br#"{"id":"a","type":"auth","data":["x"]}"#);
    for n in 0..200 {
        bytes.extend(invoke(
            &n.to_string(),
            "echo",
            json!(["pipelined after the auth"]),
        ));
    }
    peer.send(&bytes).await;
    closed_cleanly_with(&mut peer, 4003).await;
    soon("shutdown", server.shutdown()).await;
}

/// Auth timeout (4008) while the peer is mid-frame.
async fn an_auth_timeout_mid_frame_closes_4008_cleanly(adapter: Adapter) {
    let builder = echo()
        .auth(|_info, _data: Vec<Value>| async move { Ok(Identity::new("u", Value::Null)) })
        .auth_timeout(Duration::from_millis(200));
    let server = listen(adapter, builder).await;
    let mut peer = RawPeer::upgrade(server.local_addr(), "/").await;
    // Within the frame limit before authentication (max_auth_bytes + 1 KiB).
    let whole = invoke("1", "echo", json!(["w".repeat(12_000)]));
    let (first, rest) = whole.split_at(whole.len() / 3);
    peer.send(first).await;
    async_io::Timer::after(Duration::from_millis(400)).await;
    let _ = peer.try_send(rest).await;
    closed_cleanly_with(&mut peer, 4008).await;
    soon("shutdown", server.shutdown()).await;
}

// ----- 3. bad handshakes get an HTTP answer -----

async fn malformed_handshakes_get_an_http_status_not_silence(adapter: Adapter) {
    let server = listen(adapter, echo()).await;
    let addr = server.local_addr();
    let good = upgrade_request(addr, "/");
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "a health check",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            426,
        ),
        ("a POST", good.replace("GET", "POST"), 400),
        (
            "no key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
        ),
        ("version 8", good.replace("Version: 13", "Version: 8"), 426),
        (
            "Upgrade: h2c",
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            426,
        ),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        (
            "garbage",
            "\u{16}\u{3}\u{1}not http at all\r\n\r\n".into(),
            400,
        ),
        ("another path", good.replace("GET /", "GET /nope"), 404),
    ];
    for (what, request, status) in cases {
        let mut peer = RawPeer::connect(addr).await;
        peer.send(request.as_bytes()).await;
        let (response, end) = peer.read_to_end().await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {response:?}"
        );
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(!body.is_empty(), "{what}: no body");
        if status == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13"), "{what}: {head}");
        }
        assert_eq!(end, End::Eof, "{what}: the answer must not be reset");
    }
    soon("shutdown", server.shutdown()).await;
}

// ----- 4. the request and the first frame in one write -----

async fn the_first_frame_in_the_upgrades_packet_is_served(adapter: Adapter) {
    let server = listen(adapter, echo()).await;
    let addr = server.local_addr();
    let mut peer = RawPeer::connect(addr).await;
    let mut bytes = upgrade_request(addr, "/").into_bytes();
    bytes.extend(invoke("1", "echo", json!(["same packet"])));
    peer.send(&bytes).await;
    let head = peer.read_http_head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        reply(&mut peer).await,
        json!({"id": "1", "data": "same packet"})
    );
    soon("shutdown", server.shutdown()).await;
}

// ----- 8. one connection's functions start in arrival order -----

async fn a_connections_calls_start_in_arrival_order(adapter: Adapter) {
    const CALLS: usize = 300;
    // `tell(n)` emits `n` to the connection that asked for `/?listener`.
    let builder = echo().register("tell", |ctx: CallContext, (n,): (u64,)| async move {
        let listener = |info: &rtm_core::ConnInfo| info.meta.path.as_deref() == Some("/?listener");
        ctx.server.emit("n", listener, &(n,))?;
        Ok::<_, RtmError>(())
    });
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let mut listener = RawPeer::upgrade(addr, "/?listener").await;
    let mut caller = RawPeer::upgrade(addr, "/").await;
    let handle = server.handle().clone();
    until("both connections", || handle.connection_count() == 2).await;
    let mut burst = Vec::new();
    for n in 0..CALLS {
        burst.extend(invoke(&format!("c{n}"), "tell", json!([n])));
    }
    caller.send(&burst).await;
    let mut order = Vec::with_capacity(CALLS);
    while order.len() < CALLS {
        let frame = listener.read_frame().await.expect("an event");
        let event: Value = serde_json::from_slice(&frame.payload).unwrap();
        order.push(event["data"][0].as_u64().unwrap() as usize);
    }
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(inversions, 0, "events out of order: {order:?}");
    soon("shutdown", server.shutdown()).await;
}

// ----- 9. the origin guard -----

async fn an_origin_not_allowed_gets_403_before_the_upgrade(adapter: Adapter) {
    let builder = echo().allowed_origins(AllowedOrigins::list(["https://chat.example.com"]));
    let server = listen(adapter, builder).await;
    let addr = server.local_addr();
    let request = |origin: Option<&str>| {
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        upgrade_request(addr, "/").replace("\r\n\r\n", &format!("\r\n{origin}\r\n"))
    };
    let status = |addr: SocketAddr, text: String| async move {
        let mut peer = RawPeer::connect(addr).await;
        peer.send(text.as_bytes()).await;
        peer.read_http_head().await
    };
    let evil = status(addr, request(Some("https://evil.example"))).await;
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    let good = status(addr, request(Some("https://chat.example.com"))).await;
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    let none = status(addr, request(None)).await;
    assert!(
        none.starts_with("HTTP/1.1 101"),
        "no Origin (not a browser): {none}"
    );
    soon("shutdown", server.shutdown()).await;
}

on_every_adapter!(
    a_clients_close_is_echoed_with_its_code_and_the_stream_ends_cleanly,
    faults_get_their_close_code_and_a_clean_end,
    an_oversized_message_gets_1009_not_a_reset,
    shutdown_mid_frame_closes_1001_and_lingers,
    an_auth_rejection_with_requests_behind_it_closes_4003_cleanly,
    an_auth_timeout_mid_frame_closes_4008_cleanly,
    malformed_handshakes_get_an_http_status_not_silence,
    the_first_frame_in_the_upgrades_packet_is_served,
    a_connections_calls_start_in_arrival_order,
    an_origin_not_allowed_gets_403_before_the_upgrade,
);
