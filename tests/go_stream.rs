//! The server reads what a Go client writes, over a raw `TcpStream`: values with no separator
//! (`w.Write(json.Marshal(m))` in a loop), values split across writes, whitespace between
//! values, unknown fields, and a 10 MB frame. Bad input (malformed JSON, an over-long frame, a
//! client leaving mid-message) closes only that connection: after each, a fresh connection and
//! a pooled connection opened before it are still served.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use pool::Pool;
use support::{bounded, chain, echoed, options, pool_to, pool_with, spawn_echo, until};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use transport_json::server::{RunningServer, ServerConfig};
use transport_json::{JsonManager, Resp};

const TEN_MB: usize = 10 * 1000 * 1000;

/// How long the server may take to drop a connection its client closed.
const SETTLE: Duration = Duration::from_secs(5);

/// A client that speaks the protocol by hand.
struct Raw {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        Raw {
            read: BufReader::new(read),
            write,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.expect("write");
        self.write.flush().await.expect("flush");
    }

    /// The next response, or `None` at end of stream (or on a reset).
    async fn next(&mut self) -> Option<Resp> {
        next_response(&mut self.read).await
    }

    async fn expect(&mut self, uid: &str, val: &str) {
        let resp = self
            .next()
            .await
            .expect("a response, not the end of the stream");
        assert_eq!(
            (resp.uid.as_str(), resp.val.as_str()),
            (uid, echoed(val).as_str())
        );
        assert_eq!(resp.err, None);
    }

    /// The server closed the connection: end of stream (or a reset), with no further response.
    async fn expect_closed(&mut self) {
        if let Some(resp) = self.next().await {
            panic!("expected the connection closed, got {resp:?}");
        }
    }
}

/// Reads the next response line; `None` at end of stream (or on a reset).
async fn next_response(read: &mut BufReader<OwnedReadHalf>) -> Option<Resp> {
    let mut line = Vec::new();
    match read.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            assert_eq!(line.last(), Some(&b'\n'), "a response ends with a newline");
            Some(serde_json::from_slice(&line).unwrap_or_else(|error| {
                panic!(
                    "not a response ({error}): {}",
                    String::from_utf8_lossy(&line)
                )
            }))
        }
    }
}

fn request(uid: &str, val: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "Uid": uid, "Val": val })).expect("encode")
}

/// A server, and a pool whose one connection is open before any bad input arrives.
struct Fixture {
    server: RunningServer,
    pool: Pool<JsonManager>,
}

