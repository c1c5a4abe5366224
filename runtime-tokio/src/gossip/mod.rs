//! A gossip pool (LAN or WAN) on real sockets: one task owns the sans-IO [`Gossip`] machine and drives
//! it from a UDP socket (probes and piggybacked broadcasts), a TCP listener (push-pull full-state syncs)
//! and commands from the agent (join, leave, force-leave). Packets and push-pull frames are encrypted
//! with the keyring's primary key when one is configured; a packet no key opens is dropped, so a member
//! with the wrong key cannot join.
//!
//! Invariants: the task never blocks on a peer (UDP sends are `try_send_to`, TCP exchanges run in their
//! own tasks with timeouts); untrusted bytes are bounded (`MAX_PACKET_BYTES`, `MAX_PUSH_PULL_BYTES`) and
//! never panic.

pub(crate) mod keyring;
#[cfg(test)]
mod tests;

pub use keyring::{generate_key, parse_key, Keyring, KeyringError};

use crate::agent::TokioClock;
use crate::driver::Clock;
use concord_core::coordinate::{self, Coordinate};
use concord_core::gossip::wire::{self, StreamFrame, MAX_PACKET_BYTES};
use concord_core::gossip::{
    Effect, Gossip, GossipConfig, GossipEvent, GossipTiming, Input, Member, PushPull, Tags, ID_TAG,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// memberlist's `TCPTimeout` (LAN).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PoolSettings {
    /// "lan" or "wan", for logs.
    pub pool: &'static str,
    pub name: String,
    /// Where to bind UDP and TCP (port 0: any free port, the same for both).
    pub bind: SocketAddr,
    /// The IP others reach us at (the port is the bound one).
    pub advertise: std::net::IpAddr,
    pub tags: Tags,
    pub timing: GossipTiming,
    pub keyring: Option<Arc<Keyring>>,
    pub seed: u64,
}

enum Command {
    Join {
        addrs: Vec<SocketAddr>,
        reply: oneshot::Sender<usize>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    QueuedBroadcasts {
        reply: oneshot::Sender<usize>,
    },
    Input(Input),
}

/// The agent's side of a running pool. Cheap to clone.
#[derive(Clone)]
pub struct PoolHandle {
    cmd: mpsc::Sender<Command>,
    members: watch::Receiver<Arc<Vec<Member>>>,
    events: broadcast::Sender<GossipEvent>,
    /// The advertised gossip address (`Addr`/`Port` in `/v1/agent/members`).
    pub addr: SocketAddr,
    pub keyring: Option<Arc<Keyring>>,
    /// Set (with the reason, for the user) when this member lost a name or node-ID conflict; the pool
    /// has stopped by then.
    pub conflict: watch::Receiver<Option<String>>,
    /// This member's network coordinate in this pool (moved by every probe RTT sample).
    pub coordinate: watch::Receiver<Coordinate>,
    /// The last coordinate each other member's acks carried (serf's coordinate cache).
    pub peer_coordinates: watch::Receiver<Arc<BTreeMap<String, Coordinate>>>,
}

impl PoolHandle {
    /// The current member list, sorted by name.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.members.borrow().clone()
    }

    /// Coordinates of the live members (us included) that have one, by member name.
    pub fn coordinates(&self) -> Vec<(Member, Coordinate)> {
        let peers = self.peer_coordinates.borrow().clone();
        let me = self.coordinate.borrow().clone();
        self.members()
            .iter()
            .filter(|m| m.status == concord_core::gossip::MemberStatus::Alive)
            .filter_map(|m| {
                let c = if m.addr == self.addr {
                    Some(me.clone())
                } else {
                    peers.get(&m.name).cloned()
                };
                c.map(|c| (m.clone(), c))
            })
            .collect()
    }

    pub fn subscribe_members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.members.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<GossipEvent> {
        self.events.subscribe()
    }

    /// Resolves once the pool's task has ended.
    pub async fn closed(&self) {
        self.cmd.closed().await
    }

