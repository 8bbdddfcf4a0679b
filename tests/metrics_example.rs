//! `--metrics-addr` of `examples/echo_server.rs` and `examples/client.rs` (feature
//! `prometheus`), as a user runs them: the built programs on loopback, their Prometheus text
//! fetched with a plain HTTP/1.1 GET over a `TcpStream`, the counters read off it.
//! `tests/programs` builds the programs.
#![forbid(unsafe_code)]

mod programs;

use std::process::Stdio;

use programs::{RUN_BOUND, echo_server, programs, strings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::time::timeout;
use transport_json::{Conn, ConnectOptions};

/// The body of `GET /metrics` at `addr`, after checking the answer is `200 OK`.
async fn scrape(addr: &str) -> String {
    let fetched = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = timeout(RUN_BOUND, fetched)
        .await
        .expect("the metrics come within the bound")
        .expect("the metrics are served");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the series `name{labels}` in Prometheus text (`labels` as the exporter writes
/// them: `key="value"`, comma-separated); `None` when it is not there.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.trim().parse().expect("a number"))
}

/// What a program said on stderr after `prefix`, in the line that starts with it.
fn said<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in {lines:?}"))
}

#[tokio::test]
async fn echo_server_serves_its_counters_as_prometheus_text() {
    let server = echo_server(&strings(&["--metrics-addr", "127.0.0.1:0"])).await;
    let metrics = said(&server.before, "echo_server: Prometheus metrics at http://")
        .strip_suffix("/metrics")
        .expect("the address, then /metrics");
    let label = format!("server=\"{}\"", server.addr);

    // Seven requests answered on one connection.
    let options = ConnectOptions::new(server.addr.clone())
        .connect_timeout(RUN_BOUND)
        .request_timeout(Some(RUN_BOUND));
    let conn = Conn::connect(&options).await.expect("connects");
    for i in 0..7 {
        let resp = conn.request(i.to_string()).await.expect("an answer");
        assert_eq!(resp.val, format!("server: hello, {i}"));
    }
    let text = scrape(metrics).await;
    let read = |name| value(&text, name, &label);
    assert_eq!(
        read("json_server_connections_accepted"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(read("json_server_connections"), Some(1.0), "{text}");
    assert_eq!(read("json_server_requests_answered"), Some(7.0), "{text}");
    assert_eq!(read("json_server_decode_errors"), Some(0.0), "{text}");

    // A client sending bytes that are not JSON: a decode error, and it is closed.
    let mut garbage = TcpStream::connect(&server.addr).await.expect("connects");
    garbage.write_all(b"nope\n").await.expect("writes");
    let mut rest = Vec::new();
    timeout(RUN_BOUND, garbage.read_to_end(&mut rest))
        .await
        .expect("the server closes it")
        .expect("a clean close");
    let text = scrape(metrics).await;
    let read = |name| value(&text, name, &label);
    assert_eq!(
        read("json_server_connections_accepted"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(read("json_server_decode_errors"), Some(1.0), "{text}");
    assert_eq!(read("json_server_requests_answered"), Some(7.0), "{text}");
}

#[tokio::test]
async fn client_serves_its_pool_metrics_while_it_runs() {
    // A server that takes the request and never answers, so the client is still running.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = silent.local_addr().expect("bound").to_string();
    let mut client = Command::new(&programs().await.client)
        .args(["--addr", &addr, "--requests", "1", "--quiet"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client starts");
    let mut lines = BufReader::new(client.stderr.take().expect("piped")).lines();
    let first = timeout(RUN_BOUND, lines.next_line())
        .await
        .expect("the client says where its metrics are")
        .expect("stderr reads")
        .expect("a line");
    let metrics = said(&[first], "client: Prometheus metrics at http://")
        .strip_suffix("/metrics")
        .expect("the address, then /metrics")
        .to_owned();

    // The request has come: the pool made its connection and lent it.
    let (mut stream, _) = timeout(RUN_BOUND, silent.accept())
        .await
        .expect("the client connects")
        .expect("accepted");
    let mut request = BufReader::new(&mut stream);
    let mut line = String::new();
    timeout(RUN_BOUND, request.read_line(&mut line))
        .await
        .expect("the request comes")
        .expect("reads");
    assert!(line.contains(r#""Uid":"1""#), "{line}");

    let text = scrape(&metrics).await;
    let label = "pool=\"client\"";
    assert_eq!(
        value(&text, "pool_connections_created", label),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "pool_connects_failed", label),
        Some(0.0),
        "{text}"
    );
    client.kill().await.expect("the client stops");
}

#[tokio::test]
async fn a_metrics_addr_that_is_not_ip_and_port_is_refused() {
    let programs = programs().await;
    for (program, name) in [
        (&programs.echo_server, "echo_server"),
        (&programs.client, "client"),
    ] {
        let command = Command::new(program)
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "metrics.example"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = timeout(RUN_BOUND, command)
            .await
            .expect("refused at once")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{name}: cannot serve metrics on metrics.example: \"metrics.example\" is not IP:PORT"
            )),
            "{name}: {stderr}"
        );
    }
}
