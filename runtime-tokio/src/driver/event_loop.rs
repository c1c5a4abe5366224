//! The loop that owns the `Node`. One iteration: wait for the first thing that is ready (a storage
//! completion, a control message, the next deadline, a peer message, a client request), drain whatever else
//! is ready up to [`MAX_INPUTS_PER_ITERATION`], read the clock once, hand every input to the node, tick if a
//! deadline is due, then carry out the effects — all `Persist` effects of the iteration as one batch.

use super::handle::{Applied, ClientCall, Control, DriverHandle, Published, CLIENT_QUEUE};
use super::{Clock, Devices, StorageError, Transport};
use concord_core::api::{ApiError, Response};
use concord_core::node::NodeStatus;
use concord_core::raft::PersistOp;
use concord_core::{Effect, Event, Input, Instant, Node, NodeId, PeerMessage, ReqId};
use std::collections::BTreeMap;
use std::future::Future;
use tokio::sync::{mpsc, oneshot, watch};

/// Most inputs taken in one iteration before the effects are carried out. Bounds the latency one busy
/// source can add to the others and the size of one storage batch.
pub const MAX_INPUTS_PER_ITERATION: usize = 256;

/// Effects whose room the loop keeps between iterations. One change can wake thousands of blocking queries
/// (one reply each); keeping room for all of them would hold that memory for good.
const KEPT_EFFECTS: usize = 1024;

/// Why the driver's future resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverExit {
    /// `DriverHandle::shutdown` was called; pending storage writes were flushed.
    Shutdown,
    /// Storage reported an error (or its writer went away); the node stopped taking part.
    StorageFailed(String),
    /// This server was removed from the cluster configuration.
    Removed,
}

/// Build the driver for `node` on `devices`. The caller spawns the returned future (on tokio or madsim)
/// and talks to the node through the handle.
pub fn start<C: Clock, T: Transport>(
    node: Node,
    devices: Devices<C, T>,
) -> (DriverHandle, impl Future<Output = DriverExit> + Send) {
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let published = Published {
        membership: watch::Sender::new(node.membership().clone()),
        leader: watch::Sender::new(None),
        applied: watch::Sender::new(Applied::default()),
    };
    let handle = DriverHandle::new(node.id(), client_tx, control_tx, &published);
    let Devices {
        clock,
        transport,
        peer_rx,
        persist_tx,
        persisted_rx,
        events,
    } = devices;
    let driver = Driver {
        node,
        clock,
        transport,
        peer_rx,
        persist_tx,
        persisted_rx,
        events,
        client_rx,
        control_rx,
        open: Open {
            peer: true,
            persisted: true,
            client: true,
            control: true,
        },
        published,
        pending: BTreeMap::new(),
        status_waiters: Vec::new(),
        inputs: Vec::with_capacity(MAX_INPUTS_PER_ITERATION),
        effects: Vec::new(),
        batch_seq: 0,
        batch_ops: Vec::new(),
        sent_seq: 0,
        durable_seq: 0,
        storage_lost: None,
        exit: None,
    };
    (handle, driver.run())
}

/// One thing that woke the loop.
enum Wake {
    Tick,
    Peer(NodeId, PeerMessage),
    Client(ClientCall),
    Control(Control),
    Persisted(Result<u64, StorageError>),
    Undelivered(NodeId, PeerMessage),
    PeerClosed,
    ClientClosed,
    ControlClosed,
    PersistedClosed,
}

/// Which input channels are still open (a closed one is no longer polled).
struct Open {
    peer: bool,
    persisted: bool,
    client: bool,
    control: bool,
}

struct Driver<C: Clock, T: Transport> {
    node: Node,
    clock: C,
    transport: T,
    peer_rx: mpsc::Receiver<(NodeId, PeerMessage)>,
    persist_tx: mpsc::UnboundedSender<(u64, Vec<PersistOp>)>,
    persisted_rx: mpsc::UnboundedReceiver<Result<u64, StorageError>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    client_rx: mpsc::Receiver<ClientCall>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    open: Open,
    published: Published,
    /// Callers waiting for an `Effect::Reply`.
    pending: BTreeMap<ReqId, oneshot::Sender<Response>>,
    status_waiters: Vec<oneshot::Sender<NodeStatus>>,
    inputs: Vec<Input>,
    effects: Vec<Effect>,
    /// The storage batch being built this iteration.
    batch_seq: u64,
    batch_ops: Vec<PersistOp>,
    /// Highest seq handed to storage, and highest reported durable.
    sent_seq: u64,
    durable_seq: u64,
    storage_lost: Option<String>,
    exit: Option<DriverExit>,
}

