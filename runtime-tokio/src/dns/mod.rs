//! The DNS server on `-dns-port` (8600): UDP and TCP on every `-client` address, answering from a catalog
//! view kept in memory, never going through the driver per query.
//!
//! How the view stays current: one task reads the whole catalog (`CatalogQuery::All`) as a blocking query,
//! in stale mode unless `allow_stale = false`, builds a `DnsView` and publishes it on a watch channel; the
//! read wakes on the next catalog write. Each socket thread or task keeps its own `Arc` of the published
//! view and swaps it only when the channel's version moved (an atomic compare per batch or packet), so
//! answering a query takes no lock and touches no shared state. A query for a name outside the domain is
//! forwarded to the recursors on its own task, so a slow upstream never holds up the socket.
//!
//! UDP is served by dedicated threads (two per socket) blocked in `recvmmsg` (`udp.rs`: one wake-up and two
//! system calls per burst of queries); TCP by tokio tasks.
//!
//! Invariants: a packet never panics the server (the core answers FORMERR or drops); a TCP connection is
//! closed after `TCP_IDLE` without a complete query and at most `MAX_TCP_CONNS` are served at once.

mod config;
mod recursor;
#[cfg(test)]
mod tests;
mod udp;

pub use config::DnsSettings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord_core::api::{ApiError, Blocking, Query, ReadMode, Request, Response};
use concord_core::dns::{Context, DnsView, Outcome, Responder, Transport};
use concord_core::state::{CatalogQuery, CatalogResult};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::http::Backend;

/// How long one blocking read of the catalog waits before it is renewed.
const REFRESH_WAIT: Duration = Duration::from_secs(60);
/// With `allow_stale = false`, renewed this often so a lost leader is noticed quickly.
const REFRESH_WAIT_CONSISTENT: Duration = Duration::from_secs(2);
/// Pause after a failed catalog read before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Threads answering on each UDP socket. One spends about 6 µs of CPU per query of the benchmark's mix,
/// kernel time included (BENCHMARKS.md), so one keeps up with well over 100,000 queries/s; the second is
/// for the tail: while one is preempted (by the client sharing the cores, by anything) it is not in the
/// socket's wait queue, so the next datagram wakes another instead of waiting for it. Measured on the 2-core
/// machine at 60,000 queries/s (BENCHMARKS.md, DNS, "threads per socket"): p99 4.3 ms with one thread,
/// 0.80–1.63 ms with two, 0.31–0.80 ms with four (closed-loop throughput 94–101k instead of 105–113k/s, as
/// the threads contend for the socket). Idle threads cost nothing but their stacks.
const UDP_THREADS: usize = 4;
const MAX_TCP_CONNS: usize = 512;
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the socket tasks answer from.
#[derive(Default)]
pub struct Snapshot {
    pub view: DnsView,
    pub known_leader: bool,
    /// The catalog index the view was read at (0 before the first read).
    pub index: u64,
}

/// Bound DNS sockets, ready to serve.
pub struct DnsListeners {
    /// Blocking sockets: each is served by its own thread (`udp.rs`).
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl DnsListeners {
    /// The UDP addresses actually bound (the TCP listener of each shares its port).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().filter_map(|s| s.local_addr().ok()).collect()
    }
}

/// Bind UDP and TCP on each address. Port 0 picks a free port (the same one for UDP and TCP); the agent
/// never asks for it (`-dns-port 0` disables DNS, as in Consul), tests do.
pub async fn bind(addrs: &[SocketAddr]) -> Result<DnsListeners, (SocketAddr, std::io::Error)> {
    let mut listeners = DnsListeners {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in addrs {
        // With port 0, retry a few times until the port the UDP socket got is free for TCP too.
        let mut last_err = None;
        for _ in 0..16 {
            let udp = std::net::UdpSocket::bind(addr).map_err(|e| (*addr, e))?;
            let bound = udp.local_addr().map_err(|e| (*addr, e))?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => {
                    listeners.udp.push(udp);
                    listeners.tcp.push(tcp);
                    last_err = None;
                    break;
                }
                Err(e) if addr.port() == 0 => last_err = Some((bound, e)),
                Err(e) => return Err((bound, e)),
            }
        }
        if let Some(err) = last_err {
            return Err(err);
        }
    }
    Ok(listeners)
}

/// Serve DNS until `stop` resolves.
pub fn spawn<B: Backend>(
    tasks: &mut JoinSet<()>,
    listeners: DnsListeners,
    settings: DnsSettings,
    backend: B,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let responder = Arc::new(Responder::new(settings.config.clone()).expect("validated when the config was read"));
    let (view_tx, view_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, _) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    {
        let stop_tx = stop_tx.clone();
        tasks.spawn(async move {
            stop.await;
            stop_tx.send_replace(true);
        });
    }
    let until_stop = |stop_tx: &Arc<watch::Sender<bool>>| {
        let mut rx = stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let refresh = keep_view_current(backend, settings.config.allow_stale, settings.max_stale, view_tx);
    let refresh_stop = until_stop(&stop_tx);
    tasks.spawn(async move {
        tokio::select! { _ = refresh => {} _ = refresh_stop => {} }
    });
    let forward = Arc::new(recursor::Forwarder::new(
        settings.recursors.clone(),
        settings.recursor_timeout,
    ));
    for socket in listeners.udp {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(target: "agent.dns", "Started DNS server: address={addr} network=udp");
        }
        let socket = Arc::new(socket);
        for _ in 0..UDP_THREADS {
            let server = udp::UdpServer {
                socket: socket.clone(),
                responder: responder.clone(),
                views: view_rx.clone(),
                forward: forward.clone(),
                runtime: tokio::runtime::Handle::current(),
                stop: stop_tx.subscribe(),
            };
            // A blocking thread of the runtime: the agent's shutdown joins it like its tasks.
            tasks.spawn_blocking(move || udp::serve(server));
        }
    }
    for listener in listeners.tcp {
        let task = serve_tcp(listener, responder.clone(), view_rx.clone(), forward.clone());
        let stop = until_stop(&stop_tx);
        tasks.spawn(async move {
            tokio::select! { _ = task => {} _ = stop => {} }
        });
    }
}

