//! Servers of one run. Each server is a madsim node running the production driver over the simulated
//! clock, network and disk, plus a storage writer task (the analogue of production's writer thread).
//! Killing the madsim node kills both at once; the disk and the clock live outside the node, so a restart
//! rebuilds `Node::new` from what the disk kept.

use crate::disk::SimDisk;
use crate::sim::clock::SimClock;
use crate::sim::net::{node_id, Net, SimTransport};
use crate::sim::plan::Plan;
use crate::sim::Shared;
use concord::driver::{self, Devices, DriverExit, LogStore, StorageError};
use concord_core::raft::PersistOp;
use concord_core::{Event, Node, NodeConfig, NodeId};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Capacity of a server's inbox; a full inbox drops packets like a full socket buffer.
const PEER_INBOX: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Up,
    Paused,
    Down,
    /// Removed from the configuration (its driver exited); never restarted.
    Removed,
}

pub struct Server {
    pub index: usize,
    pub id: NodeId,
    pub name: String,
    pub address: String,
    madsim_node: madsim::task::NodeId,
    pub disk: Arc<Mutex<SimDisk>>,
    clock: SimClock,
    pub state: ServerState,
    pub incarnation: u64,
}

/// A driver that stopped: (server, incarnation, why).
pub type Exit = (usize, u64, DriverExit);

pub struct Cluster {
    pub servers: Vec<Server>,
    pub net: Net,
    shared: Arc<Shared>,
    plan: Plan,
    exits: mpsc::UnboundedSender<Exit>,
    pub restarts: u64,
    pub pauses: u64,
}

impl Cluster {
    pub fn new(plan: &Plan, net: Net, shared: Arc<Shared>, exits: mpsc::UnboundedSender<Exit>) -> Cluster {
        let rt = madsim::runtime::Handle::current();
        let total = plan.servers + plan.spares;
        let servers = (0..total)
            .map(|i| {
                let node = rt.create_node().name(format!("s{}", i + 1)).build();
                Server {
                    index: i,
                    id: node_id(i),
                    name: format!("s{}", i + 1),
                    address: format!("10.0.0.{}:8300", i + 1),
                    madsim_node: node.id(),
                    disk: Arc::new(Mutex::new(SimDisk::new(
                        plan.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                        plan.faults.disk.clone(),
                    ))),
                    // Nodes start at different epochs: no code may assume clocks agree.
                    clock: SimClock::new(1_000_000 * (i as u64 + 1), plan.faults.drift_ppm[i]),
                    state: ServerState::Down,
                    incarnation: 0,
                }
            })
            .collect();
        Cluster {
            servers,
            net,
            shared,
            plan: plan.clone(),
            exits,
            restarts: 0,
            pauses: 0,
        }
    }

    /// Start server `i` from what its disk holds.
    pub fn start(&mut self, i: usize) {
        let bootstrap = self.bootstrap_servers();
        let s = &mut self.servers[i];
        s.incarnation += 1;
        self.restarts += u64::from(s.incarnation > 1);
        let recovered = s
            .disk
            .lock()
            .expect("unpoisoned")
            .recover()
            .expect("the simulated disk always recovers");
        let config = NodeConfig {
            id: s.id,
            name: s.name.clone(),
            address: s.address.clone(),
            seed: self
                .plan
                .seed
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add((i as u64) << 32 | s.incarnation),
            raft: self.plan.raft.clone(),
            limits: self.plan.limits.clone(),
            mutation: self.plan.mutation,
        };
        let node = Node::new(config, recovered, driver::Clock::now(&s.clock));
        let (peer_tx, peer_rx) = mpsc::channel(PEER_INBOX);
        let (persist_tx, persist_rx) = mpsc::unbounded_channel();
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (bounced_tx, bounced_rx) = mpsc::unbounded_channel();
        let devices = Devices {
            clock: s.clock.clone(),
            transport: SimTransport {
                me: i,
                net: self.net.clone(),
                bounced: bounced_rx,
            },
            peer_rx,
            persist_tx,
            persisted_rx,
            events: Some(events_tx),
        };
        let (handle, driver) = driver::start(node, devices);
        let node = madsim::runtime::Handle::current()
            .get_node(s.madsim_node)
            .expect("server node exists");
        let (exits, incarnation) = (self.exits.clone(), s.incarnation);
        node.spawn(async move {
            let why = driver.await;
            let _ = exits.send((i, incarnation, why));
        });
        node.spawn(storage_writer(s.disk.clone(), persist_rx, persisted_tx));
        if i < self.plan.servers {
            // Like an agent started with `-bootstrap-expect`: every start asks; a node with Raft state ignores
            // it, and one whose bootstrap never reached the disk needs it again.
            let h = handle.clone();
            node.spawn(async move {
                let _ = h
                    .call(concord_core::api::Request::Bootstrap { servers: bootstrap })
                    .await;
            });
        }
        // The collector runs on the supervisor's node, so it outlives the server.
        madsim::task::spawn(collect(i, s.id, incarnation, events_rx, self.shared.clone()));
        self.net.set_inbox(i, Some(peer_tx));
        self.net.set_bounced(i, Some(bounced_tx));
        self.shared.set_handle(i, Some(handle));
        s.state = ServerState::Up;
    }