    /// Join through each address (`host[:port]`, default port `default_port`); the number that answered.
    pub async fn join(&self, addrs: &[String], default_port: u16) -> Result<usize, String> {
        let mut resolved = Vec::new();
        let mut errors = Vec::new();
        for a in addrs {
            match resolve(a, default_port).await {
                Ok(sa) => resolved.push(sa),
                Err(e) => errors.push(e),
            }
        }
        let (reply, rx) = oneshot::channel();
        if !resolved.is_empty() {
            self.cmd
                .send(Command::Join { addrs: resolved, reply })
                .await
                .map_err(|_| "the gossip pool is shut down".to_string())?;
        } else {
            drop(reply);
        }
        let joined = rx.await.unwrap_or(0);
        if joined == 0 {
            errors.push(format!("no member answered at {}", addrs.join(", ")));
            return Err(errors.join("; "));
        }
        Ok(joined)
    }

    /// Leave gracefully; returns once the intent had time to spread (or the pool stopped).
    pub async fn leave(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd.send(Command::Leave { reply }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }

    /// `force-leave`: an error if no member has that name.
    pub async fn force_leave(&self, name: &str, prune: bool) -> Result<(), String> {
        if !self.members().iter().any(|m| m.name == name) {
            return Err(format!("agent: No node found with name '{name}'"));
        }
        self.input(Input::ForceLeave {
            name: name.to_string(),
            prune,
        })
        .await
    }

    /// Wait until every queued broadcast has been sent its full number of times (or `timeout`): after
    /// this, a change broadcast just before has reached the cluster with high probability.
    pub async fn flush_broadcasts(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let (reply, rx) = oneshot::channel();
            if self.cmd.send(Command::QueuedBroadcasts { reply }).await.is_err() {
                return;
            }
            match rx.await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn input(&self, input: Input) -> Result<(), String> {
        self.cmd
            .send(Command::Input(input))
            .await
            .map_err(|_| "the gossip pool is shut down".to_string())
    }
}

/// `host[:port]` to a socket address (DNS names resolved).
pub async fn resolve(addr: &str, default_port: u16) -> Result<SocketAddr, String> {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let with_port = match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{default_port}"),
    };
    let mut found = tokio::net::lookup_host(with_port)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
    found.next().ok_or_else(|| format!("cannot resolve {addr}"))
}

/// Bind the pool's sockets and start its task. The task ends when `stop` resolves.
pub async fn start(
    settings: PoolSettings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(PoolHandle, tokio::task::JoinHandle<()>)> {
    let tcp = TcpListener::bind(settings.bind).await?;
    let port = tcp.local_addr()?.port();
    let udp = UdpSocket::bind(SocketAddr::new(settings.bind.ip(), port)).await?;
    let addr = SocketAddr::new(settings.advertise, port);
    let clock = TokioClock::new();
    let mut gossip = Gossip::new(
        GossipConfig {
            name: settings.name.clone(),
            addr,
            tags: settings.tags.clone(),
            seed: settings.seed,
            timing: settings.timing.clone(),
        },
        clock.now(),
    );
    // Probe rounds are numbered by Unix time, which NTP keeps close across hosts (see core's
    // gossip::schedule): the monotonic clock's epoch is this process's start.
    #[allow(clippy::disallowed_methods)] // the wall clock is this runtime's to read
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gossip.set_clock_offset(unix.saturating_sub(Duration::from_micros(clock.now().as_micros())));
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (members_tx, members_rx) = watch::channel(Arc::new(gossip.members()));
    let (events, _) = broadcast::channel(1024);
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let keyring = settings.keyring.clone();
    let (conflict_tx, conflict_rx) = watch::channel(None);
    let vivaldi = Vivaldi::new(settings.seed, &mut gossip);
    let (coordinate_tx, coordinate_rx) = watch::channel(vivaldi.client.coordinate().clone());
    let (peers_tx, peers_rx) = watch::channel(Arc::new(BTreeMap::new()));
    tokio::spawn(accept_push_pull(tcp, conn_tx, keyring.clone(), settings.name.clone()));
    let pool = Pool {
        gossip,
        clock,
        udp: Arc::new(udp),
        keyring: keyring.clone(),
        members: members_tx,
        events: events.clone(),
        conns: BTreeMap::new(),
        next_conn: 0,
        leave_waiters: Vec::new(),
        pool: settings.pool,
        name: settings.name.clone(),
        reclaim: settings.timing.dead_node_reclaim,
        conflict: conflict_tx,
        vivaldi,
        coordinate: coordinate_tx,
        peer_coordinates: peers_tx,
    };
    tracing::info!(target: "agent.server.serf", "serf {}: listening on {addr} (UDP and TCP)", settings.pool);
    let task = tokio::spawn(pool.run(cmd_rx, conn_rx, stop));
    Ok((
        PoolHandle {
            cmd: cmd_tx,
            members: members_rx,
            events,
            addr,
            keyring,
            conflict: conflict_rx,
            coordinate: coordinate_rx,
            peer_coordinates: peers_rx,
        },
        task,
    ))
}

type IncomingSync = (PushPull, oneshot::Sender<PushPull>);

struct Pool {
    gossip: Gossip,
    clock: TokioClock,
    udp: Arc<UdpSocket>,
    keyring: Option<Arc<Keyring>>,
    members: watch::Sender<Arc<Vec<Member>>>,
    events: broadcast::Sender<GossipEvent>,
    conns: BTreeMap<u64, oneshot::Sender<PushPull>>,
    next_conn: u64,
    leave_waiters: Vec<oneshot::Sender<()>>,
    pool: &'static str,
    name: String,
    reclaim: Duration,
    conflict: watch::Sender<Option<String>>,
    vivaldi: Vivaldi,
    coordinate: watch::Sender<Coordinate>,
    peer_coordinates: watch::Sender<Arc<BTreeMap<String, Coordinate>>>,
}

/// serf's coordinate client on the ping delegate: our acks carry our coordinate, and every probe RTT with
/// the acker's coordinate moves ours.
struct Vivaldi {
    client: coordinate::Client,
    rng: SmallRng,
}

impl Vivaldi {
    fn new(seed: u64, gossip: &mut Gossip) -> Self {
        let client = coordinate::Client::new(coordinate::CoordinateConfig::default());
        gossip.set_ack_payload(Some(coordinate::encode_ack_payload(client.coordinate())));
        Vivaldi {
            client,
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed_c00d),
        }
    }

    /// One RTT sample; `Some((our new coordinate, the acker's))` if it moved ours.
    fn sample(&mut self, member: &str, rtt: Duration, payload: Option<&[u8]>) -> Option<(Coordinate, Coordinate)> {
        let other = coordinate::decode_ack_payload(payload?)?;
        match self.client.update(member, &other, rtt, &mut self.rng) {
            Ok(c) => Some((c.clone(), other)),
            Err(e) => {
                tracing::debug!(target: "agent.server.serf", "rejected coordinate from {member}: {e}");
                None
            }
        }
    }
}

impl Pool {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut conn_rx: mpsc::Receiver<IncomingSync>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Answers of our TCP exchanges: push-pull replies and TCP fallback ping replies.
        let (reply_tx, mut reply_rx) = mpsc::channel::<Input>(64);
        let mut buf = vec![0u8; MAX_PACKET_BYTES + 64];
        loop {
            let deadline = self.gossip.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => self.clock.sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let mut join_reply = None;
            let input = tokio::select! {
                _ = &mut stop => break,
                _ = sleep => Input::Tick,
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((n, from)) => match self.open(&buf[..n]) {
                        Some(bytes) => Input::Packet { from, bytes },
                        None => continue,
                    },
                    Err(e) => {
                        tracing::debug!(target: "agent.server.memberlist", "UDP receive failed: {e}");
                        continue;
                    }
                },
                Some((state, reply)) = conn_rx.recv() => {
                    self.next_conn += 1;
                    self.conns.insert(self.next_conn, reply);
                    Input::PushPull { conn: self.next_conn, state }
                }
                Some(input) = reply_rx.recv() => input,
                Some(cmd) = cmd_rx.recv() => match cmd {
                    Command::Join { addrs, reply } => {
                        join_reply = Some(reply);
                        Input::Join { addrs }
                    }
                    Command::Leave { reply } => {
                        self.leave_waiters.push(reply);
                        Input::Leave
                    }
                    Command::QueuedBroadcasts { reply } => {
                        let _ = reply.send(self.gossip.queued_broadcasts());
                        continue;
                    }
                    Command::Input(input) => input,
                },
            };
            let mut out = Vec::new();
            let now = self.clock.now();
            self.gossip.handle(now, input, &mut out);
            self.carry_out(out, &reply_tx, join_reply);
            if self.conflict.borrow().is_some() {
                // The machine went quiet for good; so does the pool (its sockets close).
                break;
            }
        }
    }

    fn open(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        match &self.keyring {
            None => Some(datagram.to_vec()),
            Some(k) => match k.decrypt(datagram) {
                Ok(plain) => Some(plain),
                Err(_) => {
                    tracing::debug!(target: "agent.server.memberlist", "dropped a packet no key decrypts");
                    None
                }
            },
        }
    }

    fn carry_out(&mut self, out: Vec<Effect>, reply_tx: &mpsc::Sender<Input>, join: Option<oneshot::Sender<usize>>) {
        // A leave shows as "leaving" at once, though the machine reports no event for it.
        let mut changed = !self.leave_waiters.is_empty();
        let mut left = false;
        let mut syncs = Vec::new();
        for effect in out {
            match effect {
                Effect::Packet { to, bytes } => {
                    let bytes = match &self.keyring {
                        Some(k) => k.encrypt(&bytes),
                        None => bytes,
                    };
                    // Never wait on the socket: a full buffer loses the packet, which gossip tolerates.
                    let _ = self.udp.try_send_to(&bytes, to);
                }
                Effect::PushPull { to, state } => syncs.push((to, state)),
                Effect::StreamPing { to, bytes, deadline } => {
                    let wait = deadline.saturating_since(self.clock.now());
                    let (reply_tx, keyring) = (reply_tx.clone(), self.keyring.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(wait, stream_ping(to, &bytes, keyring.as_deref())).await {
                            Ok(Ok(bytes)) => {
                                let _ = reply_tx.send(Input::StreamReply { bytes }).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(target: "agent.server.memberlist", "TCP ping to {to} failed: {e}")
                            }
                            Err(_) => {}
                        }
                    });
                }
                Effect::PushPullReply { conn, state } => {
                    if let Some(reply) = self.conns.remove(&conn) {
                        let _ = reply.send(state);
                    }
                }
                Effect::Event(GossipEvent::PingRtt { member, rtt, payload }) => {
                    if let Some((c, other)) = self.vivaldi.sample(&member, rtt, payload.as_deref()) {
                        self.gossip.set_ack_payload(Some(coordinate::encode_ack_payload(&c)));
                        self.coordinate.send_replace(c);
                        self.peer_coordinates.send_modify(|peers| {
                            Arc::make_mut(peers).insert(member, other);
                        });
                    }
                }
                Effect::Event(GossipEvent::Conflicted { holder }) => {
                    let why = self.conflict_reason(&holder);
                    tracing::error!(target: "agent.server.serf", "serf {}: {why}", self.pool);
                    self.conflict.send_replace(Some(why));
                }
                Effect::Event(ev) => {
                    changed = true;
                    self.log_event(&ev);
                    left |= ev == GossipEvent::LeaveDone;
                    let _ = self.events.send(ev);
                }
            }
        }
        let (done_tx, mut done_rx) = mpsc::channel::<bool>(syncs.len().max(1));
        let n = syncs.len();
        for (to, state) in syncs {
            let (reply_tx, done_tx, keyring) = (reply_tx.clone(), done_tx.clone(), self.keyring.clone());
            tokio::spawn(async move {
                let ok = match tokio::time::timeout(TCP_TIMEOUT, exchange(to, &state, keyring.as_deref())).await {
                    Ok(Ok(remote)) => reply_tx.send(Input::PushPullReply { state: remote }).await.is_ok(),
                    Ok(Err(e)) => {
                        tracing::debug!(target: "agent.server.memberlist", "push-pull with {to} failed: {e}");
                        false
                    }
                    Err(_) => false,
                };
                let _ = done_tx.send(ok).await;
            });
        }
        drop(done_tx);
        if let Some(reply) = join {
            tokio::spawn(async move {
                let mut joined = 0;
                for _ in 0..n {
                    if let Some(true) = done_rx.recv().await {
                        joined += 1;
                    }
                }
                let _ = reply.send(joined);
            });
        }
        if changed {
            self.members.send_replace(Arc::new(self.gossip.members()));
        }
        // Only after publishing, so whoever waited on the leave sees this member as left.
        if left {
            for w in self.leave_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn conflict_reason(&self, holder: &Member) -> String {
        let id = holder.tags.get(ID_TAG).map(String::as_str).unwrap_or("");
        if holder.name == self.name {
            format!(
                "node name '{}' is in use by another live agent at {} (node ID {id}): stop that agent or \
                 pick another -node name (a failed agent's name is reusable {:?} after it failed, a left \
                 one's at once)",
                self.name, holder.addr, self.reclaim
            )
        } else {
            format!(
                "this agent's node ID {id} is in use by the live member '{}' at {} (a copied data dir or \
                 cloned machine?): delete node-id from the data dir or set another -node-id",
                holder.name, holder.addr
            )
        }
    }

    fn log_event(&self, ev: &GossipEvent) {
        let pool = self.pool;
        match ev {
            GossipEvent::NameConflict { name, ours, theirs } => {
                tracing::error!(target: "agent.server.memberlist",
                    "memberlist {pool}: Conflicting address for {name}. Mine: {ours} Theirs: {theirs} (claim refused)")
            }
            GossipEvent::NodeIdConflict { id, holder, claimant } => {
                tracing::error!(target: "agent.server.serf",
                    "serf {pool}: Member '{claimant}' has conflicting node ID '{id}' with member '{holder}' (refused)")
            }
            GossipEvent::MemberJoin(m) => {
                tracing::info!(target: "agent.server.serf", "serf {pool}: EventMemberJoin: {} {}", m.name, m.addr.ip())
            }
            GossipEvent::MemberFailed(m) => {
                tracing::info!(target: "agent.server.serf", "serf {pool}: EventMemberFailed: {} {}", m.name, m.addr.ip())
            }
            GossipEvent::MemberLeft(m) => {
                tracing::info!(target: "agent.server.serf", "serf {pool}: EventMemberLeft: {} {}", m.name, m.addr.ip())
            }
            GossipEvent::MemberReaped(name) => {
                tracing::info!(target: "agent.server.serf", "serf {pool}: EventMemberReap: {name}")
            }
            _ => {}
        }
    }
}

