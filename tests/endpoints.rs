//! Balancing over real loopback servers: one pool (`JsonManager::balanced`) in front of three
//! echo servers. The load spreads evenly; a server that refuses costs no request; a server
//! killed under load fails only the requests in flight on its connections, gets no new ones,
//! and gets traffic again within its backoff once restarted; callers recover from a total
//! outage without a connect herd; removing a server drains it without failing a request.
//!
//! Each test prints what it measured (`cargo test --test endpoints -- --nocapture`).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use pool::Pool;
use pool::balance::{Balanced, Ejection, Routed};
use support::{bounded, chain, echoed, hold, options, spawn_server, within};
use tokio::net::TcpSocket;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use transport_json::server::{RunningServer, ServerConfig, handler_fn};
use transport_json::{Error, JsonManager, Resp};

/// Requests one server answered, and a signal at each.
#[derive(Default)]
struct Served {
    count: AtomicUsize,
    event: Notify,
}

impl Served {
    fn get(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Resolves once the server answered `n` requests in all.
    async fn reach(&self, n: usize) {
        loop {
            let event = self.event.notified();
            let mut event = std::pin::pin!(event);
            event.as_mut().enable();
            if self.get() >= n {
                return;
            }
            event.await;
        }
    }
}

/// An echo server on `addr` that counts what it answers.
async fn counting_server(addr: SocketAddr, served: Arc<Served>) -> RunningServer {
    let handler = handler_fn(move |req: transport_json::Message| {
        let served = Arc::clone(&served);
        async move {
            served.count.fetch_add(1, Relaxed);
            served.event.notify_waiters();
            Resp {
                uid: req.uid,
                val: echoed(&req.val),
                ts: String::new(),
                err: None,
            }
        }
    });
    spawn_server(addr, ServerConfig::default(), handler).await
}

/// An address nothing listens on, held (see [`hold`]) for as long as the socket lives.
fn refusing_addr() -> (TcpSocket, SocketAddr) {
    let socket = hold("127.0.0.1:0".parse().expect("addr"));
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// The pool of the tests: `max_size` connections over `addrs`, `max_streams` leases each.
fn pool_over(
    addrs: &[SocketAddr],
    ejection: Ejection,
    max_size: usize,
    max_streams: usize,
) -> Pool<Balanced<JsonManager>> {
    let names: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    // The address of `options` is replaced per endpoint.
    let manager = JsonManager::balanced(&options(addrs[0]), names).expect("distinct addresses");
    manager.set_ejection(ejection).expect("valid ejection");
    Pool::builder(manager)
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

/// One request as a load task saw it.
#[derive(Debug)]
struct Record {
    /// When its lease was taken, since the test's start.
    at: Duration,
    /// The endpoint it went to (`None`: no lease).
    endpoint: Option<String>,
    /// `None` when answered; else the error's text, and whether it is the connection failing.
    error: Option<(String, bool)>,
}

/// `tasks` tasks, each sending requests one after another (a lease per request) until
/// `stop` is set or it sent `limit`.
fn load(
    pool: &Pool<Balanced<JsonManager>>,
    tasks: usize,
    limit: usize,
    stop: &Arc<AtomicBool>,
    start: Instant,
) -> JoinSet<Vec<Record>> {
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let (pool, stop) = (pool.clone(), Arc::clone(stop));
        set.spawn(async move {
            let mut records = Vec::new();
            for i in 0..limit {
                if stop.load(Relaxed) {
                    break;
                }
                let at = start.elapsed();
                let lease = match pool.lease().await {
                    Ok(lease) => lease,
                    Err(error) => {
                        let error = Some((chain(&error), false));
                        records.push(Record {
                            at,
                            endpoint: None,
                            error,
                        });
                        continue;
                    }
                };
                let endpoint = Some(Routed::endpoint(&lease).to_owned());
                let val = format!("{t}-{i}");
                let error = match lease.request(val.clone()).await {
                    Ok(resp) if resp.val == echoed(&val) => None,
                    Ok(resp) => Some((format!("wrong answer {:?}", resp.val), false)),
                    Err(error) => Some((chain(&error), matches!(error, Error::Closed(_)))),
                };
                records.push(Record {
                    at,
                    endpoint,
                    error,
                });
            }
            records
        });
    }
    set
}

async fn join(mut set: JoinSet<Vec<Record>>) -> Vec<Record> {
    let mut all = Vec::new();
    while let Some(records) = set.join_next().await {
        all.extend(records.expect("a load task"));
    }
    all
}

fn errors(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| r.error.is_some()).collect()
}

/// Three servers, 64 tasks: two connections on each server (placement by fewest, `max_size`
/// a multiple of three, more leases wanted than 6 x 8), and requests per server within 1.5x
/// of each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_the_load_evenly() {
    bounded(async {
        let served: Vec<Arc<Served>> = (0..3).map(|_| Arc::default()).collect();
        let mut servers = Vec::new();
        for s in &served {
            let addr = "127.0.0.1:0".parse().expect("addr");
            servers.push(counting_server(addr, Arc::clone(s)).await);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(RunningServer::local_addr).collect();
        let pool = pool_over(&addrs, Ejection::default(), 6, 8);
        let stop = Arc::new(AtomicBool::new(false));
        let records = join(load(&pool, 64, 150, &stop, Instant::now())).await;
        assert_eq!(records.len(), 64 * 150);
        assert!(errors(&records).is_empty(), "{:?}", errors(&records));
        let live: Vec<usize> = pool.manager().endpoints().iter().map(|e| e.live).collect();
        assert_eq!(live, [2, 2, 2], "two connections per server");
        let counts: Vec<usize> = served.iter().map(|s| s.get()).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        let (min, max) = (*min.expect("3"), *max.expect("3"));
        println!(
            "requests per server: {counts:?}, spread {:.3}",
            max as f64 / min as f64
        );
        assert!(max * 2 <= min * 3, "more than 1.5x apart: {counts:?}");
    })
    .await;
}

/// One of three servers refuses from the start: every request is answered, none fails
/// (a connect fails over within the same call), and the refusing one is ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_costs_no_request() {
    bounded(async {
        let served: Vec<Arc<Served>> = (0..2).map(|_| Arc::default()).collect();
        let one =
            counting_server("127.0.0.1:0".parse().expect("addr"), Arc::clone(&served[0])).await;
        let two =
            counting_server("127.0.0.1:0".parse().expect("addr"), Arc::clone(&served[1])).await;
        let (_held, refusing) = refusing_addr();
        let addrs = [one.local_addr(), refusing, two.local_addr()];
        let pool = pool_over(&addrs, Ejection::default(), 6, 8);
        let stop = Arc::new(AtomicBool::new(false));
        let records = join(load(&pool, 64, 100, &stop, Instant::now())).await;
        assert!(errors(&records).is_empty(), "{:?}", errors(&records));
        assert_eq!(served[0].get() + served[1].get(), 6400);
        let refusing = &pool.manager().endpoints()[1];
        assert_eq!(refusing.live, 0);
        // Placement tries it (it has the fewest connections); failover hides each failure.
        assert!(refusing.failures >= 1, "{refusing:?}");
        println!("refusing endpoint: {refusing:?}");
    })
    .await;
}

