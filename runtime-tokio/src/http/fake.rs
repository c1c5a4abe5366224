#![cfg_attr(not(test), allow(dead_code))] // the fuzz build uses only part of the fake
//! An in-memory [`Backend`] for HTTP- and CLI-layer tests: a small KV store with Consul's index rules
//! (every write bumps the index; CAS on ModifyIndex), blocking reads that wake on any write, a log of
//! every request it received, and a few knobs (injected errors, a read that hangs until dropped).

use super::{AgentPorts, AgentSelf, Backend};
use bytes::Bytes;
use concord_core::api::{ApiError, KvQuery, KvResult, Query, QueryMeta, RaftServer, ReadMode, Request, Response};
use concord_core::node::{NodeStatus, Role};
use concord_core::state::{Command, CommandResult, KvEntry};
use concord_core::NodeId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A key whose reads never answer; the fake flags when such a call future is dropped.
pub(crate) const HANG_KEY: &str = "hang";

#[derive(Default)]
struct Inner {
    kv: BTreeMap<String, KvEntry>,
    /// The catalog is the real one (its reads are pure); only its KV part is unused.
    sm: concord_core::state::StateMachine,
    index: u64,
    requests: Vec<Request>,
    fail_next: Option<ApiError>,
}

#[derive(Clone, Default)]
pub(crate) struct FakeBackend {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    /// Calls for [`HANG_KEY`] currently parked.
    pub(crate) hanging: Arc<AtomicUsize>,
    /// Set when a parked [`HANG_KEY`] call was dropped (the client went away).
    pub(crate) hang_dropped: Arc<AtomicBool>,
    pub(crate) left: Arc<AtomicBool>,
    pub(crate) local: Option<crate::local::LocalAgentHandle>,
    /// User events, delivered straight to this fake agent (no gossip).
    pub(crate) events: Option<crate::agent::events::UserEvents>,
}

