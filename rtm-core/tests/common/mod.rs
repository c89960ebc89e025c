//! Helpers shared by the integration tests: a synchronous driver around the
//! server core running the fixture functions (the wire-vector interpreter
//! lives in `rtm_core::testkit::vectors`).
// Each test crate uses a different part of these helpers.
#![allow(dead_code)]

pub(crate) mod harness;
pub(crate) mod sim;

/// A connection on `server` of the sans-IO `cluster`, signed in with
/// `token` (its answers taken).
pub(crate) fn signed_in(
    cluster: &mut rtm_core::testkit::Cluster,
    server: usize,
    token: &str,
) -> rtm_core::ConnId {
    let conn = cluster.connect(server, std::time::Instant::now()).unwrap();
    cluster.send(
        server,
        conn,
        format!(r#"{{"id":"a","type":"auth","data":["{token}"]}}"#),
    );
    cluster.take_frames(server, conn);
    conn
}
