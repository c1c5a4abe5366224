//! The agent's gossip pools: the LAN pool every agent joins (servers find each other and clients find
//! servers through its tags) and, on servers, the WAN pool. Also the `-retry-join` loop and the member
//! tags Consul puts on each agent (`role`, `dc`, `id`, `port`, `build`, `vsn*`, `expect`, `bootstrap`).

use super::AgentError;
use crate::config::AgentConfig;
use crate::gossip::{self, Keyring, PoolHandle, PoolSettings};
use crate::http::CONSUL_COMPAT_VERSION;
use crate::http::{KeyringOp, KeyringPool};
use crate::rpc::AddressBook;
use concord_core::gossip::{GossipEvent, GossipTiming, Member, MemberStatus, Tags};
use concord_core::NodeId;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A server as the LAN pool advertises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: NodeId,
    pub name: String,
    /// `ip:port` of its RPC listener.
    pub rpc_addr: String,
}

/// Servers of `datacenter` that the pool sees alive, sorted by name.
pub fn alive_servers(members: &[Member], datacenter: &str) -> Vec<ServerInfo> {
    members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .filter(|m| m.tags.get("role").map(String::as_str) == Some("consul"))
        .filter(|m| m.tags.get("dc").map(String::as_str) == Some(datacenter))
        .filter_map(|m| {
            let id = m.tags.get("id")?.parse().ok()?;
            let port: u16 = m.tags.get("port")?.parse().ok()?;
            Some(ServerInfo {
                id,
                name: m.name.clone(),
                rpc_addr: SocketAddr::new(m.addr.ip(), port).to_string(),
            })
        })
        .collect()
}

/// Consul's serf tags for this agent. `wan_port`: the WAN pool's actual port (LAN tags of servers).
pub fn tags(config: &AgentConfig, id: NodeId, rpc_port: u16, wan_port: Option<u16>) -> Tags {
    let mut tags = Tags::new();
    let mut put = |k: &str, v: String| {
        tags.insert(k.to_string(), v);
    };
    let server = config.server || config.dev;
    put("role", if server { "consul" } else { "node" }.into());
    put("dc", config.datacenter.clone());
    put("id", id.to_string());
    put("segment", String::new());
    put("vsn", "2".into());
    put("vsn_min", "2".into());
    put("vsn_max", "3".into());
    // Our acks carry our network coordinate to members that advertise this (see core/gossip/rtt.rs).
    put(concord_core::gossip::ACK_PAYLOAD_TAG, "1".into());
    put(
        "build",
        format!("{CONSUL_COMPAT_VERSION}:concord-{}", env!("CARGO_PKG_VERSION")),
    );
    if server {
        put("port", rpc_port.to_string());
        put("raft_vsn", "3".into());
        if config.bootstrap || config.dev {
            put("bootstrap", "1".into());
        }
        if let Some(n) = config.bootstrap_expect {
            put("expect", n.to_string());
        }
        if let Some(port) = wan_port {
            put("wan_join_port", port.to_string());
        }
    }
    tags
}

fn timing(config: &AgentConfig, wan: bool) -> GossipTiming {
    match (config.dev, wan) {
        (true, _) => GossipTiming::dev(),
        (false, false) => GossipTiming::lan(),
        (false, true) => GossipTiming::wan(),
    }
}

fn keyring_path(config: &AgentConfig, wan: bool) -> Option<PathBuf> {
    let dir = if config.dev { None } else { config.data_dir.clone() }?;
    Some(
        dir.join("serf")
            .join(if wan { "remote.keyring" } else { "local.keyring" }),
    )
}