impl FakeBackend {
    pub(crate) fn new() -> Self {
        let fake = FakeBackend {
            local: Some(crate::local::LocalAgentHandle::new(
                concord_core::agent::NodeIdentity {
                    name: "server-1".into(),
                    address: "127.0.0.1".into(),
                    datacenter: "dc1".into(),
                    ..Default::default()
                },
                None,
                true,
            )),
            ..FakeBackend::default()
        };
        let events = crate::agent::events::UserEvents::new(None, "server-1".into(), fake.local.clone());
        let fake = FakeBackend {
            events: Some(events),
            ..fake
        };
        fake.inner.lock().unwrap().index = 1;
        fake
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub(crate) fn fail_next(&self, e: ApiError) {
        self.inner.lock().unwrap().fail_next = Some(e);
    }

    pub(crate) fn put(&self, key: &str, value: &[u8], flags: u64) {
        let mut inner = self.inner.lock().unwrap();
        apply(
            &mut inner,
            Command::KvSet {
                key: key.into(),
                value: Bytes::copy_from_slice(value),
                flags,
                cas: None,
            },
        );
        self.changed.notify_waiters();
    }

    pub(crate) fn get(&self, key: &str) -> Option<KvEntry> {
        self.inner.lock().unwrap().kv.get(key).cloned()
    }

    fn meta(index: u64, mode: ReadMode) -> QueryMeta {
        QueryMeta {
            index,
            known_leader: true,
            last_contact_ms: 0,
            consistency: mode,
        }
    }

    /// A blocking read waits until any write moves the index past `min_index`, or for `wait`.
    async fn wait_past(&self, block: Option<concord_core::api::Blocking>) {
        if let Some(block) = block {
            let deadline = tokio::time::Instant::now() + block.wait;
            loop {
                let notified = self.changed.notified();
                if self.inner.lock().unwrap().index > block.min_index {
                    break;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    async fn kv_read(&self, query: KvQuery, mode: ReadMode, block: Option<concord_core::api::Blocking>) -> Response {
        if let KvQuery::Get { key } = &query {
            if key == HANG_KEY {
                struct OnDrop(Arc<AtomicBool>, Arc<AtomicUsize>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.1.fetch_sub(1, Ordering::SeqCst);
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                self.hanging.fetch_add(1, Ordering::SeqCst);
                let _flag = OnDrop(self.hang_dropped.clone(), self.hanging.clone());
                std::future::pending::<()>().await;
            }
        }
        self.wait_past(block).await;
        let inner = self.inner.lock().unwrap();
        let in_range = |k: &String, prefix: &str| k.starts_with(prefix);
        let result = match &query {
            KvQuery::Get { key } => KvResult::Entries(inner.kv.get(key).cloned().into_iter().collect()),
            KvQuery::Recurse { prefix } => KvResult::Entries(
                inner
                    .kv
                    .iter()
                    .filter(|(k, _)| in_range(k, prefix))
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
            KvQuery::Keys { prefix, separator } => {
                let mut keys: Vec<String> = Vec::new();
                for k in inner.kv.keys().filter(|k| in_range(k, prefix)) {
                    let shown = match separator {
                        Some(sep) => match k[prefix.len()..].find(sep.as_str()) {
                            Some(at) => k[..prefix.len() + at + sep.len()].to_string(),
                            None => k.clone(),
                        },
                        None => k.clone(),
                    };
                    if keys.last() != Some(&shown) {
                        keys.push(shown);
                    }
                }
                KvResult::Keys(keys)
            }
        };
        Response::Kv {
            meta: Self::meta(inner.index, mode),
            result: result.into(),
        }
    }
}

fn apply(inner: &mut Inner, cmd: Command) -> bool {
    let next = inner.index + 1;
    let ok = match cmd {
        Command::KvSet { key, value, flags, cas } => {
            let current = inner.kv.get(&key).map(|e| e.modify_index);
            let allowed = match cas {
                None => true,
                Some(0) => current.is_none(),
                Some(n) => current == Some(n),
            };
            if allowed {
                let create_index = inner.kv.get(&key).map_or(next, |e| e.create_index);
                inner.kv.insert(
                    key.clone(),
                    KvEntry {
                        key,
                        create_index,
                        modify_index: next,
                        lock_index: 0,
                        flags,
                        value,
                        session: None,
                    },
                );
            }
            allowed
        }
        Command::KvDelete { key, cas } => {
            let current = inner.kv.get(&key).map(|e| e.modify_index);
            let allowed = match cas {
                None => true,
                Some(n) => current == Some(n),
            };
            if allowed {
                inner.kv.remove(&key);
            }
            allowed
        }
        Command::KvDeleteTree { prefix } => {
            inner.kv.retain(|k, _| !k.starts_with(&prefix));
            true
        }
        Command::KvReapTombstones { .. } => true,
        cmd @ (Command::CatalogRegister(_)
        | Command::CatalogDeregister { .. }
        | Command::CatalogCheckUpdate { .. }
        | Command::Txn(_)
        | Command::CatalogSync(_)
        | Command::CoordinateBatchUpdate(_)) => {
            let mut changes = concord_core::state::Changes::default();
            inner.sm.apply(next, &cmd, &mut changes) == CommandResult::Bool(true)
        }
    };
    if ok {
        inner.index = next;
    }
    ok
}

pub(crate) fn node_id(n: u128) -> NodeId {
    NodeId(n)
}

impl Backend for FakeBackend {
    async fn call(&self, req: Request) -> Response {
        let injected = {
            let mut inner = self.inner.lock().unwrap();
            inner.requests.push(req.clone());
            inner.fail_next.take()
        };
        if let Some(e) = injected {
            return Response::Error(e);
        }
        match req {
            Request::KvRead { query, mode, block } => self.kv_read(query, mode, block).await,
            Request::Read {
                query: Query::Kv(query),
                mode,
                block,
            } => self.kv_read(query, mode, block).await,
            Request::Read {
                query: Query::Catalog(query),
                mode,
                block,
            } => {
                self.wait_past(block).await;
                let inner = self.inner.lock().unwrap();
                let (_, result) = inner.sm.catalog.read(&query);
                Response::Catalog {
                    meta: Self::meta(inner.index, mode),
                    result: Arc::new(result),
                }
            }
            // Transactions run on the fake's state machine (not its KV map): enough to exercise /v1/txn.
            Request::Write(
                cmd @ (Command::CatalogRegister(_)
                | Command::CatalogDeregister { .. }
                | Command::CatalogCheckUpdate { .. }
                | Command::Txn(_)
                | Command::CatalogSync(_)
                | Command::CoordinateBatchUpdate(_)),
            ) => {
                let mut inner = self.inner.lock().unwrap();
                inner.index += 1;
                let index = inner.index;
                let result = inner
                    .sm
                    .apply(index, &cmd, &mut concord_core::state::Changes::default());
                drop(inner);
                self.changed.notify_waiters();
                Response::Written { index, result }
            }
            Request::Write(cmd) => {
                let mut inner = self.inner.lock().unwrap();
                let ok = apply(&mut inner, cmd);
                let index = inner.index;
                drop(inner);
                self.changed.notify_waiters();
                Response::Written {
                    index,
                    result: CommandResult::Bool(ok),
                }
            }
            Request::Leader => Response::Leader(Some("127.0.0.1:8300".into())),
            Request::Peers => Response::Peers(vec!["127.0.0.1:8300".into(), "127.0.0.2:8300".into()]),
            Request::RaftConfiguration { mode } => Response::RaftConfiguration {
                meta: Self::meta(7, mode),
                servers: vec![
                    RaftServer {
                        id: node_id(1),
                        node: "server-1".into(),
                        address: "127.0.0.1:8300".into(),
                        leader: true,
                        voter: true,
                    },
                    RaftServer {
                        id: node_id(2),
                        node: "server-2".into(),
                        address: "127.0.0.2:8300".into(),
                        leader: false,
                        voter: false,
                    },
                ],
                index: 7,
            },
            Request::RemovePeer { .. } | Request::TransferLeader { .. } => Response::Done,
            // Written at once: the fake has no batching period.
            Request::CoordinateUpdate(update) => {
                let mut inner = self.inner.lock().unwrap();
                inner.index += 1;
                let (index, cmd) = (inner.index, Command::CoordinateBatchUpdate(vec![update]));
                inner
                    .sm
                    .apply(index, &cmd, &mut concord_core::state::Changes::default());
                drop(inner);
                self.changed.notify_waiters();
                Response::Done
            }
            Request::AddServer { .. } | Request::Bootstrap { .. } => Response::Done,
        }
    }

    fn local(&self) -> &crate::local::LocalAgentHandle {
        self.local.as_ref().expect("FakeBackend::new makes the local agent")
    }

    fn user_events(&self) -> Option<&crate::agent::events::UserEvents> {
        self.events.as_ref()
    }

    async fn agent_self(&self) -> AgentSelf {
        AgentSelf {
            datacenter: "dc1".into(),
            node_name: "server-1".into(),
            node_id: node_id(1).to_string(),
            server: true,
            bootstrap: true,
            bootstrap_expect: 0,
            bind_addr: "127.0.0.1".parse().unwrap(),
            advertise_addr: "127.0.0.1".parse().unwrap(),
            client_addrs: vec!["127.0.0.1".parse().unwrap()],
            ports: AgentPorts::default(),
            domain: "consul.".into(),
            version: super::CONSUL_COMPAT_VERSION.into(),
            concord_version: "0.1.0".into(),
            revision: "abc123".into(),
            raft: Some(NodeStatus {
                id: node_id(1),
                role: Role::Leader,
                term: 3,
                leader: Some(node_id(1)),
                commit_index: 42,
                applied_index: 41,
                last_log_index: 42,
                last_log_term: 3,
                last_snapshot_index: 0,
                num_peers: 1,
                kv_tombstones: 0,
                last_contact_ms: Some(0),
            }),
            leader_addr: Some("127.0.0.1:8300".into()),
            known_datacenters: 1,
            known_servers: 1,
            services: 0,
            checks: 0,
            extra_stats: BTreeMap::new(),
        }
    }

    async fn leave(&self) -> Result<(), String> {
        self.left.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Two members: a server (alive) and a client (failed); the WAN pool has the server only.
    async fn members(&self, wan: bool) -> Result<Vec<concord_core::gossip::Member>, String> {
        use concord_core::gossip::{Member, MemberStatus};
        let member = |name: &str, ip: [u8; 4], role: &str, status| Member {
            name: name.into(),
            addr: std::net::SocketAddr::from((ip, 8301)),
            tags: [
                ("role", role),
                ("dc", "dc1"),
                ("vsn", "2"),
                ("build", "1.21.0:concord-0.1.0"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            incarnation: 1,
            status,
        };
        let mut list = vec![member("server-1", [10, 0, 0, 1], "consul", MemberStatus::Alive)];
        if !wan {
            list.push(member("client-1", [10, 0, 0, 22], "node", MemberStatus::Failed));
        }
        Ok(list)
    }

    async fn join(&self, addr: String, _wan: bool) -> Result<(), String> {
        if addr.starts_with("10.") {
            Ok(())
        } else {
            Err(format!("no member answered at {addr}"))
        }
    }

    async fn force_leave(&self, node: String, _prune: bool, _wan: bool) -> Result<(), String> {
        match node.as_str() {
            "server-1" | "client-1" => Ok(()),
            _ => Err(format!("agent: No node found with name '{node}'")),
        }
    }
}