/// One of three is killed under load: only requests in flight on its connections fail, each
/// with a typed `Error::Closed`, at most the 16 leases its two connections carry; within 1 s
/// no new request goes to it; restarted, it answers again within its backoff bound (the
/// longest ejection, 1 s here) plus the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_only_its_requests_in_flight_and_comes_back() {
    bounded(async {
        let ejection = Ejection::new()
            .base(Duration::from_millis(250))
            .max(Duration::from_secs(1));
        let served: Vec<Arc<Served>> = (0..3).map(|_| Arc::default()).collect();
        let mut servers = Vec::new();
        for s in &served {
            let addr = "127.0.0.1:0".parse().expect("addr");
            servers.push(Some(counting_server(addr, Arc::clone(s)).await));
        }
        let addrs: Vec<SocketAddr> = servers
            .iter()
            .flatten()
            .map(RunningServer::local_addr)
            .collect();
        let victim = addrs[1].to_string();
        let pool = pool_over(&addrs, ejection, 6, 8);
        let (stop, start) = (Arc::new(AtomicBool::new(false)), Instant::now());
        let tasks = load(&pool, 64, 1_000_000, &stop, start);
        for s in &served {
            within(Duration::from_secs(10), s.reach(300)).await;
        }

        let killed_at = start.elapsed();
        servers[1].take().expect("running").abort().await;
        // Refusing until the restart, and no other server can take its port meanwhile.
        let held = hold(addrs[1]);
        tokio::time::sleep(Duration::from_millis(1500)).await; // load runs on without it
        let status = pool.manager().endpoints()[1].clone();
        assert!(status.ejected_until.is_some(), "ejected: {status:?}");

        let served_before = served[1].get();
        let restarted = Instant::now();
        drop(held);
        servers[1] = Some(counting_server(addrs[1], Arc::clone(&served[1])).await);
        within(Duration::from_secs(5), served[1].reach(served_before + 1)).await;
        let recovery = restarted.elapsed();
        stop.store(true, Relaxed);
        let records = join(tasks).await;

        let failed = errors(&records);
        for record in &failed {
            let (text, closed) = record.error.as_ref().expect("an error");
            assert_eq!(record.endpoint.as_deref(), Some(&*victim), "{record:?}");
            assert!(*closed, "a typed connection failure: {text}");
            assert!(
                record.at <= killed_at + Duration::from_millis(100),
                "{record:?}"
            );
        }
        assert!(
            failed.len() <= 16,
            "more than its 16 leases failed: {}",
            failed.len()
        );
        let cut = killed_at + Duration::from_secs(1);
        let restart_at = restarted - start;
        let late = records
            .iter()
            .filter(|r| r.at > cut && r.at < restart_at && r.endpoint.as_deref() == Some(&*victim));
        assert_eq!(
            late.count(),
            0,
            "requests sent to the dead server after 1 s"
        );
        let last_sent = records
            .iter()
            .filter(|r| r.at >= killed_at && r.at < restart_at)
            .filter(|r| r.endpoint.as_deref() == Some(&*victim))
            .map(|r| r.at.saturating_sub(killed_at))
            .max();
        println!(
            "killed under load: {} requests failed (of {}); the last sent to it {:?} after the \
             kill; traffic back {:?} after the restart",
            failed.len(),
            records.len(),
            last_sent,
            recovery
        );
        assert!(
            recovery <= Duration::from_millis(1500),
            "back after {recovery:?}, beyond its 1 s backoff and the probe"
        );
    })
    .await;
}

