//! `rtm_tokio::http::RtmService`: RTM under an axum route behaves as the
//! server's own listener does (byte-exact, with a raw peer): bad handshakes
//! get their HTTP answer, a client's close is echoed, faults get their close
//! code and a clean end.

use std::net::SocketAddr;

use axum::Router;
use conformance::raw_tcp::{
    close_payload, frame, frame_with, upgrade_request, End, RawPeer, CLOSE, TEXT,
};
use rtm_core::RtmError;
use rtm_tokio::http::RtmService;
use rtm_tokio::{CallContext, Server, ServerBuilderExt};
use serde_json::{json, Value};

/// An axum app with RTM on `/rtm`; returns its address.
async fn app() -> SocketAddr {
    let handle = Server::builder()
        .register("echo", |_ctx: CallContext, (x,): (Value,)| async move {
            Ok::<_, RtmError>(x)
        })
        .embedded();
    let app = Router::new().route_service("/rtm", RtmService::new(handle));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

#[tokio::test]
async fn bad_handshakes_get_their_http_answer() {
    let addr = app().await;
    let good = upgrade_request(addr, "/rtm");
    for (request, status) in [
        (format!("GET /rtm HTTP/1.1\r\nHost: {addr}\r\n\r\n"), 426),
        (good.replace("Version: 13", "Version: 8"), 426),
        (
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
        ),
    ] {
        let mut peer = RawPeer::connect(addr).await;
        peer.send(request.as_bytes()).await;
        let head = peer.read_http_head().await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
    }
}

#[tokio::test]
async fn calls_work_and_a_clients_close_is_echoed_with_a_clean_end() {
    let addr = app().await;
    let mut peer = RawPeer::upgrade(addr, "/rtm").await;
    let call = json!({"id": "1", "type": "invoke", "function": "echo", "data": ["hi"]});
    peer.send(&frame(true, TEXT, call.to_string().as_bytes()))
        .await;
    let reply = peer.read_frame().await.unwrap();
    assert_eq!(reply.payload, br#"{"id":"1","data":"hi"}"#);
    peer.send(&frame(true, CLOSE, &close_payload(4001, "bye")))
        .await;
    let echoed = peer.read_frame().await.unwrap();
    assert_eq!(echoed.close().map(|c| c.0), Some(4001));
    assert_eq!(
        peer.end_within(std::time::Duration::from_secs(5)).await,
        End::Eof
    );
}

#[tokio::test]
async fn faults_get_their_close_code() {
    let addr = app().await;
    let mut rsv = frame(true, TEXT, b"{}");
    rsv[0] |= 0x40;
    for (bytes, code) in [
        (frame(true, TEXT, &[0x7B, 0xFF, 0x7D]), 1007),
        (rsv, 1002),
        (frame_with(true, 0, TEXT, false, b"{}"), 1002),
    ] {
        let mut peer = RawPeer::upgrade(addr, "/rtm").await;
        peer.send(&bytes).await;
        let (got, _, end) = peer.expect_close(5).await;
        assert_eq!((got, end), (code, End::Eof));
    }
}
