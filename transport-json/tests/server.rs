//! The server over real loopback TCP, driven by raw clients: the echo format, Go's stream
//! forms, bad input, out-of-order answers, the connection cap when every connection is busy,
//! shutdown and abort (the timeouts and the eviction of idle connections: `server_timeouts.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;
use transport_json::server::{EchoHandler, Handler, Server, ServerConfig, handler_fn};
use transport_json::{Message, Resp};

mod support;

use support::{Client, gated, start, start_with, within};

/// Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` timestamp, checking its form.
fn parse_rfc3339_nanos(ts: &str) -> (i64, u32) {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 30, "{ts}");
    for (i, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (29, b'Z'),
    ] {
        assert_eq!(b[i], sep, "{ts}: byte {i}");
    }
    let num = |from: usize, to: usize| -> i64 {
        assert!(b[from..to].iter().all(u8::is_ascii_digit), "{ts}");
        ts[from..to].parse().expect("digits")
    };
    let (y, mo, d) = (num(0, 4), num(5, 7), num(8, 10));
    let (h, mi, s) = (num(11, 13), num(14, 16), num(17, 19));
    let nanos = num(20, 29);
    assert!((1..=12).contains(&mo) && (1..=31).contains(&d), "{ts}");
    assert!(h < 24 && mi < 60 && s < 60, "{ts}");
    // Days from civil (the inverse of the server's algorithm), written independently.
    let (y, mo) = if mo <= 2 { (y - 1, mo + 12) } else { (y, mo) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (mo - 3) + 2) / 5 + d - 719_469;
    (days * 86_400 + h * 3600 + mi * 60 + s, nanos as u32)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn echo_answers_with_greeting_uid_and_utc_nanosecond_timestamp() {
    let server = start(ServerConfig::default()).await;
    let stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    let (read, mut write) = stream.into_split();
    let before = now_secs();
    write
        .write_all(br#"{"Uid":"1","Val":"hello"}"#)
        .await
        .expect("writes");
    let mut line = String::new();
    within("a response line", BufReader::new(read).read_line(&mut line))
        .await
        .expect("reads");
    let after = now_secs();

    // Exactly the form Go's json.Marshal writes, plus '\n'.
    let prefix = r#"{"Uid":"1","Val":"server: hello, hello","Ts":""#;
    assert!(line.starts_with(prefix), "{line}");
    assert!(line.ends_with("\"}\n"), "{line}");
    let ts = &line[prefix.len()..line.len() - 3];
    let (secs, _nanos) = parse_rfc3339_nanos(ts);
    assert!(before - 1 <= secs && secs <= after + 1, "{ts} is not now");
    server.shutdown().await.expect("stops");
}

#[tokio::test]
async fn values_without_separator_are_all_answered() {
    let server = start(ServerConfig::default()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client
        .send(br#"{"Uid":"1","Val":"a"}{"Uid":"2","Val":"b"}{"Uid":"3","Val":"c"}"#)
        .await;
    let mut got = HashMap::new();
    for _ in 0..3 {
        let resp = client.recv().await;
        got.insert(resp.uid, resp.val);
    }
    let want: HashMap<String, String> = [("1", "a"), ("2", "b"), ("3", "c")]
        .into_iter()
        .map(|(u, v)| (u.to_owned(), format!("server: hello, {v}")))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn request_split_across_writes_is_answered() {
    let server = start(ServerConfig::default()).await;
    let mut client = Client::connect(server.local_addr()).await;
    let request = br#"{"Uid":"split","Val":"in { pieces \" }"}"#;
    for piece in request.chunks(3) {
        client.send(piece).await;
        client.write.flush().await.expect("flushes");
        tokio::task::yield_now().await;
    }
    let resp = client.recv().await;
    assert_eq!(resp.uid, "split");
    assert_eq!(resp.val, "server: hello, in { pieces \" }");
}

#[tokio::test]
async fn whitespace_and_unknown_fields_are_accepted() {
    let server = start(ServerConfig::default()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client
        .send(b"\n  {\"X\":[1,{\"}\":\"{\"}],\"Uid\":\"a\",\"Val\":\"v\"}\r\n\t{ \"Val\" : \"w\", \"Uid\" : \"b\", \"Y\": null }\n")
        .await;
    let mut got = [client.recv().await, client.recv().await];
    got.sort_by(|x, y| x.uid.cmp(&y.uid));
    assert_eq!(
        (got[0].uid.as_str(), got[0].val.as_str()),
        ("a", "server: hello, v")
    );
    assert_eq!(
        (got[1].uid.as_str(), got[1].val.as_str()),
        ("b", "server: hello, w")
    );
}

#[tokio::test]
async fn request_without_uid_gets_err_and_the_connection_stays_open() {
    let server = start(ServerConfig::default()).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.send(br#"{"Val":"no uid"}"#).await;
    let resp = client.recv().await;
    assert_eq!(resp.uid, "");
    assert!(
        resp.err.as_deref().is_some_and(|e| e.contains("Uid")),
        "{resp:?}"
    );
    parse_rfc3339_nanos(&resp.ts);
    client.send(br#"{"Uid":"","Val":"empty uid"}"#).await;
    assert!(client.recv().await.err.is_some());
    client.echo("after").await;
}

#[tokio::test]
async fn malformed_json_closes_only_that_connection() {
    let server = start(ServerConfig::default()).await;
    let mut other = Client::connect(server.local_addr()).await;
    other.echo("before").await;

    let mut bad = Client::connect(server.local_addr()).await;
    bad.send(br#"{"Uid":"ok","Val":"a"}{"Uid":"x","Val":]"#)
        .await;
    let answered = bad.until_closed().await;
    // What was received before the bad frame is still answered.
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].uid, "ok");

    let mut garbage = Client::connect(server.local_addr()).await;
    garbage.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(garbage.until_closed().await.is_empty());

    other.echo("after").await;
    Client::connect(server.local_addr()).await.echo("new").await;
}

#[tokio::test]
async fn invalid_utf8_in_a_request_is_answered_with_replacement_characters_as_go_reads_it() {
    let server = start(ServerConfig::default()).await;
    let mut client = Client::connect(server.local_addr()).await;
    // A plain frame, one with an escape (serde_json's path), and one with an unpaired
    // surrogate escape; Go decodes each bad byte, and the surrogate, as U+FFFD.
    client
        .send(b"{\"Uid\":\"1\",\"Val\":\"a\xff\xe2\x82b\"}")
        .await;
    client
        .send(b"{\"Uid\":\"2\",\"Val\":\"\\n\xf0\x9f\x98\"}")
        .await;
    client.send(br#"{"Uid":"3","Val":"\udc00!"}"#).await;
    let mut answers: Vec<(String, String)> = Vec::new();
    for _ in 0..3 {
        let resp = client.recv().await;
        assert_eq!(resp.err, None, "{resp:?}");
        answers.push((resp.uid, resp.val));
    }
    answers.sort();
    let expected = [
        ("1", "server: hello, a\u{FFFD}\u{FFFD}\u{FFFD}b"),
        ("2", "server: hello, \n\u{FFFD}\u{FFFD}\u{FFFD}"),
        ("3", "server: hello, \u{FFFD}!"),
    ]
    .map(|(uid, val)| (uid.to_owned(), val.to_owned()));
    assert_eq!(answers, expected);
    // The connection stays open.
    client.echo("after").await;
    server.shutdown().await.expect("stops");
}

#[tokio::test]
async fn over_long_frame_closes_only_that_connection() {
    let config = ServerConfig {
        max_frame: 1024,
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut other = Client::connect(server.local_addr()).await;
    other.echo("before").await;

    let mut long = Client::connect(server.local_addr()).await;
    long.send(br#"{"Uid":"long","Val":""#).await;
    long.send(&[b'x'; 4096]).await;
    // The frame never ends: the server must not wait for it. It says why it closes.
    let answered = long.until_closed().await;
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].uid, "", "the frame's Uid is not known");
    assert_eq!(
        answered[0].err.as_deref(),
        Some("frame too large: more than 1024 bytes")
    );

    // A frame within the limit is fine.
    let val = "y".repeat(900);
    other
        .send(format!(r#"{{"Uid":"fits","Val":"{val}"}}"#).as_bytes())
        .await;
    assert_eq!(other.recv().await.val, format!("server: hello, {val}"));
}

#[tokio::test]
async fn ten_megabyte_request_is_answered_when_max_frame_allows_it() {
    let config = ServerConfig {
        max_frame: 11 * 1024 * 1024,
        ..ServerConfig::default()
    };
    let server = start(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    let val = "z".repeat(10 * 1024 * 1024);
    let request = serde_json::to_vec(&Message {
        uid: "big".into(),
        val: val.clone(),
    })
    .expect("serializes");
    client.send(&request).await;
    let resp = client.recv().await;
    assert_eq!(resp.uid, "big");
    assert_eq!(resp.val.len(), "server: hello, ".len() + val.len());
}

#[tokio::test]
async fn client_disconnecting_mid_message_does_not_disturb_others() {
    let server = start(ServerConfig::default()).await;
    let mut other = Client::connect(server.local_addr()).await;
    other.echo("before").await;

    let mut leaver = Client::connect(server.local_addr()).await;
    leaver.send(br#"{"Uid":"gone","Val":"half a mess"#).await;
    drop(leaver);
    // And one that connects and never says anything.
    let _silent = Client::connect(server.local_addr()).await;

    other.echo("after").await;
    within("the half message's connection to close", async {
        while server.active_connections() != 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    other.echo("again").await;
}

#[tokio::test]
async fn responses_leave_in_the_order_handlers_finish() {
    let (handler, mut arrivals) = gated();
    let server = start_with(ServerConfig::default(), handler).await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut requests = String::new();
    for i in 0..10 {
        requests.push_str(&format!(r#"{{"Uid":"{i}","Val":"v{i}"}}"#));
    }
    client.send(requests.as_bytes()).await;

    // All ten are handled at once...
    let mut gates = HashMap::new();
    for _ in 0..10 {
        let (uid, release) = within("a request to reach the handler", arrivals.recv())
            .await
            .expect("a request");
        gates.insert(uid, release);
    }
    // ...and each answer leaves as soon as its handler finishes, last request first.
    for i in (0..10).rev() {
        let release = gates.remove(&i.to_string()).expect("arrived");
        release.send(()).expect("the handler waits");
        let resp = client.recv().await;
        assert_eq!(resp.uid, i.to_string());
        assert_eq!(resp.val, format!("server: hello, v{i}"));
    }
}

#[tokio::test]
async fn random_delays_answer_out_of_order_and_each_response_matches_its_uid() {
    let handler = handler_fn(|req: Message| async move {
        // A fixed pseudo-random delay per request, 0..20 ms.
        let n: u64 = req.uid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        tokio::time::sleep(Duration::from_millis(n % 20)).await;
        Resp {
            uid: req.uid,
            val: format!("re: {}", req.val),
            ..Resp::default()
        }
    });
    let server = start_with(ServerConfig::default(), handler).await;
    let addr = server.local_addr();
    let clients = (0..4).map(|c| {
        tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut requests = String::new();
            for i in 0..100 {
                requests.push_str(&format!(r#"{{"Uid":"{c}-{i}","Val":"{i}"}}"#));
            }
            client.send(requests.as_bytes()).await;
            let mut order = Vec::new();
            for _ in 0..100 {
                let resp = client.recv().await;
                let (_, i) = resp.uid.split_once('-').expect("our uid");
                assert_eq!(resp.val, format!("re: {i}"), "{resp:?}");
                order.push(i.parse::<usize>().expect("a number"));
            }
            order
        })
    });
    let mut out_of_order = 0;
    for client in clients {
        let order = within("a client", client).await.expect("no panic");
        let unique: HashSet<usize> = order.iter().copied().collect();
        assert_eq!(unique.len(), 100, "each request answered exactly once");
        out_of_order += order.windows(2).filter(|w| w[0] > w[1]).count();
    }
    assert!(out_of_order > 0, "responses all came back in request order");
}

#[tokio::test]
async fn handler_panic_answers_with_err_and_the_connection_stays_open() {
    let handler = handler_fn(|req: Message| async move {
        assert_ne!(req.val, "boom", "the handler panics on purpose");
        EchoHandler.handle(req).await
    });
    let server = start_with(ServerConfig::default(), handler).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.send(br#"{"Uid":"p","Val":"boom"}"#).await;
    let resp = client.recv().await;
    assert_eq!(resp.uid, "p");
    assert!(resp.err.is_some(), "{resp:?}");
    client.echo("after").await;
}

#[tokio::test]
async fn the_response_carries_the_request_uid_whatever_the_handler_says() {
    let handler = handler_fn(|_req: Message| async move {
        Resp {
            uid: "not yours".into(),
            val: "v".into(),
            ..Resp::default()
        }
    });
    let server = start_with(ServerConfig::default(), handler).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.send(br#"{"Uid":"mine"}"#).await;
    assert_eq!(client.recv().await.uid, "mine");
}

#[tokio::test]
async fn client_that_never_reads_stalls_only_itself() {
    // Every answer is 128 kB, so a few dozen fill every socket buffer on the way back.
    const ANSWER: usize = 128 * 1024;
    const REQUESTS: usize = 100;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&handled);
    let handler = handler_fn(move |req: Message| {
        let count = Arc::clone(&count);
        async move {
            if req.uid.starts_with("other") {
                return EchoHandler.handle(req).await;
            }
            count.fetch_add(1, Ordering::SeqCst);
            Resp {
                uid: req.uid,
                val: "a".repeat(ANSWER),
                ..Resp::default()
            }
        }
    });
    let config = ServerConfig {
        max_in_flight_per_conn: 4,
        ..ServerConfig::default()
    };
    let server = start_with(config, handler).await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = within("connect", socket.connect(server.local_addr()))
        .await
        .expect("connects");
    let mut greedy = Client::from_stream(stream);
    let mut requests = String::new();
    for i in 0..REQUESTS {
        requests.push_str(&format!(r#"{{"Uid":"{i}"}}"#));
    }
    // Small enough to sit in the socket buffers: the server can read all of it at any time.
    greedy.send(requests.as_bytes()).await;

    let mut other = Client::connect(server.local_addr()).await;
    for i in 0..50 {
        other.echo(&format!("other-{i}")).await;
    }
    // The server answers only as far as the answers can go: what fits in the kernel's buffers
    // (at most 4 MB here), the response queue and the requests in flight. Not all 100.
    let taken = handled.load(Ordering::SeqCst);
    assert!(
        taken <= 60,
        "the server took {taken} requests from a client that reads nothing"
    );

    // Once the client reads, everything is answered.
    let mut answered = HashSet::new();
    for _ in 0..REQUESTS {
        let resp = greedy.recv().await;
        assert_eq!(resp.val.len(), ANSWER);
        assert!(answered.insert(resp.uid), "answered twice");
    }
}

#[tokio::test]
async fn a_flood_of_requests_is_read_only_max_in_flight_at_a_time() {
    let (gate, mut arrivals) = gated();
    let gate = Arc::new(gate);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (Arc::clone(&running), Arc::clone(&most));
    // Requests named "flood-*" wait for the test; the others are echoed at once.
    let handler = handler_fn(move |req: Message| {
        let (gate, now, peak) = (Arc::clone(&gate), Arc::clone(&now), Arc::clone(&peak));
        async move {
            if !req.uid.starts_with("flood") {
                return EchoHandler.handle(req).await;
            }
            peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let resp = gate.handle(req).await;
            now.fetch_sub(1, Ordering::SeqCst);
            resp
        }
    });
    let config = ServerConfig {
        max_in_flight_per_conn: 4,
        ..ServerConfig::default()
    };
    let server = start_with(config, handler).await;
    let mut flood = Client::connect(server.local_addr()).await;
    let mut requests = String::new();
    for i in 0..400 {
        requests.push_str(&format!(r#"{{"Uid":"flood-{i}","Val":"{i}"}}"#));
    }
    flood.send(requests.as_bytes()).await;
    let mut gates = Vec::new();
    for _ in 0..4 {
        let arrival = within("a request to arrive", arrivals.recv()).await;
        gates.push(arrival.expect("a request"));
    }
    // Give the server every chance to read more of the flood: it must not.
    let mut other = Client::connect(server.local_addr()).await;
    for i in 0..50 {
        other.echo(&format!("other-{i}")).await;
    }
    assert!(
        arrivals.try_recv().is_err(),
        "more than 4 requests of one connection in flight"
    );

    // Released, the rest goes through, each request answered once.
    for (_, release) in gates {
        release.send(()).expect("the handler waits");
    }
    tokio::spawn(async move {
        while let Some((_, release)) = arrivals.recv().await {
            let _ = release.send(());
        }
    });
    let mut answered = HashSet::new();
    for _ in 0..400 {
        let resp = flood.recv().await;
        assert!(answered.insert(resp.uid), "answered twice");
    }
    assert_eq!(most.load(Ordering::SeqCst), 4, "in flight at once");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_client_waits_for_one_to_go_idle() {
    let (handler, mut arrivals) = gated();
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = start_with(config, handler).await;
    let mut first = Client::connect(server.local_addr()).await;
    let mut second = Client::connect(server.local_addr()).await;
    first.send(br#"{"Uid":"1"}"#).await;
    let (_, release_first) = within("a request", arrivals.recv()).await.expect("arrives");
    second.send(br#"{"Uid":"2"}"#).await;
    let (_, release_second) = within("a request", arrivals.recv()).await.expect("arrives");
    assert_eq!(server.active_connections(), 2);

    // Both connections have a request in flight: none may be closed for the newcomer. The
    // kernel completes its handshake, but the server does not serve it.
    let mut third = Client::connect(server.local_addr()).await;
    third.send(br#"{"Uid":"3","Val":"waiting"}"#).await;
    let early = timeout(Duration::from_millis(300), third.frames.next()).await;
    assert!(early.is_err(), "served over the cap: {early:?}");
    assert!(arrivals.try_recv().is_err(), "served over the cap");
    assert_eq!(server.active_connections(), 2);

    // The first is answered and goes idle: it makes room for the third.
    release_first.send(()).expect("the handler waits");
    assert_eq!(first.recv().await.uid, "1");
    let (uid, release_third) = within("the third's request", arrivals.recv())
        .await
        .expect("arrives");
    assert_eq!(uid, "3");
    release_third.send(()).expect("the handler waits");
    assert_eq!(third.recv().await.uid, "3");
    assert!(
        first.until_closed().await.is_empty(),
        "the first was closed"
    );
    release_second.send(()).expect("the handler waits");
    assert_eq!(second.recv().await.uid, "2");
    assert_eq!(server.active_connections(), 2);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (handler, mut arrivals) = gated();
    let server = start_with(ServerConfig::default(), handler).await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    client
        .send(br#"{"Uid":"1"}{"Uid":"2"}{"Uid":"3"}{"Uid":"4"}{"Uid":"5"}"#)
        .await;
    let mut gates = Vec::new();
    for _ in 0..5 {
        let arrival = within("a request to arrive", arrivals.recv()).await;
        gates.push(arrival.expect("a request"));
    }

    let stopping = tokio::spawn(server.shutdown());
    // The listener closes at once...
    within("the listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // ...but the server waits for the requests it is running.
    assert!(!stopping.is_finished(), "shut down with requests in flight");
    let mut released = HashSet::new();
    for (uid, release) in gates {
        release.send(()).expect("the handler waits");
        released.insert(uid);
    }
    let answered: HashSet<String> = client
        .until_closed()
        .await
        .into_iter()
        .map(|r| r.uid)
        .collect();
    assert_eq!(answered, released);
    within("shutdown to finish", stopping)
        .await
        .expect("no panic")
        .expect("stops cleanly");
}

#[tokio::test]
async fn graceful_shutdown_gives_up_after_its_timeout() {
    let (handler, mut arrivals) = gated();
    let config = ServerConfig {
        shutdown_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = start_with(config, handler).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.send(br#"{"Uid":"stuck"}"#).await;
    let _gate = within("the request to arrive", arrivals.recv()).await;
    within("shutdown to time out", server.shutdown())
        .await
        .expect("stops");
    assert!(client.until_closed().await.is_empty());
}

#[tokio::test]
async fn abort_drops_connections_in_flight_and_frees_the_port() {
    let (handler, mut arrivals) = gated();
    let server = start_with(ServerConfig::default(), handler).await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    client.send(br#"{"Uid":"in flight"}"#).await;
    let _gate = within("the request to arrive", arrivals.recv()).await;

    within("abort", server.abort()).await;
    assert!(client.until_closed().await.is_empty());

    // A new server can take the same port at once.
    let listener = TcpListener::bind(addr)
        .await
        .expect("the port is free again");
    let restarted = Server::from_listener(listener, ServerConfig::default())
        .expect("a server")
        .spawn();
    Client::connect(addr).await.echo("restarted").await;
    restarted.shutdown().await.expect("stops");
}

#[tokio::test]
async fn serve_returns_once_its_shutdown_future_resolves() {
    let server = Server::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("binds");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let mut client = Client::connect(addr).await;
    client.echo("served").await;
    stop.send(()).expect("the server listens");
    within("serve to return", serving)
        .await
        .expect("no panic")
        .expect("stops cleanly");
    // Idle connections are closed as part of the shutdown.
    assert!(client.until_closed().await.is_empty());
}
