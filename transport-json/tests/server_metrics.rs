//! The `metrics` feature of the server: connections accepted and open, answers, and decode
//! errors, reported through the `metrics` facade with the server's address as label. This
//! crate's tests build it with the feature (Cargo.toml), so `cargo test --workspace` runs
//! these; without the feature this file is empty.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;

use metrics::with_local_recorder;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::{Client, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use transport_json::server::{Server, ServerConfig};

/// What the recorder reported so far, per metric name, for one server label. A snapshot of
/// the debugging recorder drains it (counters and gauges back to 0), and the server only adds
/// to its counters and moves its gauge up and down, so the sum of the snapshots is the value.
struct Seen {
    snapshotter: Snapshotter,
    server: String,
    values: HashMap<String, f64>,
}

impl Seen {
    /// Takes a snapshot, and returns the value of `name`.
    fn value(&mut self, name: &str) -> f64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let labelled = key
                .key()
                .labels()
                .any(|label| label.key() == "server" && label.value() == self.server);
            assert!(labelled, "{key:?} has no `server` label of {}", self.server);
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => panic!("no histogram expected, got {h:?}"),
            };
            *self.values.entry(key.key().name().to_owned()).or_default() += value;
        }
        self.values.get(name).copied().unwrap_or_default()
    }
}

#[tokio::test]
async fn server_counts_connections_answers_and_decode_errors() {
    let recorder = DebuggingRecorder::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    let config = ServerConfig {
        max_frame: 64,
        ..ServerConfig::default()
    };
    let server = with_local_recorder(&recorder, || Server::new(listener, config))
        .expect("a server")
        .spawn();
    let mut seen = Seen {
        snapshotter: recorder.snapshotter(),
        server: addr.to_string(),
        values: HashMap::new(),
    };

    // Five requests answered on one connection.
    let mut client = Client::connect(addr).await;
    for i in 0..5 {
        client.echo(&i.to_string()).await;
    }
    assert_eq!(seen.value("json_server.connections.accepted"), 1.0);
    assert_eq!(seen.value("json_server.connections"), 1.0);
    assert_eq!(seen.value("json_server.requests.answered"), 5.0);
    assert_eq!(seen.value("json_server.decode_errors"), 0.0);

    // Bytes that are not JSON: a decode error, and the connection closes unanswered.
    let mut garbage = Client::connect(addr).await;
    garbage.send(b"nope\n").await;
    assert!(garbage.until_closed().await.is_empty());
    assert_eq!(seen.value("json_server.decode_errors"), 1.0);
    assert_eq!(seen.value("json_server.connections.accepted"), 2.0);

    // A frame over the maximum: a decode error, answered with an `Err` first.
    let mut long = Client::connect(addr).await;
    long.send(format!(r#"{{"Uid":"x","Val":"{}"}}"#, "y".repeat(100)).as_bytes())
        .await;
    let answers = long.until_closed().await;
    assert!(
        answers.len() == 1 && answers[0].err.is_some(),
        "{answers:?}"
    );
    assert_eq!(seen.value("json_server.decode_errors"), 2.0);
    assert_eq!(seen.value("json_server.requests.answered"), 6.0);

    // A client that leaves inside a frame is not a decode error.
    let mut leaving = Client::connect(addr).await;
    leaving.send(br#"{"Uid":"z""#).await;
    within("the write side to close", leaving.write.shutdown())
        .await
        .expect("shuts down");
    assert!(leaving.until_closed().await.is_empty());
    assert_eq!(seen.value("json_server.decode_errors"), 2.0);
    assert_eq!(seen.value("json_server.connections.accepted"), 4.0);

    // The first connection still answers; once the server has stopped, none is open.
    client.echo("last").await;
    assert_eq!(seen.value("json_server.requests.answered"), 7.0);
    within("the shutdown", server.shutdown())
        .await
        .expect("stops");
    assert_eq!(seen.value("json_server.connections"), 0.0);
}
