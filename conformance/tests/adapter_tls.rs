//! `wss://` on every adapter (tokio, async-std, smol): the listener speaks TLS
//! with the server's certificate, our client checks it against the roots it
//! trusts, and everything else is the same protocol.

use std::time::Duration;

use async_channel::unbounded;
use conformance::adapter::{recv, soon, until, Adapter};
use conformance::on_every_adapter;
use rtm_core::{ErrorCode, RtmError};
use rtm_driver::tls::{ClientTls, ServerTls, TlsError};
use rtm_driver::{CallContext, ClientOptions, Listening, ServerBuilder};

/// A throwaway self-signed certificate for `localhost` and `127.0.0.1`: (certificate, key) in PEM.
fn self_signed() -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

async fn tls_server(adapter: Adapter, cert: &str, key: &str) -> Listening {
    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let builder = ServerBuilder::new()
        .tls(tls)
        .register("add", |_ctx: CallContext, (a, b): (i64, i64)| async move {
            Ok::<_, RtmError>(a + b)
        });
    let addr = "127.0.0.1:0".parse().unwrap();
    adapter.listen(builder, addr).await.unwrap()
}

fn trusting(cert: &str) -> ClientOptions {
    ClientOptions::default()
        .connect_timeout(Duration::from_secs(5))
        .tls(ClientTls::trusting_pem(cert.as_bytes()).unwrap())
}

async fn wss_carries_calls_and_events_for_a_client_that_trusts_the_certificate(adapter: Adapter) {
    let (cert, key) = self_signed();
    let server = tls_server(adapter, &cert, &key).await;
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let client = adapter.connect(&url, trusting(&cert)).await.unwrap();
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);

    let (alerts, alerts_rx) = unbounded();
    let _alerts = client.subscribe("alert", move |(text,): (String,)| {
        let _ = alerts.try_send(text);
    });
    // Without auth nothing marks the open on the server's side: wait for it.
    until("the server to hold the connection", || {
        server.handle().connection_count() == 1
    })
    .await;
    assert_eq!(
        server
            .handle()
            .emit("alert", |_| true, &("over TLS",))
            .unwrap(),
        1
    );
    assert_eq!(recv("the alert", &alerts_rx).await, "over TLS");

    // By name too: the certificate names `localhost`.
    let by_name = url.replace("127.0.0.1", "localhost");
    let other = adapter.connect(&by_name, trusting(&cert)).await.unwrap();
    let seven: i64 = soon("add", other.call_wait("add", &(3, 4))).await.unwrap();
    assert_eq!(seven, 7);
    client.close();
    other.close();
    soon("shutdown", server.shutdown()).await;
}

async fn a_client_that_does_not_trust_the_certificate_never_opens_and_says_why(adapter: Adapter) {
    let (cert, key) = self_signed();
    let server = tls_server(adapter, &cert, &key).await;
    // Mozilla's roots (the default) do not include a self-signed certificate.
    let options = ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500));
    let err = adapter.connect(&server.url(), options).await.err().unwrap();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(err.message.contains("certificate"), "{err}");
    // Nor does another self-signed certificate.
    let (stranger, _) = self_signed();
    let options = trusting(&stranger).connect_timeout(Duration::from_millis(500));
    let err = adapter.connect(&server.url(), options).await.err().unwrap();
    assert!(err.message.contains("certificate"), "{err}");
    assert_eq!(server.handle().connection_count(), 0);
    soon("shutdown", server.shutdown()).await;
}

async fn plain_ws_to_a_tls_listener_fails_and_the_listener_keeps_serving(adapter: Adapter) {
    let (cert, key) = self_signed();
    let server = tls_server(adapter, &cert, &key).await;
    let plain = server.url().replacen("wss://", "ws://", 1);
    let options = ClientOptions::default()
        .reconnect_delay(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500));
    let err = adapter.connect(&plain, options).await.err().unwrap();
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    let client = adapter
        .connect(&server.url(), trusting(&cert))
        .await
        .unwrap();
    let three: i64 = soon("add", client.call_wait("add", &(1, 2))).await.unwrap();
    assert_eq!(three, 3);
    client.close();
    soon("shutdown", server.shutdown()).await;
}

/// The handshake timeout covers TLS too: a peer that connects and never
/// says hello is dropped.
async fn a_connection_silent_before_its_tls_hello_is_dropped_at_the_handshake_timeout(
    adapter: Adapter,
) {
    let (cert, key) = self_signed();
    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let builder = ServerBuilder::new()
        .tls(tls)
        .handshake_timeout(Duration::from_millis(200));
    let addr = "127.0.0.1:0".parse().unwrap();
    let server = adapter.listen(builder, addr).await.unwrap();
    conformance::raw_ws::silent_tcp_until_dropped(server.local_addr()).await;
    soon("shutdown", server.shutdown()).await;
}

#[test]
fn bad_tls_material_is_a_clear_error() {
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    let err = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(
        matches!(err, TlsError::Rustls(_)),
        "a key of another certificate: {err}"
    );
    let err = ServerTls::from_pem(cert.as_bytes(), b"").unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey), "{err}");
    let err = ServerTls::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate), "{err}");
    let err = ClientTls::trusting_pem(b"-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap_err();
    assert!(matches!(err, TlsError::Pem(_)), "{err}");
    let err =
        ServerTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    assert!(ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
}

on_every_adapter!(
    wss_carries_calls_and_events_for_a_client_that_trusts_the_certificate,
    a_client_that_does_not_trust_the_certificate_never_opens_and_says_why,
    plain_ws_to_a_tls_listener_fails_and_the_listener_keeps_serving,
    a_connection_silent_before_its_tls_hello_is_dropped_at_the_handshake_timeout,
);