    fn bootstrap_servers(&self) -> Vec<(NodeId, String, String)> {
        self.servers[..self.plan.servers]
            .iter()
            .map(|s| (s.id, s.name.clone(), s.address.clone()))
            .collect()
    }

    fn stop(&mut self, i: usize, state: ServerState) {
        let s = &mut self.servers[i];
        madsim::runtime::Handle::current().kill(s.madsim_node);
        self.net.set_inbox(i, None);
        self.net.set_bounced(i, None);
        self.shared.set_handle(i, None);
        s.state = state;
    }

    /// The process dies: its tasks vanish and unsynced writes are lost (the last may be torn).
    pub fn crash(&mut self, i: usize) {
        self.stop(i, ServerState::Down);
        self.servers[i].disk.lock().expect("unpoisoned").crash();
    }

    /// The driver exited because the server was removed from the configuration.
    pub fn retire(&mut self, i: usize) {
        self.stop(i, ServerState::Removed);
    }

    pub fn restart(&mut self, i: usize) {
        if self.servers[i].state == ServerState::Up || self.servers[i].state == ServerState::Paused {
            return;
        }
        madsim::runtime::Handle::current().restart(self.servers[i].madsim_node);
        self.start(i);
    }

    pub fn pause(&mut self, i: usize) {
        if self.servers[i].state == ServerState::Up {
            madsim::runtime::Handle::current().pause(self.servers[i].madsim_node);
            self.pauses += 1;
            self.servers[i].state = ServerState::Paused;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if self.servers[i].state == ServerState::Paused {
            madsim::runtime::Handle::current().resume(self.servers[i].madsim_node);
            self.servers[i].state = ServerState::Up;
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        matches!(self.servers[i].state, ServerState::Up | ServerState::Paused)
    }
}

/// The storage writer: stages every batch it has, waits the fsync latency, syncs, reports (group commit).
async fn storage_writer(
    disk: Arc<Mutex<SimDisk>>,
    mut batches: mpsc::UnboundedReceiver<(u64, Vec<PersistOp>)>,
    done: mpsc::UnboundedSender<Result<u64, StorageError>>,
) {
    let stage = |ops: &[PersistOp]| -> Result<(), StorageError> {
        let mut d = disk.lock().expect("unpoisoned");
        ops.iter().try_for_each(|op| d.stage(op))
    };
    while let Some((seq, ops)) = batches.recv().await {
        let mut up_to = seq;
        let mut staged = stage(&ops);
        while let Ok((seq, ops)) = batches.try_recv() {
            up_to = up_to.max(seq);
            staged = staged.and_then(|()| stage(&ops));
        }
        let latency = disk.lock().expect("unpoisoned").sync_latency();
        madsim::time::sleep(latency).await;
        let synced = staged.and_then(|()| disk.lock().expect("unpoisoned").sync());
        let failed = synced.is_err();
        let _ = done.send(synced.map(|()| up_to));
        if failed {
            return;
        }
    }
}

/// Feeds one node incarnation's events to the safety checker and the trace hash.
async fn collect(
    index: usize,
    id: NodeId,
    incarnation: u64,
    mut events: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
) {
    while let Some(event) = events.recv().await {
        let at = shared.now_us();
        shared.node_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if matches!(event, Event::MembershipChanged(_)) {
            shared
                .membership_events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        shared
            .checker
            .lock()
            .expect("unpoisoned")
            .on_event(at, id, incarnation, &event);
        let mut trace = shared.trace.lock().expect("unpoisoned");
        trace.add(&at.to_le_bytes());
        trace.add(&(index as u64).to_le_bytes());
        trace.add(format!("{event:?}").as_bytes());
    }
}
