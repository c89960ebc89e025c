//! RTM mounted on an axum route, next to the application's own routes; and
//! the own listener's path check.
#![cfg(feature = "axum")]

mod common;

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use axum::Router;
use common::soon;
use rtm_tokio::{CallContext, Client, ClientOptions, ConnMeta, RtmError, Server, ServerBuilderExt};

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
    assert_eq!(common::recv("the alert", &mut alerts_rx).await, "hi");

    client.close();
    serving.abort();
}

#[tokio::test]
async fn own_listener_answers_404_on_another_path() {
    let server = Server::builder()
        .path("/rtm")
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    assert!(server.url().ends_with("/rtm"));
    let addr = server.local_addr();
    for path in ["/", "/other", "/rtm/deeper"] {
        let refused = soon(
            "a refused handshake",
            tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
        )
        .await;
        match refused {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 404, "path {path}")
            }
            other => panic!("path {path}: expected HTTP 404, got {other:?}"),
        }
    }
    // The right path (with a query) upgrades and is served.
    let mut ws = common::raw_connect(&format!("ws://{addr}/rtm?v=1")).await;
    common::invoke(&mut ws, "1", "missing", serde_json::json!([])).await;
    let reply = common::next_json(&mut ws).await;
    assert_eq!(reply["data"]["error"]["code"], "rtm/function-not-found");
    drop(ws);
    server.shutdown().await;
}