/// All servers down, then one comes back: callers that waited through the outage are
/// answered, and the pool never has more than `max_size` connects in flight (no herd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_recover_from_a_total_outage_without_a_herd() {
    bounded(async {
        let ejection = Ejection::new()
            .base(Duration::from_millis(100))
            .max(Duration::from_millis(400));
        let (mut held, addrs): (Vec<_>, Vec<_>) = (0..3).map(|_| refusing_addr()).unzip();
        let pool = pool_over(&addrs, ejection, 4, 8);
        let (stop, start) = (Arc::new(AtomicBool::new(false)), Instant::now());
        let tasks = load(&pool, 32, 20, &stop, start);
        // Watch connects in flight (the pool's count, and the endpoints') through the outage.
        let most = Arc::new(AtomicUsize::new(0));
        let watch = {
            let (pool, most, stop) = (pool.clone(), Arc::clone(&most), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while !stop.load(Relaxed) {
                    let endpoints: usize = pool.manager().endpoints().iter().map(|e| e.connecting).sum();
                    most.fetch_max(endpoints.max(pool.status().connecting), Relaxed);
                    tick.tick().await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await; // the outage
        let served = Arc::new(Served::default());
        let back = Instant::now();
        drop(held.pop());
        let server = counting_server(addrs[2], Arc::clone(&served)).await;
        within(Duration::from_secs(5), served.reach(1)).await;
        let recovery = back.elapsed();
        let records = join(tasks).await;
        stop.store(true, Relaxed);
        watch.await.expect("watcher");
        assert!(errors(&records).is_empty(), "{:?}", errors(&records));
        assert_eq!(served.get(), 32 * 20);
        assert!(most.load(Relaxed) <= 4, "{} connects in flight", most.load(Relaxed));
        assert!(server.active_connections() <= 4);
        println!(
            "outage: first answer {recovery:?} after the server came back; at most {} connects in flight",
            most.load(Relaxed)
        );
    })
    .await;
}

/// Removing a server under load drains its connections without failing a request: no new
/// request goes to it, and its connections close once their requests are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_server_drains_it_without_failing_a_request() {
    bounded(async {
        let served: Vec<Arc<Served>> = (0..3).map(|_| Arc::default()).collect();
        let mut servers = Vec::new();
        for s in &served {
            let addr = "127.0.0.1:0".parse().expect("addr");
            servers.push(counting_server(addr, Arc::clone(s)).await);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(RunningServer::local_addr).collect();
        let pool = pool_over(&addrs, Ejection::default(), 6, 8);
        let (stop, start) = (Arc::new(AtomicBool::new(false)), Instant::now());
        let tasks = load(&pool, 64, 1_000_000, &stop, start);
        for s in &served {
            within(Duration::from_secs(10), s.reach(300)).await;
        }
        let removed_at = start.elapsed();
        pool.manager()
            .remove(&addrs[1].to_string())
            .expect("in the set");
        let served_then = served[0].get() + served[2].get();
        for s in [&served[0], &served[2]] {
            within(Duration::from_secs(10), s.reach(served_then / 2 + 1000)).await;
        }
        stop.store(true, Relaxed);
        let records = join(tasks).await;
        assert!(errors(&records).is_empty(), "{:?}", errors(&records));
        let victim = addrs[1].to_string();
        let after = records
            .iter()
            .filter(|r| r.at > removed_at + Duration::from_millis(1))
            .filter(|r| r.endpoint.as_deref() == Some(&*victim))
            .count();
        // A lease taken in the instant of the removal may still land there; none later.
        assert!(after <= 16, "{after} requests went to the removed server");
        within(Duration::from_secs(10), async {
            while servers[1].active_connections() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let names: Vec<String> = pool
            .manager()
            .endpoints()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [addrs[0].to_string(), addrs[2].to_string()]);
    })
    .await;
}

/// `localhost` resolved on connect: each address it resolves to is an endpoint (named by the
/// address); the one the server listens on answers every request, any other (`[::1]`, with
/// the server on 127.0.0.1 only) is failed over without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_resolves_to_endpoints_on_connect() {
    bounded(async {
        let served = Arc::new(Served::default());
        let server =
            counting_server("127.0.0.1:0".parse().expect("addr"), Arc::clone(&served)).await;
        let port = server.local_addr().port();
        let manager =
            JsonManager::resolving(&options(server.local_addr()), [format!("localhost:{port}")]);
        assert!(
            manager.endpoints().is_empty(),
            "resolved on the first connect"
        );
        let pool = Pool::builder(manager)
            .max_size(3)
            .max_streams(8)
            .wait_timeout(Duration::from_secs(20))
            .build()
            .expect("valid settings");
        let stop = Arc::new(AtomicBool::new(false));
        let records = join(load(&pool, 16, 50, &stop, Instant::now())).await;
        assert!(errors(&records).is_empty(), "{:?}", errors(&records));
        assert_eq!(served.get(), 16 * 50);
        let names: Vec<String> = pool
            .manager()
            .endpoints()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&format!("127.0.0.1:{port}")), "{names:?}");
        println!("localhost resolved to {names:?}");
    })
    .await;
}