/// Accept TCP connections: push-pulls go to the pool task; TCP fallback pings are answered here (an ack
/// if the ping names us, as core's `stream_ping_reply` decides).
async fn accept_push_pull(
    listener: TcpListener,
    conn_tx: mpsc::Sender<IncomingSync>,
    keyring: Option<Arc<Keyring>>,
    name: String,
) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let (conn_tx, keyring, name) = (conn_tx.clone(), keyring.clone(), name.clone());
        if conn_tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(TCP_TIMEOUT, serve_stream(stream, conn_tx, keyring.as_deref(), &name)).await;
            if let Ok(Err(e)) = served {
                tracing::debug!(target: "agent.server.memberlist", "TCP exchange from {from} failed: {e}");
            }
        });
    }
}

async fn serve_stream(
    mut stream: TcpStream,
    conn_tx: mpsc::Sender<IncomingSync>,
    keyring: Option<&Keyring>,
    name: &str,
) -> Result<(), String> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    match wire::stream_frame_len(prefix, SEAL_SLACK).map_err(|e| e.to_string())? {
        StreamFrame::PushPull(len) => {
            let remote = read_sync_body(&mut stream, len, keyring).await?;
            let (reply, rx) = oneshot::channel();
            conn_tx.send((remote, reply)).await.map_err(|_| "shutting down")?;
            let local = rx.await.map_err(|_| "shutting down")?;
            write_sync(&mut stream, &local, keyring).await
        }
        StreamFrame::Packet(len) => {
            let request = read_body(&mut stream, len, keyring).await?;
            match concord_core::gossip::stream_ping_reply(name, &request) {
                Some(ack) => write_packet(&mut stream, &ack, keyring).await,
                None => Err("TCP ping for another member or malformed".into()),
            }
        }
    }
}