fn unix_time() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Read the catalog again each time it changes and publish the view. Runs until the agent stops.
async fn keep_view_current<B: Backend>(
    backend: B,
    allow_stale: bool,
    max_stale: Duration,
    views: watch::Sender<Arc<Snapshot>>,
) {
    let mut index = 0;
    let mut known_leader = false;
    loop {
        let (mode, wait) = if allow_stale {
            (ReadMode::Stale, REFRESH_WAIT)
        } else {
            (ReadMode::Default, REFRESH_WAIT_CONSISTENT)
        };
        let mut resp = backend.call(read_all(mode, index, wait)).await;
        if let Response::Catalog { meta, .. } = &resp {
            if allow_stale && u128::from(meta.last_contact_ms) > max_stale.as_millis() {
                // Too stale to serve: ask the leader; if there is none, keep serving what we have.
                let fresh = backend.call(read_all(ReadMode::Default, 0, wait)).await;
                if matches!(fresh, Response::Catalog { .. }) {
                    resp = fresh;
                }
            }
        }
        match resp {
            Response::Catalog { meta, result } if matches!(*result, CatalogResult::All(_)) => {
                let CatalogResult::All(dump) = &*result else {
                    unreachable!("matched above")
                };
                let moved = meta.index != index || meta.known_leader != known_leader;
                index = meta.index;
                known_leader = meta.known_leader;
                if moved {
                    let view = DnsView::build(dump);
                    tracing::debug!(target: "agent.dns", "catalog view at index {index}: {} nodes, {} instances", view.node_count(), view.instance_count());
                    views.send_replace(Arc::new(Snapshot {
                        view,
                        known_leader,
                        index,
                    }));
                }
            }
            Response::Error(e) => {
                if matches!(e, ApiError::NoLeader) && known_leader {
                    known_leader = false;
                    let current = views.borrow().clone();
                    views.send_replace(Arc::new(Snapshot {
                        view: current.view.clone(),
                        known_leader,
                        index,
                    }));
                }
                tracing::debug!(target: "agent.dns", "reading the catalog for DNS failed: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => {
                tracing::warn!(target: "agent.dns", "unexpected answer to a catalog read: {other:?}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

fn read_all(mode: ReadMode, index: u64, wait: Duration) -> Request {
    Request::Read {
        query: Query::Catalog(CatalogQuery::All),
        mode,
        block: (index > 0).then_some(Blocking { min_index: index, wait }),
    }
}

/// A socket task's copy of the published view, renewed only when a new one was published.
struct ViewCache {
    rx: watch::Receiver<Arc<Snapshot>>,
    current: Arc<Snapshot>,
}

impl ViewCache {
    fn new(mut rx: watch::Receiver<Arc<Snapshot>>) -> Self {
        let current = rx.borrow_and_update().clone();
        ViewCache { rx, current }
    }

    pub(super) fn get(&mut self) -> &Snapshot {
        if self.rx.has_changed().unwrap_or(false) {
            self.current = self.rx.borrow_and_update().clone();
        }
        &self.current
    }
}

fn answer(
    responder: &Responder,
    views: &mut ViewCache,
    request: &[u8],
    transport: Transport,
    rng: &mut SmallRng,
    out: &mut Vec<u8>,
) -> Outcome {
    answer_with(responder, views.get(), unix_time(), request, transport, rng, out)
}

/// One query against one snapshot; `unix_time` is the SOA serial (read once per batch by the UDP loop).
fn answer_with(
    responder: &Responder,
    snapshot: &Snapshot,
    unix_time: u32,
    request: &[u8],
    transport: Transport,
    rng: &mut SmallRng,
    out: &mut Vec<u8>,
) -> Outcome {
    let ctx = Context {
        view: &snapshot.view,
        known_leader: snapshot.known_leader,
        unix_time,
    };
    responder.respond(&ctx, request, transport, rng, out)
}

async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    views: watch::Receiver<Arc<Snapshot>>,
    forward: Arc<recursor::Forwarder>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(target: "agent.dns", "Started DNS server: address={addr} network=tcp");
    }
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // Over the limit: the connection is dropped.
        };
        let (responder, views, forward) = (responder.clone(), views.clone(), forward.clone());
        tokio::spawn(async move {
            serve_tcp_conn(stream, &responder, views, &forward).await;
            drop(permit);
        });
    }
}

/// Queries on one TCP connection (RFC 7766: length-prefixed, several per connection).
async fn serve_tcp_conn(
    mut stream: TcpStream,
    responder: &Responder,
    views: watch::Receiver<Arc<Snapshot>>,
    forward: &recursor::Forwarder,
) {
    let mut views = ViewCache::new(views);
    let mut rng = SmallRng::from_entropy();
    let mut request = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        let read = async {
            stream.read_exact(&mut len).await?;
            request.resize(usize::from(u16::from_be_bytes(len)), 0);
            stream.read_exact(&mut request).await
        };
        match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let reply: Option<Vec<u8>> = match answer(responder, &mut views, &request, Transport::Tcp, &mut rng, &mut out) {
            Outcome::Reply => Some(std::mem::take(&mut out)),
            Outcome::Recurse => forward.tcp(&request).await,
            Outcome::Drop => None,
        };
        let Some(reply) = reply else { continue };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        out = reply;
    }
}