impl Fixture {
    async fn start(config: ServerConfig) -> Fixture {
        let server = spawn_echo(config).await;
        let pool = pool_to(server.local_addr(), 1);
        let resp = pool.get().await.expect("checkout").request("warm").await;
        assert_eq!(
            resp.map(|r| r.val).map_err(|e| chain(&e)),
            Ok(echoed("warm"))
        );
        Fixture { server, pool }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Other connections are unaffected: a fresh one is served, and so is the pooled one that
    /// was open all along (the pool made no other). Call it once every raw connection of the
    /// test is closed: the server must then be back to the pooled connection alone.
    async fn still_serves(&self) {
        let mut fresh = Raw::connect(self.addr()).await;
        fresh.send(&request("fresh", "still here")).await;
        fresh.expect("fresh", "still here").await;
        drop(fresh);

        let guard = self.pool.get().await.expect("checkout");
        let resp = guard.request("pooled").await.map_err(|e| chain(&e));
        assert_eq!(resp.map(|r| r.val), Ok(echoed("pooled")));
        drop(guard);
        let status = self.pool.status();
        assert_eq!(
            status.counters.created, 1,
            "the pooled connection survived: {status:?}"
        );
        let settled =
            tokio::time::timeout(SETTLE, until(|| self.server.active_connections() == 1)).await;
        assert!(
            settled.is_ok(),
            "the server still has {} connections open, expected only the pooled one",
            self.server.active_connections()
        );
    }

    async fn stop(self) {
        self.pool.close().await;
        self.server.shutdown().await.expect("server shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_with_no_separator_are_each_answered() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let mut go = Raw::connect(fx.addr()).await;
        // What a Go client writing `json.Marshal(m)` in a loop sends: objects back to back.
        let mut bytes = Vec::new();
        for i in 0..500 {
            bytes.extend(request(&i.to_string(), &format!("v{i}")));
        }
        go.send(&bytes).await;
        let mut seen = vec![false; 500];
        for _ in 0..500 {
            let resp = go.next().await.expect("a response");
            let i: usize = resp.uid.parse().expect("a uid we sent");
            assert_eq!(resp.val, echoed(&format!("v{i}")));
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "uid {i} answered twice"
            );
        }
        drop(go);
        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_split_across_writes_at_any_byte_is_answered() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let mut go = Raw::connect(fx.addr()).await;
        let second = br#"{"Uid":"b","Val":"split \"}\" {here}"}"#;
        for cut in 1..second.len() {
            // The first value and the head of the second go in one write; the server answers
            // the first, so it has read the head, before the tail is written.
            let mut head = request("a", "first");
            head.extend_from_slice(&second[..cut]);
            go.send(&head).await;
            go.expect("a", "first").await;
            go.send(&second[cut..]).await;
            go.expect("b", r#"split "}" {here}"#).await;
        }
        drop(go);
        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_between_and_inside_values_is_accepted() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let mut go = Raw::connect(fx.addr()).await;
        go.send(b" \r\n\t{\"Uid\":\"1\",\"Val\":\"a\"}\n\n  { \"Uid\" : \"2\" ,\n \"Val\" :\t\"b\" }\r\n")
            .await;
        // The requests of one connection are answered concurrently: in any order.
        let mut answers = Vec::new();
        for _ in 0..2 {
            let resp = go.next().await.expect("a response");
            answers.push((resp.uid, resp.val));
        }
        answers.sort();
        assert_eq!(
            answers,
            [
                ("1".to_owned(), echoed("a")),
                ("2".to_owned(), echoed("b")),
            ]
        );
        // Whitespace alone, then a value: still one stream.
        go.send(b"\n\n\n   ").await;
        go.send(br#"{"Uid":"3","Val":"c"}"#).await;
        go.expect("3", "c").await;
        drop(go);
        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored_and_missing_ones_are_empty() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let mut go = Raw::connect(fx.addr()).await;
        go.send(
            br#"{"Extra":{"nested":[1,{"x":"}"}],"s":"{"},"Uid":"1","N":3.5,"Val":"a","T":true,"Z":null}"#,
        )
        .await;
        go.expect("1", "a").await;
        // No Val: the empty string, as Go decodes it.
        go.send(br#"{"Uid":"2"}"#).await;
        go.expect("2", "").await;
        // No Uid: answered with Err, and the connection stays open.
        go.send(br#"{"Val":"anonymous"}"#).await;
        let resp = go.next().await.expect("a response");
        assert!(resp.err.is_some(), "{resp:?}");
        go.send(&request("3", "c")).await;
        go.expect("3", "c").await;
        drop(go);
        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_frame_is_answered_when_max_frame_allows_it() {
    bounded(async {
        let config = ServerConfig {
            max_frame: 16 * 1024 * 1024,
            ..ServerConfig::default()
        };
        let fx = Fixture::start(config).await;
        let big = "x".repeat(TEN_MB);

        // By hand, in one write. The server answers only once it has read the whole frame.
        let mut go = Raw::connect(fx.addr()).await;
        go.send(&request("big", &big)).await;
        let resp = go.next().await.expect("a response");
        assert_eq!(resp.uid, "big");
        assert_eq!(resp.val.len(), "server: hello, ".len() + TEN_MB);
        assert!(resp.val == echoed(&big));
        go.send(&request("small", "after")).await;
        go.expect("small", "after").await;
        drop(go);

        // Through a pooled connection whose own frame limit allows it.
        let pool = pool_with(options(fx.addr()).max_frame(16 * 1024 * 1024), 1);
        let resp = pool
            .get()
            .await
            .expect("checkout")
            .request(big.clone())
            .await;
        let resp = resp.unwrap_or_else(|e| panic!("10 MB through the pool: {}", chain(&e)));
        assert!(resp.val == echoed(&big));
        pool.close().await;

        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_frame_closes_the_connection_under_the_default_max() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let Raw {
            mut read,
            mut write,
        } = Raw::connect(fx.addr()).await;
        let mut frame = request("first", "fine");
        frame.extend(request("big", &"x".repeat(TEN_MB)));
        // The server stops reading and closes the connection part way, so the write runs in a
        // task of its own and may fail.
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&frame).await;
        });
        // The value before the long frame may be answered; the long one never is: the server
        // says why (an `Err` with no `Uid`, unless a reset beats it) and the connection ends.
        if let Some(resp) = next_response(&mut read).await {
            assert_eq!((resp.uid.as_str(), resp.err), ("first", None));
            if let Some(why) = next_response(&mut read).await {
                assert_eq!(why.uid, "");
                assert_eq!(
                    why.err.as_deref(),
                    Some("frame too large: more than 1048576 bytes")
                );
                let after = next_response(&mut read).await;
                assert!(
                    after.is_none(),
                    "expected the connection closed, got {after:?}"
                );
            }
        }
        writer.await.expect("writer");
        drop(read);
        fx.still_serves().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_closes_only_that_connection() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;
        let bad: [&[u8]; 6] = [
            br#"{"Uid": nope}"#,
            br#"{"Uid":"x","Val":"a"]"#,
            br#"{"Uid":1,"Val":"number uid"}"#,
            b"[1,2,3]",
            b"\"a string\"",
            b"}{",
        ];
        for input in bad {
            let mut go = Raw::connect(fx.addr()).await;
            // A good value first: answered, then the bad one closes the connection.
            let mut bytes = request("good", "before");
            bytes.extend_from_slice(input);
            bytes.extend(request("after", "never answered"));
            go.send(&bytes).await;
            go.expect("good", "before").await;
            go.expect_closed().await;
            drop(go);
            fx.still_serves().await;
        }
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_message_disturbs_no_one() {
    bounded(async {
        let fx = Fixture::start(ServerConfig::default()).await;

        // Writes half a value and closes the socket.
        let mut go = Raw::connect(fx.addr()).await;
        go.send(br#"{"Uid":"1","Val":"half"#).await;
        drop(go);
        fx.still_serves().await;

        // Writes a value and half of another, then shuts its write side down and waits: the
        // whole value is answered, and the server closes the connection.
        let mut go = Raw::connect(fx.addr()).await;
        let mut bytes = request("whole", "answered");
        bytes.extend_from_slice(br#"{"Uid":"2","Val":"ha"#);
        go.send(&bytes).await;
        go.write.shutdown().await.expect("shutdown");
        go.expect("whole", "answered").await;
        go.expect_closed().await;
        drop(go);
        fx.still_serves().await;

        fx.stop().await;
    })
    .await;
}