/// memberlist's TCP fallback ping: send the ping packet, read the answer packet.
async fn stream_ping(to: SocketAddr, ping: &[u8], keyring: Option<&Keyring>) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    write_packet(&mut stream, ping, keyring).await?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    match wire::stream_frame_len(prefix, SEAL_SLACK).map_err(|e| e.to_string())? {
        StreamFrame::Packet(len) => read_body(&mut stream, len, keyring).await,
        StreamFrame::PushPull(_) => Err("expected a packet frame".into()),
    }
}

async fn write_packet(stream: &mut TcpStream, packet: &[u8], keyring: Option<&Keyring>) -> Result<(), String> {
    let body = match keyring {
        Some(k) => k.encrypt(packet),
        None => packet.to_vec(),
    };
    let mut out = wire::stream_packet_prefix(body.len()).to_vec();
    out.extend_from_slice(&body);
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

/// What sealing adds to a body (nonce, tag and key-version bytes), with room to spare.
const SEAL_SLACK: usize = 64;

async fn read_body<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    len: usize,
    keyring: Option<&Keyring>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    read_frame_body(stream, len, &mut body).await?;
    match keyring {
        Some(k) => k.decrypt(&body).map_err(|e| e.to_string()),
        None => Ok(body),
    }
}

async fn read_sync_body<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    len: usize,
    keyring: Option<&Keyring>,
) -> Result<PushPull, String> {
    let body = read_body(stream, len, keyring).await?;
    wire::decode_push_pull(&body).map_err(|e| e.to_string())
}

