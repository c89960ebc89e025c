//! The seed's flow: register `hello`, call it with `call_wait`, the server
//! emits `alert`, the client's subscription prints it.
//!
//! `cargo run -p rtm-tokio --example hello`
use std::time::Duration;

use rtm_tokio::{CallContext, Client, ClientOptions, RtmError, Server, ServerBuilderExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Server: one function that greets and then alerts everyone.
    let server = Server::builder()
        .register("hello", |ctx: CallContext, (name,): (String,)| async move {
            ctx.server
                .emit("alert", |_| true, &("Hello from server!",))?;
            Ok::<_, RtmError>(format!("Hello, {name}!"))
        })
        .listen("127.0.0.1:0")
        .await?;
    println!("server listening on {}", server.url());

    // Client: subscribe to `alert`, then call `hello`.
    let client = Client::connect(&server.url(), ClientOptions::default()).await?;
    let (alerts, mut alert) = tokio::sync::mpsc::unbounded_channel();
    let _subscription = client.subscribe("alert", move |(text,): (String,)| {
        let _ = alerts.send(text);
    });
    let greeting: String = client.call_wait("hello", &("Rust",)).await?;
    println!("hello returned: {greeting}");
    let text = tokio::time::timeout(Duration::from_secs(5), alert.recv()).await?;
    println!("alert received: {}", text.unwrap_or_default());

    client.close();
    server.shutdown().await;
    Ok(())
}
