use futures_util::{SinkExt, StreamExt};
use rtm_tokio::{CallContext, RtmError, Server, ServerBuilderExt};
use tungstenite::Message;

#[tokio::test]
async fn echo_over_a_real_socket() {
    let server = Server::builder()
        .register(
            "echo",
            |_ctx: CallContext, (x,): (serde_json::Value,)| async move { Ok::<_, RtmError>(x) },
        )
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"id":"1","type":"invoke","function":"echo","data":["hi"]}"#,
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(
        reply.into_text().unwrap().as_str(),
        r#"{"id":"1","data":"hi"}"#
    );
    ws.send(Message::text("not json")).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1007),
        other => panic!("{other:?}"),
    }
    // Reading on answers the close, so shutdown need not wait out its grace.
    while let Some(Ok(_)) = ws.next().await {}
    server.shutdown().await;
}
