//! A uid-multiplexed JSON-over-TCP transport, compatible with Go's `encoding/json` stream.
//! It runs over Unix domain sockets too (`unix:/path`), and over any byte stream
//! ([`Conn::from_stream`], [`server::Listener`]).
//!
//! - [`wire`]: the request and response types.
//! - [`codec`]: a `tokio_util::codec` framing for a stream of JSON values.
//! - [`conn`]: [`Conn`], one connection many tasks pipeline requests through.
//! - [`server`]: an echo server for the protocol, with a pluggable handler.
//! - [`manager`]: [`JsonManager`], the `pool::Manager` that pools [`Conn`]s.
//! - `service` (feature `tower`, on by default): `PoolService`, a `tower::Service` over the
//!   pool, a lease per request.
//! - `tls` (feature `tls`, off by default): TLS and mutual TLS on rustls, for
//!   [`Conn::connect`] (`ConnectOptions::tls`) and the server (`tls::TlsListener`).
//! - Feature `metrics` (off by default): the server counts connections, answers and decode
//!   errors through the `metrics` facade ([`server`], "Metrics").
//!
//! # Decisions
//! - The wire is Go's `encoding/json` stream: we write one object and `\n`, and read values
//!   with or without separators; decoding follows Go's rules (keys match ignoring case, `null`
//!   and missing fields are empty, unknown keys are ignored). A frame longer than the maximum
//!   (1 MiB by default) or bytes that are not JSON close that one connection: framing is lost.
//!   [`Message`] and [`Resp`] frames of plain strings (no escapes) are decoded and encoded by
//!   hand, byte for byte as serde_json does (property-tested against it); anything else goes
//!   through serde_json (measured: the response decode was most of a client's cost).
//! - The decoders and one server connection are fuzzed (`fuzz/`, run by `scripts/fuzz`, on
//!   nightly) through the public API alone (`JsonCodec`, `WireDecode::decode_plain`, a
//!   server on loopback TCP), so no fuzzing entry point or feature exists. Their oracle is
//!   serde_json plus Go's rules, written apart from ours: it found that Go matches keys under
//!   Unicode case folding (`"Tſ"` fills `Ts`), which both our decoders now do.
//! - The server and pooled clients also run on turmoil's simulated network (this crate's
//!   `tests/sim.rs`, seeds 0..8 in CI, `SIM_SEEDS=n` for more) under partitions, crashes,
//!   held and slow links, latency spikes and a reconnect herd, checking after every run that
//!   each request ended exactly once and the pool kept its bounds. It needs no hook here:
//!   [`Conn::from_stream`] and [`server::Listener`] take turmoil's streams as they are.
//! - A [`Conn`] has two tasks: the writer takes every queued request into one write (yielding
//!   once first when other requests are in flight, so callers woken together share it), and
//!   the reader routes each read's responses by `Uid` and sweeps the request timeout (one
//!   sweep per connection, not a timer per request). Every request ends exactly once, and a
//!   connection that stops fails every pending request at once with the cause.
//! - The server serves each connection in one task with one poll loop: it decodes every
//!   buffered request, polls each handler once at once (only a pending one joins a
//!   `FuturesUnordered`), encodes the answers into one buffer and writes it once per batch,
//!   bounded by `max_in_flight_per_conn` and a 64 KiB output cap, so a client that floods or
//!   never reads stalls only itself (measured: a spawn per request, a separate writer task or
//!   a `select!` join of reader and writer each cost 20-50 % against the raw server).
//! - A [`Conn`] on which a request times out while the server answered no pending request
//!   for the whole request timeout closes itself ([`CloseCause::Unresponsive`]); responses
//!   for `Uid`s nobody waits for count as no answer, neither for this rule nor for the idle
//!   time `check` reads. Without it a connection to a hung server, or to one answering only
//!   stray `Uid`s, stayed pooled forever (measured: 200 requests from 16 tasks took 144 s, all
//!   timing out, on one connection never replaced). The timeout's sweep checks it, so it adds
//!   no timer and no clock read per request; it is on by default, and
//!   [`ConnectOptions::close_unresponsive`] turns it off for servers with legitimately slow
//!   requests.
//! - A server that closes a connection for a reason says so first, in an `Err` with an empty
//!   `Uid` ("frame too large: ..."); the [`Conn`]'s reader keeps that text and, when the stream
//!   then ends or resets, fails every pending request with [`CloseCause::Rejected`] carrying it,
//!   where they all saw a bare "closed by peer" before. A failed write does not stop the
//!   connection itself: the reader reads on to the end of the stream (within 1 s) first, since
//!   the server's reset that fails a long request's write comes right after its reason
//!   (measured: a 32 MiB request to a server with a 256-byte maximum lost the reason to the
//!   writer's reset in 11 of 90 runs under load, in none since).
//! - The pool's `check` for a [`JsonManager`] reads the closed flag and does a real round trip
//!   only after the connection has been idle for a while; `is_broken` reads the flag, so a
//!   connection whose server went away is never handed out.
//! - A pooled [`Conn`] is used through leases ([`pool::Pool::lease`], a lease per request,
//!   `max_streams` of them sharing one connection), not by cloning it out of a `get` guard:
//!   a clone hides the work in flight from the pool, so `max_lifetime`, `retain` and `close`
//!   cut requests, and with the guard back at once the top idle connection took almost all
//!   the traffic. `is_broken_shared` reads the closed flag, so a connection that died under
//!   ten leases takes no eleventh and a replacement opens in its slot at once.
//! - Any byte stream carries the protocol. [`Conn::from_stream`] takes an open stream (TLS,
//!   an in-memory duplex, a simulated network) and the server serves any
//!   [`Listener`](server::Listener) (implemented for Tokio's TCP and Unix listeners).
//!   Inside, the reader, the writer and the server's connection loop are generic over the
//!   stream, so each stream type gets its own compiled code and TCP runs the logic it ran
//!   before, per request unchanged (no box, no dynamic call). Measured with `cargo bench
//!   --bench transport`, three runs of each build interleaved on a 2-core VM at load 11-13,
//!   median ratio ours/raw before -> after: sequential 1.10 -> 0.90, pipelined 0.89 -> 0.95,
//!   4 connections 0.63 -> 0.70, pool lease 0.49 -> 0.57; each row's runs spanned 0.5x-2x,
//!   so these are noise, not a change. Outside, [`Conn`] names no
//!   stream type, so the pool's [`JsonManager`] and every user keep naming `Conn`, and
//!   `Server`'s listener is a second type parameter defaulting to TCP. [`Conn::connect`]
//!   splits TCP and Unix streams into owned halves (no lock); `from_stream` uses
//!   `tokio::io::split`, whose lock per read and write is the price of taking any stream.
//! - `Conn::local_addr`/`peer_addr` and `RunningServer::local_addr` return a `SocketAddr`,
//!   a contract we keep: for an end that is not TCP they return [`conn::NOT_TCP`]
//!   (`0.0.0.0:0`), and [`Conn::peer`], [`Conn::local`] and `RunningServer::local` give the
//!   [`Endpoint`] whatever the stream (a placeholder rather than a panic, since code that
//!   only logs the address should not break on a Unix socket). `Server::local_addr` exists
//!   only for a TCP server, where the type says it is one.
//! - An address `unix:PATH` (in [`ConnectOptions::addr`], the examples' `--addr`) is a Unix
//!   domain socket, the prefix Go's gRPC and others use; `unix:///abs` works too since the
//!   kernel reads `///abs` as `/abs`. [`Server::bind_unix`] removes its socket file when the
//!   server stops, as Go's `net.Listen("unix")` does, but never removes one it finds at
//!   bind time: binding an existing path fails with `AddrInUse`, so a second server cannot
//!   silently steal a live server's socket (a stale file left by a crash is the operator's
//!   to remove). A missing socket is [`Error::Connect`] with the `NotFound` cause and the
//!   address in the message; the TCP options (nodelay, keepalive, linger) do not apply.
//! - `service::PoolService` is a `tower::Service<Message>` whose `poll_ready` reserves a
//!   lease (kept in the service, a clone starting with none) and whose `call` holds it until
//!   the response: `poll_ready` is `Pending` exactly while the pool is full, so tower's
//!   load-shed, concurrency-limit and rate-limit layers see the pool's real capacity, and a
//!   `call` never waits for room. tower is the field's standard middleware stack; the
//!   dependency is tower without default features (two crates with no dependencies of their
//!   own), behind the default feature `tower`. Cost: two boxed futures per request (the
//!   lease, the send), within the noise of `examples/tower.rs` against `examples/demo.rs`
//!   (200k requests, 64 tasks, 4 connections of 16 streams: 239-270 k req/s through
//!   concurrency limit, retry and timeout, 242-264 k on bare leases; 3 runs each).
//! - Several servers behind one pool go through the pool's generic combinator
//!   ([`JsonManager::balanced`], a `pool::balance::Balanced` of one [`JsonManager`] per
//!   address), not a JSON-specific balancer: the closed flag `is_broken_shared` reads is what
//!   tells it a server died, so a server killed under load fails only the requests in flight
//!   on its connections (measured: 0-16 of about 30 000, its two connections carrying 16
//!   leases at most) and gets no new request once its readers saw the end of the stream.
//! - TLS (feature `tls`, off by default so a first build compiles no cryptography) is
//!   tokio-rustls on rustls's `ring` provider, named explicitly in every configuration we
//!   build: no aws-lc, so no cmake and no C toolchain beyond `cc`, and no panic when another
//!   crate enables a second provider. PEM files are read with `rustls-pki-types`, already a
//!   rustls dependency, rather than `rustls-pemfile`. The client does TCP (every socket
//!   option) and then the handshake within the one connect timeout, and runs over
//!   `tokio::io::split` of the TLS stream; a refused certificate is [`Error::Tls`], whose
//!   source reads as rustls says (`invalid peer certificate: UnknownIssuer`). The server
//!   wraps any listener in `tls::TlsListener`, whose `accept` hands out the stream before
//!   its handshake: the handshake runs in the connection's own task at its first read,
//!   bounded by a handshake timeout (10 s by default), so a silent or plain-text client
//!   never holds up the accept loop and holds its slot for at most that long (and, being
//!   idle, is the first closed at the connection cap). With mutual TLS under TLS 1.3 the
//!   client finishes its side of the handshake before the server checks its certificate,
//!   so a client without an accepted one sees `connect` succeed and its first request fail
//!   with [`Error::Closed`] (`received fatal alert: CertificateRequired`); the server never
//!   reads a request from it. After a failed handshake the server shuts its side down and
//!   drains what the client still sends, for 1 s at most, before it closes: closing with the
//!   client's requests unread made the kernel reset the connection, and the client then saw
//!   `Broken pipe` on its next write instead of the alert that says why. Cost, measured with the release examples on loopback (a 2-core
//!   VM shared with other builds; `client --requests 200000 --concurrency 64 --pool-size 4
//!   --max-streams 16`, 5 runs each, interleaved): median 470 ms plain, 556 ms TLS (runs
//!   434-479 and 485-788 ms), about 15 % fewer requests a second; mutual TLS ran within the
//!   TLS spread. A connect plus one request: 0.22-0.59 ms plain, 0.67-1.03 ms TLS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conn;
mod decimal;
pub mod manager;
pub mod server;
#[cfg(feature = "tower")]
pub mod service;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wire;

pub use codec::{CodecError, DEFAULT_MAX_FRAME, JsonCodec, WireDecode, WireEncode};
pub use conn::{CloseCause, Conn, ConnectOptions, Endpoint, Error};
pub use manager::JsonManager;
pub use server::{RunningServer, Server, ServerConfig};
#[cfg(feature = "tower")]
pub use service::{PoolService, ServiceError};
pub use wire::{Message, Resp};
