//! Server RPC over TCP (Consul's `-server-port`, 8300): length-prefixed postcard frames
//! (`concord_core::wire`).
//!
//! Every connection starts with a `Hello` from the dialer; the listener answers with its own `Hello`, so
//! both sides learn each other's ID and address and the servers each knows of (that is how
//! `-bootstrap-expect` discovery converges). After the hellos a connection carries, from dialer to
//! listener, one-way `Peer` frames (Raft, forwarding) and `Call` frames (a joining server asking to be
//! added), and from listener to dialer the `Reply` to each call.
//!
//! Invariants: untrusted bytes never panic the process and never make it allocate past the frame cap; a
//! malformed, oversized or out-of-order frame closes that one connection and is counted; sending never
//! blocks the driver (each peer has a bounded queue, and a full or unreachable peer loses messages, which
//! Raft retries).

mod client;
mod frames;
mod listener;
#[cfg(test)]
mod tests;
mod transport;

pub use client::{call, call_after_dial, exchange_hello, CallError};
pub use frames::{read_frame, RpcError};
pub use listener::{serve, CallHandler};
pub use transport::{TcpTransport, PEER_QUEUE};

use concord_core::wire::Frame;
use concord_core::NodeId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A server as hellos describe it: `(id, node name, RPC address)`.
pub type ServerEntry = (NodeId, String, String);

/// This server's identity on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalServer {
    pub id: NodeId,
    pub name: String,
    /// `ip:port` other servers dial.
    pub address: String,
    pub datacenter: String,
}

/// What this server knows about the others: their addresses (from the Raft configuration and from
/// hellos), the server list each peer last reported, and counters. Shared by the transport, the listener
/// and the agent's bootstrap logic.
pub struct AddressBook {
    me: LocalServer,
    inner: Mutex<BookInner>,
    bad_frames: AtomicU64,
    dropped_messages: AtomicU64,
}

#[derive(Default)]
struct BookInner {
    known: BTreeMap<NodeId, (String, String)>,
    /// The server list (sorted by ID) each peer sent in its latest hello.
    reported: BTreeMap<NodeId, Vec<ServerEntry>>,
}

impl AddressBook {
    pub fn new(me: LocalServer) -> Self {
        let mut inner = BookInner::default();
        inner.known.insert(me.id, (me.name.clone(), me.address.clone()));
        AddressBook {
            me,
            inner: Mutex::new(inner),
            bad_frames: AtomicU64::new(0),
            dropped_messages: AtomicU64::new(0),
        }
    }

    pub fn me(&self) -> &LocalServer {
        &self.me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookInner> {
        // A panic while holding this lock cannot leave the maps inconsistent (single inserts), so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `id` at `address` (the Raft configuration or a hello said so).
    pub fn learn(&self, id: NodeId, name: &str, address: &str) {
        if id == self.me.id || address.is_empty() {
            return;
        }
        self.lock().known.insert(id, (name.to_string(), address.to_string()));
    }

    /// Record a peer's hello: the peer itself and every server it knows of.
    pub fn learn_hello(&self, id: NodeId, name: &str, address: &str, servers: &[ServerEntry]) {
        self.learn(id, name, address);
        for (sid, sname, saddr) in servers {
            self.learn(*sid, sname, saddr);
        }
        if id == self.me.id {
            return; // Our own hello (a join list that includes this server): nothing to learn.
        }
        let mut reported: Vec<ServerEntry> = servers.to_vec();
        reported.sort_by_key(|s| s.0);
        reported.dedup_by_key(|s| s.0);
        self.lock().reported.insert(id, reported);
    }

    /// The node name of a known server.
    pub fn name(&self, id: NodeId) -> Option<String> {
        self.lock().known.get(&id).map(|(name, _)| name.clone())
    }

    pub fn address(&self, id: NodeId) -> Option<String> {
        self.lock().known.get(&id).map(|(_, addr)| addr.clone())
    }

    /// Every known server, this one included, sorted by ID.
    pub fn known(&self) -> Vec<ServerEntry> {
        self.lock()
            .known
            .iter()
            .map(|(id, (name, addr))| (*id, name.clone(), addr.clone()))
            .collect()
    }

    /// Our hello: who we are and every server we know of.
    pub fn hello(&self) -> Frame {
        Frame::Hello {
            id: self.me.id,
            name: self.me.name.clone(),
            address: self.me.address.clone(),
            datacenter: self.me.datacenter.clone(),
            servers: self.known(),
        }
    }

    /// `-bootstrap-expect`: the `expect` servers to bootstrap with, once they are settled. We know at least
    /// `expect` servers (this one included); the set is the `expect` lowest IDs, so every server computes
    /// the same one; and every peer we have a hello from reports the same set, so no server bootstraps
    /// with a set the others have not converged on yet.
    pub fn bootstrap_set(&self, expect: usize) -> Option<Vec<ServerEntry>> {
        let inner = self.lock();
        if expect == 0 || inner.known.len() < expect {
            return None;
        }
        let set: Vec<ServerEntry> = inner
            .known
            .iter()
            .take(expect)
            .map(|(id, (name, addr))| (*id, name.clone(), addr.clone()))
            .collect();
        let ids: Vec<NodeId> = set.iter().map(|s| s.0).collect();
        // Addresses from a configuration are not enough: a peer must have told us what it knows.
        if expect > 1 && inner.reported.is_empty() {
            return None;
        }
        let agree = inner
            .reported
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .all(|(_, servers)| {
                servers.len() >= expect && servers.iter().take(expect).map(|s| s.0).eq(ids.iter().copied())
            });
        agree.then_some(set)
    }

    pub(crate) fn count_bad_frame(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self) {
        self.dropped_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for a malformed, oversized or out-of-order frame.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }

    /// Peer messages dropped because a peer's queue was full or it was unreachable.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages.load(Ordering::Relaxed)
    }
}