/// Start one pool (LAN, or WAN with `wan`) on `bind_ip:port`.
pub async fn start_pool(
    config: &AgentConfig,
    advertise: IpAddr,
    tags: Tags,
    wan: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<PoolHandle, AgentError> {
    let (keyring, ignored) = Keyring::load_or_init(keyring_path(config, wan), config.encrypt.as_deref())
        .map_err(|e| AgentError::Config(e.to_string()))?;
    if ignored {
        tracing::warn!(target: "agent",
            "WARNING: the -encrypt key is ignored: a keyring file exists in the data dir (it wins after the first start)");
    }
    let port = if wan {
        config.ports.serf_wan
    } else {
        config.ports.serf_lan
    };
    let settings = PoolSettings {
        pool: if wan { "wan" } else { "lan" },
        name: if wan {
            format!("{}.{}", config.node_name, config.datacenter)
        } else {
            config.node_name.clone()
        },
        bind: SocketAddr::new(config.bind_addr, port),
        advertise,
        tags,
        timing: timing(config, wan),
        keyring: keyring.map(Arc::new),
        seed: super::identity::random_seed(),
    };
    let bind = settings.bind;
    let (pool, _task) = gossip::start(settings, stop).await.map_err(|err| AgentError::Listen {
        what: if wan { "serf WAN" } else { "serf LAN" },
        addr: bind,
        err,
    })?;
    Ok(pool)
}

/// Resolves with the reason once `pool` lost a name or node-ID conflict (the pool stopped); never if it
/// ends otherwise.
pub async fn conflict(pool: &PoolHandle) -> String {
    let mut rx = pool.conflict.clone();
    let reason = match rx.wait_for(|c| c.is_some()).await {
        Ok(c) => c.clone(),
        Err(_) => None,
    };
    match reason {
        Some(r) => r,
        None => std::future::pending().await,
    }
}

/// Keep the address book in step with the servers the LAN pool sees (servers use it for bootstrap and
/// joining, clients to forward requests). Ends when the pool does.
pub async fn feed_address_book(pool: PoolHandle, book: Arc<AddressBook>, datacenter: String) {
    let mut members = pool.subscribe_members();
    loop {
        let current = members.borrow_and_update().clone();
        for s in alive_servers(&current, &datacenter) {
            book.learn(s.id, &s.name, &s.rpc_addr);
        }
        if members.changed().await.is_err() {
            return;
        }
    }
}

/// `-retry-join`: join through the given addresses until one answers, retrying every `interval`
/// (at most every second until the first success, as the agent did before).
pub async fn retry_join(
    pool: PoolHandle,
    addrs: Vec<String>,
    default_port: u16,
    interval: Duration,
    what: &'static str,
) {
    if addrs.is_empty() {
        return;
    }
    loop {
        match pool.join(&addrs, default_port).await {
            Ok(n) => {
                tracing::info!(target: "agent", "Join {what} completed. Synced with {n} initial agents");
                return;
            }
            Err(e) => {
                let wait = interval.min(Duration::from_secs(1));
                tracing::warn!(target: "agent", "Join {what} failed: {e}, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The user event that carries keyring changes to every member (Consul uses serf queries; gossip is
/// encrypted with the current primary key, so the new key never travels in clear).
pub const KEYRING_EVENT: &str = "concord-keyring";

pub fn keyring_event(op: &KeyringOp) -> Option<Vec<u8>> {
    let (verb, key) = match op {
        KeyringOp::List => return None,
        KeyringOp::Install(k) => ("install", k),
        KeyringOp::Use(k) => ("use", k),
        KeyringOp::Remove(k) => ("remove", k),
    };
    Some(format!("{verb}:{key}").into_bytes())
}

/// Apply keyring changes other members broadcast. Ends when the pool does.
pub async fn apply_keyring_events(pool: PoolHandle) {
    let Some(ring) = pool.keyring.clone() else { return };
    let mut events = pool.subscribe();
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            _ = pool.closed() => return,
        };
        let ev = match received {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let GossipEvent::User { name, payload, .. } = ev else {
            continue;
        };
        if name != KEYRING_EVENT {
            continue;
        }
        let text = String::from_utf8_lossy(&payload);
        let result = match text.split_once(':') {
            Some(("install", k)) => ring.install(k),
            // "use" carries the key: install it first if its install was missed.
            Some(("use", k)) => ring.install(k).and_then(|()| ring.use_key(k)),
            Some(("remove", k)) => ring.remove(k),
            _ => continue,
        };
        if let Err(e) = result {
            tracing::warn!(target: "agent", "keyring change from the cluster not applied: {e}");
        }
    }
}

/// Apply a keyring operation to each pool (`(wan, pool)`), spread it to the cluster, and list the result.
pub async fn keyring_op(
    pools: &[(bool, &PoolHandle)],
    datacenter: &str,
    op: KeyringOp,
) -> Result<Vec<KeyringPool>, String> {
    let mut out = Vec::new();
    for (wan, pool) in pools {
        let Some(ring) = &pool.keyring else {
            return Err("Gossip encryption is not enabled on this agent".into());
        };
        let result = match &op {
            KeyringOp::List => Ok(()),
            KeyringOp::Install(k) => ring.install(k),
            KeyringOp::Use(k) => ring.use_key(k),
            KeyringOp::Remove(k) => ring.remove(k),
        };
        result.map_err(|e| e.to_string())?;
        if let Some(payload) = keyring_event(&op) {
            let name = KEYRING_EVENT.to_string();
            pool.input(concord_core::gossip::Input::UserEvent { name, payload })
                .await?;
            // Answer once the change has been gossiped, so an install is in place before the next step
            // (use) seals traffic with the new key.
            pool.flush_broadcasts(Duration::from_secs(10)).await;
        }
        // Without serf queries, each member's keyring is not polled: the counts assume the change spread.
        let nodes = pool
            .members()
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        out.push(KeyringPool {
            wan: *wan,
            datacenter: datacenter.to_string(),
            segment: String::new(),
            keys: ring.list().into_iter().map(|k| (k, nodes)).collect(),
            primary_keys: [(ring.primary(), nodes)].into(),
            num_nodes: nodes,
        });
    }
    Ok(out)
}

/// Servers of one datacenter join each other's WAN pool on their own (Consul's flood join): every LAN
/// server whose WAN member is not alive is joined at its `wan_join_port`, at most every 10 s each.
pub async fn flood_join_wan(lan: PoolHandle, wan: PoolHandle, datacenter: String) {
    let mut members = lan.subscribe_members();
    let mut tried: std::collections::BTreeMap<String, tokio::time::Instant> = Default::default();
    loop {
        let lan_members = members.borrow_and_update().clone();
        let wan_members = wan.members();
        for m in lan_members.iter().filter(|m| m.status == MemberStatus::Alive) {
            let tag = |k: &str| m.tags.get(k).map(String::as_str);
            if tag("role") != Some("consul") || tag("dc") != Some(datacenter.as_str()) {
                continue;
            }
            let Some(port) = tag("wan_join_port").and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let wan_name = format!("{}.{datacenter}", m.name);
            if wan_members
                .iter()
                .any(|w| w.name == wan_name && w.status == MemberStatus::Alive)
            {
                continue;
            }
            let now = tokio::time::Instant::now();
            if tried
                .get(&wan_name)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10))
            {
                continue;
            }
            tried.insert(wan_name, now);
            let addr = SocketAddr::new(m.addr.ip(), port).to_string();
            if let Err(e) = wan.join(&[addr], port).await {
                tracing::debug!(target: "agent", "WAN flood join of {} failed: {e}", m.name);
            }
        }
        tokio::select! {
            changed = members.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// What a pool remembers across restarts (serf's snapshot): the addresses of the members it last saw
/// alive, and whether this agent left gracefully.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub members: Vec<String>,
    pub left: bool,
}

pub fn snapshot_path(config: &AgentConfig, wan: bool) -> Option<PathBuf> {
    let dir = if config.dev { None } else { config.data_dir.clone() }?;
    Some(
        dir.join("serf")
            .join(if wan { "remote.snapshot" } else { "local.snapshot" }),
    )
}

/// The addresses to rejoin at start: those of the snapshot, unless this agent left gracefully and
/// `-rejoin` is not set.
pub fn rejoin_addresses(path: Option<&std::path::Path>, rejoin_after_leave: bool) -> Vec<String> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    let Ok(snapshot) = serde_json::from_str::<Snapshot>(&text) else {
        tracing::warn!(target: "agent", "ignoring an unreadable gossip snapshot");
        return Vec::new();
    };
    if snapshot.left && !rejoin_after_leave {
        tracing::info!(target: "agent", "this agent left the cluster before; not rejoining (start with -rejoin to rejoin)");
        return Vec::new();
    }
    snapshot.members
}

/// Keep the snapshot file in step with the member list: at most once a second, except that a leave is
/// written at once (the agent stops soon after). Ends with the pool.
pub async fn record_snapshot(pool: PoolHandle, path: PathBuf, me: String) {
    let mut members = pool.subscribe_members();
    let mut last = Snapshot::default();
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        let current = members.borrow_and_update().clone();
        let snapshot = Snapshot {
            members: current
                .iter()
                .filter(|m| m.name != me && m.status == MemberStatus::Alive)
                .map(|m| m.addr.to_string())
                .collect(),
            left: current
                .iter()
                .any(|m| m.name == me && matches!(m.status, MemberStatus::Leaving | MemberStatus::Left)),
        };
        // Never forget peers because they all went away at once (e.g. our own shutdown).
        let worth = snapshot != last && (!snapshot.members.is_empty() || snapshot.left);
        let due = snapshot.left != last.left || last_write.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if worth && due {
            let text = serde_json::to_string(&snapshot).expect("a snapshot serialises");
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .is_err()
            {
                tracing::warn!(target: "agent", "cannot write the gossip snapshot {}", path.display());
            }
            last = snapshot;
            last_write = Some(tokio::time::Instant::now());
            continue;
        }
        tokio::select! {
            changed = members.changed() => if changed.is_err() { return },
            _ = pool.closed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)), if worth => {}
        }
    }
}

/// Start rejoining from the snapshot and recording it (both end with `stop`).
pub fn snapshot_tasks(
    tasks: &mut tokio::task::JoinSet<()>,
    config: &AgentConfig,
    pool: &PoolHandle,
    wan: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let Some(path) = snapshot_path(config, wan) else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let addrs = rejoin_addresses(Some(&path), config.rejoin_after_leave);
    let me = if wan {
        format!("{}.{}", config.node_name, config.datacenter)
    } else {
        config.node_name.clone()
    };
    let (pool, port) = (
        pool.clone(),
        if wan {
            config.ports.serf_wan
        } else {
            config.ports.serf_lan
        },
    );
    tasks.spawn(async move {
        let rejoin = async {
            if !addrs.is_empty() {
                match pool.join(&addrs, port).await {
                    Ok(n) => tracing::info!(target: "agent", "rejoined {n} members from the gossip snapshot"),
                    Err(e) => tracing::warn!(target: "agent", "rejoin from the gossip snapshot failed: {e}"),
                }
            }
            record_snapshot(pool, path, me).await
        };
        tokio::select! {
            _ = rejoin => {}
            _ = stop => {}
        }
    });
}
