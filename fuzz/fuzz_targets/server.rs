//! One server connection fed arbitrary bytes, over loopback TCP (the server only serves TCP):
//! the client writes the input and half-closes, and the server must answer within a time
//! bound, never panic, and answer exactly the requests the codec reads from the input, each
//! once, with the echo or (no `Uid`) a rejection, plus the "frame too large" rejection when
//! the input has a frame over the limit; then close. Memory is bounded by the server's own
//! limits (a small `max_frame` here) and libFuzzer's `-rss_limit_mb`.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use transport_json::server::{RunningServer, Server, ServerConfig};
use transport_json::{Message, Resp};
use transport_json_fuzz::{End, run_codec};

/// The server's frame limit: small, so that fuzzed inputs reach it.
const MAX_FRAME: usize = 256;
/// How long one input may take, far more than it needs: past it the server hangs.
const BOUND: Duration = Duration::from_secs(5);

struct Harness {
    runtime: Runtime,
    addr: SocketAddr,
    _server: RunningServer,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let config = ServerConfig {
            max_frame: MAX_FRAME,
            ..ServerConfig::default()
        };
        let server = runtime.block_on(async {
            let server = Server::bind("127.0.0.1:0", config).await.expect("bind");
            server.spawn()
        });
        Harness {
            addr: server.local_addr(),
            runtime,
            _server: server,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let (wrote, read, output) = harness.runtime.block_on(async {
        tokio::time::timeout(BOUND, exchange(harness.addr, data))
            .await
            .unwrap_or_else(|_| panic!("no end of the answer within {BOUND:?}"))
    });
    check(data, wrote, read, &output);
});

/// Sends `data`, half-closes, and reads every answer until the server closes. Returns whether
/// the write and the read each ended without an error, and what was read.
async fn exchange(addr: SocketAddr, data: &[u8]) -> (bool, bool, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        let wrote = writer.write_all(data).await.is_ok() && writer.shutdown().await.is_ok();
        // Keep the write half until the end: dropping it would half-close early on failure.
        (wrote, writer)
    };
    let read = async {
        let mut output = Vec::new();
        let read = reader.read_to_end(&mut output).await.is_ok();
        (read, output)
    };
    let ((wrote, _writer), (read, output)) = tokio::join!(write, read);
    (wrote, read, output)
}

fn check(data: &[u8], wrote: bool, read: bool, output: &[u8]) {
    let (requests, end) = run_codec::<Message>(&[data], MAX_FRAME);
    let mut expected: Vec<Resp> = requests
        .into_iter()
        .map(|(request, _)| answer(request))
        .collect();
    let failed = end != End::Clean;
    if matches!(&end, End::Failed(e) if e.starts_with("FrameTooLong")) {
        expected.push(rejection(&format!(
            "frame too large: more than {MAX_FRAME} bytes"
        )));
    }
    let (answers, answers_end) = run_codec::<Resp>(&[output], usize::MAX);
    assert_eq!(
        answers_end,
        End::Clean,
        "the server's output is a clean stream"
    );
    let mut got: Vec<Resp> = answers
        .into_iter()
        .map(|(mut resp, _)| {
            assert!(!resp.ts.is_empty(), "every answer has a Ts: {resp:?}");
            resp.ts.clear();
            resp
        })
        .collect();
    expected.sort_by(|a, b| (&a.uid, &a.val, &a.err).cmp(&(&b.uid, &b.val, &b.err)));
    got.sort_by(|a, b| (&a.uid, &a.val, &a.err).cmp(&(&b.uid, &b.val, &b.err)));
    if !failed {
        assert!(
            wrote && read,
            "a good stream is written and read without error"
        );
        assert_eq!(got, expected, "answers to a good stream");
    } else if read {
        // The server closed after bad input: it answered everything before it.
        assert_eq!(got, expected, "answers before bad input ({end:?})");
    } else {
        // The close reset the connection (our unread input): answers may be lost, but none
        // may be made up or doubled.
        for resp in &got {
            let at = expected.iter().position(|e| e == resp);
            let at = at.unwrap_or_else(|| panic!("answer {resp:?} to no request ({end:?})"));
            expected.remove(at);
        }
    }
}

fn answer(request: Message) -> Resp {
    if request.uid.is_empty() {
        return rejection("request has no Uid");
    }
    Resp {
        uid: request.uid,
        val: format!("server: hello, {}", request.val),
        ts: String::new(),
        err: None,
    }
}

fn rejection(why: &str) -> Resp {
    Resp {
        err: Some(why.to_owned()),
        ..Resp::default()
    }
}