/// One push-pull: send our state, read theirs.
async fn exchange(to: SocketAddr, state: &PushPull, keyring: Option<&Keyring>) -> Result<PushPull, String> {
    let mut stream = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    write_sync(&mut stream, state, keyring).await?;
    read_sync(&mut stream, keyring).await
}

/// `[u32 BE length][body]`, the body a push-pull frame body, sealed when a keyring is in use.
async fn write_sync(stream: &mut TcpStream, state: &PushPull, keyring: Option<&Keyring>) -> Result<(), String> {
    let frame = wire::encode_push_pull(state);
    let body = match keyring {
        Some(k) => k.encrypt(&frame[4..]),
        None => frame[4..].to_vec(),
    };
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

/// Read exactly `len` bytes (a length already checked against the limit) into `body`, growing it as data
/// arrives: a peer that announces 16 MiB and sends a few bytes costs a few bytes of memory, not 16 MiB.
async fn read_frame_body<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    len: usize,
    body: &mut Vec<u8>,
) -> Result<(), String> {
    body.reserve(len.min(PUSH_PULL_FIRST_READ));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(body)
        .await
        .map_err(|e| e.to_string())?;
    if body.len() < len {
        return Err(format!("push-pull frame truncated: {} of {len} bytes", body.len()));
    }
    Ok(())
}

/// Bytes reserved before a push-pull body's first read (a typical state of a few dozen members fits).
const PUSH_PULL_FIRST_READ: usize = 16 * 1024;

async fn read_sync<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    keyring: Option<&Keyring>,
) -> Result<PushPull, String> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let len = wire::push_pull_frame_len(prefix).map_err(|e| e.to_string())?;
    read_sync_body(stream, len, keyring).await
}