/// Return to the scheduler once: the task is woken again at once, behind every task already queued.
fn yield_once() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

async fn sleep_until<C: Clock>(clock: &C, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => clock.sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl<C: Clock, T: Transport> Driver<C, T> {
    async fn run(mut self) -> DriverExit {
        self.transport.set_membership(self.node.membership());
        loop {
            let deadline = self.node.next_deadline();
            let first = self.wait(deadline).await;
            self.accept(first);
            // Let every other task that is ready run first (tokio wakes a yielded task only after its
            // run queue is empty and the I/O driver was polled): HTTP and RPC tasks whose requests are
            // already on their sockets queue them now, and one step handles them all. Under load that
            // means one append per follower, one storage batch and one wake-up per group of requests
            // instead of per request; an idle server pays one pass through the scheduler.
            yield_once().await;
            self.drain();
            let now = self.clock.now();
            self.step(now);
            if let Some(reason) = self.storage_lost.take() {
                // Tell the node (it answers what it holds with StorageFailed), then stop.
                self.inputs.push(Input::PersistFailed);
                self.step(now);
                self.batch_ops.clear();
                self.fail_pending(ApiError::StorageFailed);
                return DriverExit::StorageFailed(reason);
            }
            if let Some(exit) = self.exit.take() {
                return self.finish(exit).await;
            }
        }
    }

    /// Wait for the first input. `biased`: storage completions and control first (they unblock or stop
    /// work), then timers, then peers, then clients; fairness comes from `drain`, which takes from every
    /// source in turn. No randomness, so madsim replays it exactly.
    async fn wait(&mut self, deadline: Option<Instant>) -> Wake {
        tokio::select! {
            biased;
            r = self.persisted_rx.recv(), if self.open.persisted => r.map_or(Wake::PersistedClosed, Wake::Persisted),
            c = self.control_rx.recv(), if self.open.control => c.map_or(Wake::ControlClosed, Wake::Control),
            _ = sleep_until(&self.clock, deadline) => Wake::Tick,
            m = self.peer_rx.recv(), if self.open.peer => m.map_or(Wake::PeerClosed, |(from, msg)| Wake::Peer(from, msg)),
            c = self.client_rx.recv(), if self.open.client => c.map_or(Wake::ClientClosed, Wake::Client),
            (to, msg) = self.transport.undelivered() => Wake::Undelivered(to, msg),
        }
    }

    /// Take what is already queued, round-robin over the sources, up to the per-iteration bound.
    fn drain(&mut self) {
        let mut taken = 1;
        while taken < MAX_INPUTS_PER_ITERATION {
            let before = taken;
            if self.open.persisted {
                if let Ok(r) = self.persisted_rx.try_recv() {
                    self.accept(Wake::Persisted(r));
                    taken += 1;
                }
            }
            if self.open.control {
                if let Ok(c) = self.control_rx.try_recv() {
                    self.accept(Wake::Control(c));
                    taken += 1;
                }
            }
            if self.open.peer {
                if let Ok((from, msg)) = self.peer_rx.try_recv() {
                    self.accept(Wake::Peer(from, msg));
                    taken += 1;
                }
            }
            if self.open.client {
                if let Ok(call) = self.client_rx.try_recv() {
                    self.accept(Wake::Client(call));
                    taken += 1;
                }
            }
            if taken == before {
                break;
            }
        }
    }

    fn accept(&mut self, wake: Wake) {
        match wake {
            Wake::Tick => {} // `step` ticks whenever a deadline is due.
            Wake::Peer(from, msg) => self.inputs.push(Input::Peer { from, msg }),
            Wake::Undelivered(to, msg) => self.inputs.push(Input::Undelivered { to, msg }),
            Wake::Client(ClientCall { req_id, req, reply }) => {
                if reply.is_closed() {
                    // The caller left while the request was queued; its cancel may already have been
                    // seen (and ignored), so the node must never hear of this request.
                    return;
                }
                self.pending.insert(req_id, reply);
                self.inputs.push(Input::Client { req_id, req });
            }
            Wake::Control(Control::Cancel { req_id }) => {
                // A cancel for a request already answered is stale: the node never hears of it.
                if self.pending.remove(&req_id).is_some() {
                    self.inputs.push(Input::Cancel { req_id });
                }
            }
            Wake::Control(Control::Status(tx)) => self.status_waiters.push(tx),
            Wake::Control(Control::Shutdown) => {
                self.exit.get_or_insert(DriverExit::Shutdown);
            }
            Wake::Persisted(Ok(up_to)) => {
                self.durable_seq = self.durable_seq.max(up_to);
                self.inputs.push(Input::Persisted { up_to });
            }
            Wake::Persisted(Err(e)) => {
                self.storage_lost.get_or_insert(e.to_string());
            }
            Wake::PersistedClosed => {
                self.open.persisted = false;
                self.storage_lost.get_or_insert("the storage writer stopped".into());
            }
            Wake::PeerClosed => self.open.peer = false,
            Wake::ClientClosed => self.open.client = false,
            Wake::ControlClosed => self.open.control = false,
        }
    }

    /// Hand this iteration's inputs to the node at `now`, tick if due, answer status requests, carry out
    /// the effects and send the storage batch.
    fn step(&mut self, now: Instant) {
        let mut inputs = std::mem::take(&mut self.inputs);
        if !inputs.is_empty() {
            // One step for the whole drain: one append per follower and one persist batch.
            self.node.handle_batch(now, inputs.drain(..), &mut self.effects);
        }
        self.inputs = inputs;
        if self.node.next_deadline().is_some_and(|d| d <= now) {
            self.node.handle(now, Input::Tick, &mut self.effects);
        }
        if !self.status_waiters.is_empty() {
            let status = self.node.status(now);
            for tx in self.status_waiters.drain(..) {
                let _ = tx.send(status.clone());
            }
        }
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            self.execute(effect);
        }
        effects.shrink_to(KEPT_EFFECTS);
        self.effects = effects;
        self.flush_batch();
    }

    fn execute(&mut self, effect: Effect) {
        if let (Some(tap), Effect::Event(event)) = (&self.events, &effect) {
            let _ = tap.send(event.clone());
        }
        match effect {
            Effect::Send { to, msg } => self.transport.send(to, msg),
            Effect::Persist { seq, ops } => {
                self.batch_seq = self.batch_seq.max(seq);
                self.batch_ops.extend(ops);
            }
            Effect::Reply { req_id, resp } => {
                if let Some(tx) = self.pending.remove(&req_id) {
                    let _ = tx.send(resp); // The caller may have gone; its cancel is then stale.
                }
            }
            Effect::Event(Event::LeaderChanged { leader, .. }) => {
                self.published
                    .leader
                    .send_if_modified(|l| std::mem::replace(l, leader) != leader);
            }
            Effect::Event(Event::MembershipChanged(membership)) => {
                self.transport.set_membership(&membership);
                self.published.membership.send_replace(membership);
            }
            Effect::Event(Event::Applied { index, term, digest }) => {
                self.published.applied.send_replace(Applied { index, term, digest });
            }
            Effect::Event(Event::Removed) => {
                self.exit = Some(DriverExit::Removed);
            }
            Effect::Event(Event::CoordinateUpdatesDiscarded { count }) => {
                tracing::warn!(target: "agent.coordinate", "Discarded {count} coordinate updates");
            }
        }
    }

    /// Send every `Persist` of this iteration as one batch: one sync covers them all (group commit).
    fn flush_batch(&mut self) {
        if self.batch_ops.is_empty() && self.batch_seq <= self.sent_seq {
            return;
        }
        let ops = std::mem::take(&mut self.batch_ops);
        let seq = self.batch_seq.max(self.sent_seq);
        if self.persist_tx.send((seq, ops)).is_err() {
            self.storage_lost.get_or_insert("the storage writer stopped".into());
            return;
        }
        self.sent_seq = seq;
    }

    /// Graceful exit: wait until storage confirmed everything sent, then answer what is still pending.
    async fn finish(mut self, exit: DriverExit) -> DriverExit {
        while self.open.persisted && self.durable_seq < self.sent_seq {
            match self.persisted_rx.recv().await {
                Some(Ok(up_to)) => self.durable_seq = self.durable_seq.max(up_to),
                Some(Err(e)) => {
                    self.fail_pending(ApiError::StorageFailed);
                    return DriverExit::StorageFailed(e.to_string());
                }
                None => break,
            }
        }
        // Whatever the node had not answered may or may not take effect elsewhere.
        self.fail_pending(ApiError::Timeout);
        exit
    }

    fn fail_pending(&mut self, error: ApiError) {
        for (_, tx) in std::mem::take(&mut self.pending) {
            let _ = tx.send(Response::Error(error.clone()));
        }
    }
}
