//! RTM mounted on an axum route (`http::RtmService`), next to the
//! application's own routes, served by `http::serve`. (The byte-exact
//! handshake answers and close codes under an axum route are in
//! `conformance/tests/axum_upgrade.rs`; the bounds of `http::serve` at their
//! edges in the chat's tests, `tests/chat_example/http.rs`.)
#![cfg(feature = "axum")]

use std::future::Future;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rtm_tokio::http::{serve, HttpOptions, PerIpLimit, RtmService};
use rtm_tokio::{CallContext, Client, ClientOptions, RtmError, Server, ServerBuilderExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Awaits `future` at most 5 s; panics naming `what` when it does not complete.
async fn soon<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn client_calls_a_function_on_an_axum_route_and_the_function_sees_its_address() {
    let rtm = Server::builder()
        .register("hello", |ctx: CallContext, (name,): (String,)| async move {
            let path = ctx.info.meta.path.clone().unwrap_or_default();
            let peer = ctx.info.meta.peer_addr.map(|p| p.ip().to_string());
            Ok::<_, RtmError>(format!("Hello, {name}, on {path} from {peer:?}!"))
        })
        .embedded();
    let app: Router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route_service("/rtm", RtmService::new(rtm.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve(listener, app, HttpOptions::default(), async {
        let _ = stopped.await;
    }));

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
    assert_eq!(greeting, "Hello, axum, on /rtm from Some(\"127.0.0.1\")!");
    assert_eq!(rtm.connection_count(), 1);

    // Events reach a connection on the route too.
    let (alerts, mut alerts_rx) = tokio::sync::mpsc::unbounded_channel();
    let _alerts = client.subscribe("alert", move |(text,): (String,)| {
        let _ = alerts.send(text);
    });
    assert_eq!(rtm.emit("alert", |_| true, &("hi",)).unwrap(), 1);
    assert_eq!(soon("the alert", alerts_rx.recv()).await.unwrap(), "hi");

    // Shutdown: RTM closes its sockets, then the HTTP server drains and returns.
    client.close();
    soon("rtm shutdown", rtm.shutdown()).await;
    let _ = stop.send(());
    soon("the HTTP server to return", serving).await.unwrap();
}

/// One address holds at most `per_ip` connections (an upgraded RTM socket
/// counts until it closes); the one past it is closed as soon as accepted,
/// and a slot given back is taken again.
#[tokio::test]
async fn one_address_holds_at_most_its_connections_rtm_sockets_included() {
    let rtm = Server::builder().embedded();
    let app: Router = Router::new()
        .route("/", get(|| async { "page" }))
        .route_service("/rtm", RtmService::new(rtm.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limit = PerIpLimit::new(2);
    let options = HttpOptions {
        per_ip: Some(limit.clone()),
        ..HttpOptions::default()
    };
    tokio::spawn(serve(listener, app, options, std::future::pending()));

    let url = format!("ws://{addr}/rtm");
    let socket = soon("connect", Client::connect(&url, ClientOptions::default()))
        .await
        .unwrap();
    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut page = [0u8; 256];
    assert!(soon("the page", held.read(&mut page)).await.unwrap() > 0);
    soon("both counted", async {
        while limit.open() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = soon("the third to be closed", third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third was served: {read:?}"
    );

    // The RTM socket closes: its slot is given back.
    socket.close();
    soon("the socket's slot given back", async {
        while limit.open() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = soon("the fourth served", fourth.read(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}
