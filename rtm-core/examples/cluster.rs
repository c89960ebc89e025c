//! Two servers, three connections, one in-memory broker: a whole RTM cluster
//! inside one process, no sockets. Run with `cargo run -p rtm-core --example cluster`.

use std::time::Instant;

use rtm_core::testkit::{Cluster, TokenApp};
use rtm_core::{Args, ConnId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = TokenApp::new()
        .with_token("t-alice", "alice")
        .with_token("t-bob", "bob");
    let mut cluster = Cluster::new(2, app);
    let now = Instant::now();

    // alice is connected to both servers, bob to the second one.
    let alice0 = (0, cluster.connect(0, now)?);
    let alice1 = (1, cluster.connect(1, now)?);
    let bob1 = (1, cluster.connect(1, now)?);
    for ((server, conn), token) in [(alice0, "t-alice"), (alice1, "t-alice"), (bob1, "t-bob")] {
        let auth = format!(r#"{{"id":"auth","type":"auth","data":["{token}"]}}"#);
        cluster.send(server, conn, auth);
    }
    show(&mut cluster, "after auth", &[alice0, alice1, bob1]);

    // Push subscriptions: alice (server 0) follows match-7, bob follows match-7 and match-9.
    let (server, conn) = alice0;
    cluster.send(
        server,
        conn,
        r#"{"id":"s1","type":"subscribe","event":"score","tags":["match-7"]}"#,
    );
    let (server, conn) = bob1;
    cluster.send(
        server,
        conn,
        r#"{"id":"s2","type":"subscribe","event":"score","tags":["match-7","match-9"]}"#,
    );
    show(&mut cluster, "after subscribe", &[alice0, alice1, bob1]);

    // Publish from server 1 to alice: each of her connections gets it once, on both servers.
    let sent = cluster.publish(1, "alice", "alert", &Args::encode(&["Hello alice!"])?)?;
    println!(
        "publish to alice: {sent} local delivery on server 1, the broker carries it to server 0"
    );
    show(&mut cluster, "after publish", &[alice0, alice1, bob1]);

    // Push from server 0 to two tags: bob holds both, yet gets it once.
    let tags = ["match-7".to_owned(), "match-9".to_owned()];
    cluster.push(0, "score", &tags, &Args::encode(&(2, 1))?)?;
    show(
        &mut cluster,
        "after push to match-7 and match-9",
        &[alice0, alice1, bob1],
    );
    Ok(())
}

/// Prints and clears what each connection received.
fn show(cluster: &mut Cluster, title: &str, conns: &[(usize, ConnId)]) {
    println!("--- {title}");
    for &(server, conn) in conns {
        for frame in cluster.take_frames(server, conn) {
            println!(
                "  server {server} {conn}: {}",
                String::from_utf8_lossy(&frame)
            );
        }
    }
}
