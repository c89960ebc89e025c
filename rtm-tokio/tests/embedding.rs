//! RTM mounted on an axum route, next to the application's own routes.
//! (The own listener's path check, and `serve_websocket` on a socket
//! upgraded elsewhere, run on every adapter in
//! `conformance/tests/adapter_transport.rs`.)
#![cfg(feature = "axum")]

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use axum::Router;
use rtm_tokio::{CallContext, Client, ClientOptions, ConnMeta, RtmError, Server, ServerBuilderExt};

/// Awaits `future` at most 5 s; panics naming `what` when it does not complete.
async fn soon<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn client_calls_a_function_on_an_axum_route() {
    let rtm = Server::builder()
        .register("hello", |ctx: CallContext, (name,): (String,)| async move {
            let path = ctx.info.meta.path.clone().unwrap_or_default();
            Ok::<_, RtmError>(format!("Hello, {name}, on {path}!"))
        })
        .embedded();
    let route = rtm.clone();
    let app: Router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/rtm",
            get(move |ws: WebSocketUpgrade| {
                let rtm = route.clone();
                async move {
                    ws.on_upgrade(move |socket| async move {
                        let meta = ConnMeta {
                            peer_addr: None,
                            path: Some("/rtm".into()),
                        };
                        rtm_tokio::serve_axum(&rtm, socket, meta).await
                    })
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = soon(
        "connect",
        Client::connect(
            &format!("ws://{addr}/rtm"),
            ClientOptions::default().connect_timeout(Duration::from_secs(5)),
        ),
    )
    .await
    .unwrap();
    let greeting: String = soon("hello", client.call_wait("hello", &("axum",)))
        .await
        .unwrap();
    assert_eq!(greeting, "Hello, axum, on /rtm!");
    assert_eq!(rtm.connection_count(), 1);

    // Events reach an axum connection too.
    let (alerts, mut alerts_rx) = tokio::sync::mpsc::unbounded_channel();
    let _alerts = client.subscribe("alert", move |(text,): (String,)| {
        let _ = alerts.send(text);
    });
    assert_eq!(rtm.emit("alert", |_| true, &("hi",)).unwrap(), 1);
    assert_eq!(soon("the alert", alerts_rx.recv()).await.unwrap(), "hi");

    client.close();
    serving.abort();
}
