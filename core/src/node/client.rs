//! Client requests: writes (proposed on the leader, forwarded from followers), reads in the three
//! consistency modes, blocking queries parked on watches, and membership operations.
//!
//! Invariants: every local request gets exactly one reply (the answer, an error, or `Timeout` when its
//! outcome is unknown); a write is answered only after it is applied; a parked blocking query is
//! registered against the same applied state it was checked against, so no change can slip between the
//! check and the wait.

use super::{Effect, Node, PeerMessage, ReqId};
use crate::api::{
    ApiError, Blocking, CatalogResult, KvQuery, KvResult, Query, QueryMeta, RaftServer, ReadMode, Request, Response,
};
use crate::id::NodeId;
use crate::node::Role;
use crate::raft::{Index, Membership, Payload, ReadOutcome, ServerInfo};
use crate::state::{Changes, KeyRange, WatchId};
use crate::time::Instant;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How many distinct queries one wake-up shares reads between (see `answer_woken`).
const SHARED_READS: usize = 16;

/// What one read of the applied state found (the response without its metadata). Cloning shares it.
#[derive(Clone)]
enum ReadResult {
    Kv(Arc<KvResult>),
    Catalog(Arc<CatalogResult>),
}

/// Who is waiting for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Local(ReqId),
    /// A follower forwarded the request; the answer goes back as `ForwardReply { id }`.
    Remote {
        from: NodeId,
        id: u64,
    },
}

/// A read: what to read, in which mode, and whether to block.
#[derive(Clone, Debug)]
pub(crate) struct ReadSpec {
    pub(crate) req_id: ReqId,
    pub(crate) query: Query,
    pub(crate) mode: ReadMode,
    pub(crate) block: Option<Blocking>,
}

#[derive(Clone, Debug)]
pub(crate) enum PendingRead {
    /// Our own client's read, waiting for a read index (from our Raft or the leader).
    Local(ReadSpec),
    /// A follower's read-index request, waiting for our Raft to confirm.
    Remote { from: NodeId, id: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Write(Index),
    Forward(u64),
    Read(u64),
    WaitLeader(u64),
    /// Try a parked request again (its leader was unreachable).
    Retry(u64),
    Watch(ReqId),
    /// Write the coordinate updates collected since the first one of this period.
    CoordinateFlush,
    /// The periodic snapshot check (see `RaftConfig::snapshot_interval`).
    SnapshotCheck,
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Proposed entries by index: who asked, and the term they were proposed in.
    pub(crate) writes: BTreeMap<Index, (Origin, u64)>,
    /// Requests forwarded to the leader, by forward id.
    /// Kept until answered, so an undelivered one can be re-routed before its deadline.
    forwards: BTreeMap<u64, (ReqId, Request, Instant, NodeId)>,
    reads: BTreeMap<u64, PendingRead>,
    /// Local reads with a read index, waiting for the state machine to apply up to it.
    apply_waiters: BTreeMap<Index, Vec<ReadSpec>>,
    /// Requests that arrived while no leader was known.
    /// (With their deadlines; re-dispatched when a leader becomes known or on a retry timer.)
    wait_leader: BTreeMap<u64, (ReqId, Request, Instant)>,
    /// Parked blocking queries and their deadlines.
    watches: BTreeMap<ReqId, (ReadSpec, Instant)>,
    /// Forwarded request ids already seen per follower (oldest first), so a duplicated message is not
    /// applied twice. Ids carry a per-incarnation nonce, so a restarted follower's ids are new.
    seen: BTreeMap<NodeId, (BTreeSet<u64>, std::collections::VecDeque<u64>)>,
    /// Which leader each follower read-index request went to: only its answer counts.
    read_leader: BTreeMap<u64, NodeId>,
    next_id: u64,
    /// While re-routing a parked request: its original deadline, so retries never extend it.
    redispatch_deadline: Option<Instant>,
}

impl Pending {
    fn count(&self) -> usize {
        self.writes.len() + self.forwards.len() + self.reads.len() + self.wait_leader.len()
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn start_ids(&mut self, nonce: u64) {
        self.next_id = nonce;
    }
}

/// How many forwarded ids to remember per follower for de-duplication.
const SEEN_WINDOW: u64 = 1 << 16;

impl Node {
    pub(super) fn reply(&mut self, origin: Origin, resp: Response, out: &mut Vec<Effect>) {
        match origin {
            Origin::Local(req_id) => out.push(Effect::Reply { req_id, resp }),
            Origin::Remote { from, id } => out.push(Effect::Send {
                to: from,
                msg: PeerMessage::ForwardReply { id, resp },
            }),
        }
    }

    pub(super) fn timer(&mut self, at: Instant, t: Timer) {
        self.deadlines.insert((at, t));
    }

    fn request_deadline(&self, now: Instant) -> Instant {
        self.pending
            .redispatch_deadline
            .unwrap_or(now + self.config.limits.request_timeout)
    }

    pub(super) fn request(&mut self, now: Instant, origin: Origin, req: Request, out: &mut Vec<Effect>) {
        if self.raft.role == Role::Failed {
            return self.reply(origin, Response::Error(ApiError::StorageFailed), out);
        }
        if let Origin::Local(_) = origin {
            if self.pending.count() >= self.config.limits.max_pending {
                let err = ApiError::Overloaded(format!("{} requests pending", self.pending.count()));
                return self.reply(origin, Response::Error(err), out);
            }
        }
        match req {
            Request::KvRead { query, mode, block } => self.client_read(now, origin, Query::Kv(query), mode, block, out),
            Request::Read { query, mode, block } => self.client_read(now, origin, query, mode, block, out),
            Request::Leader => {
                let addr = self
                    .raft
                    .leader
                    .and_then(|id| self.raft.membership.servers.get(&id))
                    .map(|s| s.address.clone());
                self.reply(origin, Response::Leader(addr), out)
            }
            Request::Peers => {
                let peers = self
                    .raft
                    .membership
                    .servers
                    .values()
                    .filter(|s| s.voter)
                    .map(|s| s.address.clone())
                    .collect();
                self.reply(origin, Response::Peers(peers), out)
            }
            Request::RaftConfiguration { mode } => {
                let resp = self.raft_configuration(now, mode);
                self.reply(origin, resp, out)
            }
            Request::Bootstrap { servers } => {
                let membership = Membership {
                    servers: servers
                        .into_iter()
                        .map(|(id, name, address)| {
                            (
                                id,
                                ServerInfo {
                                    name,
                                    address,
                                    voter: true,
                                },
                            )
                        })
                        .collect(),
                };
                if membership.servers.is_empty() {
                    let err = ApiError::BadRequest("bootstrap needs at least one server".into());
                    return self.reply(origin, Response::Error(err), out);
                }
                self.raft.bootstrap(now, membership);
                self.reply(origin, Response::Done, out)
            }
            req @ (Request::Write(_)
            | Request::CoordinateUpdate(_)
            | Request::AddServer { .. }
            | Request::RemovePeer { .. }
            | Request::TransferLeader { .. }) => self.leader_request(now, origin, req, out),
        }
    }

    fn client_read(
        &mut self,
        now: Instant,
        origin: Origin,
        query: Query,
        mode: ReadMode,
        block: Option<Blocking>,
        out: &mut Vec<Effect>,
    ) {
        match origin {
            Origin::Local(req_id) => self.read(
                now,
                ReadSpec {
                    req_id,
                    query,
                    mode,
                    block,
                },
                out,
            ),
            Origin::Remote { .. } => {
                let err = ApiError::BadRequest("reads are not forwarded".into());
                self.reply(origin, Response::Error(err), out)
            }
        }
    }

    /// A request only the leader can carry out: do it here, or forward it.
    fn leader_request(&mut self, now: Instant, origin: Origin, req: Request, out: &mut Vec<Effect>) {
        let write = matches!(req, Request::Write(_) | Request::CoordinateUpdate(_));
        if self.raft.role != Role::Leader || (self.raft.transfer.is_some() && write) {
            return match origin {
                Origin::Local(req_id) => self.forward_or_park(now, req_id, req, out),
                Origin::Remote { .. } => self.reply(origin, Response::Error(ApiError::NoLeader), out),
            };
        }
        let proposed = match req {
            Request::Write(cmd) => Ok(self.raft.propose(now, Payload::Command(cmd.encode()))),
            Request::AddServer { id, name, address } => self.add_server(now, id, name, address),
            Request::RemovePeer { id, address } => self.remove_server(now, id, address),
            Request::CoordinateUpdate(update) => return self.queue_coordinate(now, origin, update, out),
            Request::TransferLeader { to } => match self.raft.transfer_leadership(now, to) {
                Ok(()) => return self.reply(origin, Response::Done, out),
                Err(e) => Err(ApiError::BadRequest(e)),
            },
            _ => unreachable!("only leader requests are routed here"),
        };
        match proposed {
            Ok(Some(index)) => {
                self.pending.writes.insert(index, (origin, self.raft.term));
                self.timer(self.request_deadline(now), Timer::Write(index));
            }
            Ok(None) => self.reply(origin, Response::Done, out),
            Err(e) => self.reply(origin, Response::Error(e), out),
        }
    }

    fn add_server(
        &mut self,
        now: Instant,
        id: NodeId,
        name: String,
        address: String,
    ) -> Result<Option<Index>, ApiError> {
        let m = &self.raft.membership;
        if m.servers.get(&id).is_some_and(|s| s.address == address) {
            return Ok(None);
        }
        self.raft.config_change_ready().map_err(ApiError::BadRequest)?;
        let mut next = m.clone();
        // One server per change: a stale entry with the same address or ID goes first; the joiner retries.
        let stale = m
            .servers
            .iter()
            .find(|(sid, s)| **sid == id || s.address == address)
            .map(|(sid, _)| *sid);
        if let Some(stale) = stale {
            if stale == self.config.id {
                return Err(ApiError::BadRequest(format!("address {address} belongs to the leader")));
            }
            next.servers.remove(&stale);
            self.raft.propose_config(now, next);
            return Err(ApiError::BadRequest(
                "removing a stale server with the same address or ID; retry".into(),
            ));
        }
        next.servers.insert(
            id,
            ServerInfo {
                name,
                address,
                voter: false,
            },
        );
        Ok(Some(self.raft.propose_config(now, next)))
    }

    fn remove_server(
        &mut self,
        now: Instant,
        id: Option<NodeId>,
        address: Option<String>,
    ) -> Result<Option<Index>, ApiError> {
        let m = &self.raft.membership;
        let found = m
            .servers
            .iter()
            .find(|(sid, s)| Some(**sid) == id || address.as_deref() == Some(s.address.as_str()))
            .map(|(sid, _)| *sid);
        let Some(target) = found else {
            let what = match (id, address) {
                (Some(id), _) => format!("id {id:?}"),
                (None, Some(a)) => format!("address {a:?}"),
                (None, None) => return Err(ApiError::BadRequest("Must specify either ?id or ?address".into())),
            };
            return Err(ApiError::NotFound(format!(
                "{what} was not found in the Raft configuration"
            )));
        };
        self.raft.config_change_ready().map_err(ApiError::BadRequest)?;
        let mut next = m.clone();
        next.servers.remove(&target);
        if next.voters().count() == 0 {
            return Err(ApiError::BadRequest("cannot remove the last voter".into()));
        }
        Ok(Some(self.raft.propose_config(now, next)))
    }

    fn forward_or_park(&mut self, now: Instant, req_id: ReqId, req: Request, out: &mut Vec<Effect>) {
        match self.raft.leader.filter(|l| *l != self.config.id) {
            Some(leader) => {
                let id = self.pending.id();
                let deadline = self.request_deadline(now);
                self.pending
                    .forwards
                    .insert(id, (req_id, req.clone(), deadline, leader));
                self.timer(deadline, Timer::Forward(id));
                out.push(Effect::Send {
                    to: leader,
                    msg: PeerMessage::Forward { id, req },
                });
            }
            None => self.park_for_leader(now, req_id, req, None),
        }
    }

    /// Wait for a leader (re-dispatched when one becomes known), and with `retry_at` also try again then.
    fn park_for_leader(&mut self, now: Instant, req_id: ReqId, req: Request, retry_at: Option<Instant>) {
        let id = self.pending.id();
        let deadline = self.request_deadline(now);
        self.pending.wait_leader.insert(id, (req_id, req, deadline));
        self.timer(deadline, Timer::WaitLeader(id));
        if let Some(at) = retry_at {
            self.timer(at.min(deadline), Timer::Retry(id));
        }
    }

    /// Route a parked request again, under its original deadline.
    fn redispatch(&mut self, now: Instant, id: u64, out: &mut Vec<Effect>) {
        if let Some((req_id, req, deadline)) = self.pending.wait_leader.remove(&id) {
            self.pending.redispatch_deadline = Some(deadline);
            self.request(now, Origin::Local(req_id), req, out);
            self.pending.redispatch_deadline = None;
        }
    }

    /// The transport never handed `msg` to its peer: re-route what was waiting on it. (A message that may
    /// have been delivered is never re-sent: the leader might have applied it.)
    pub(super) fn undelivered(&mut self, now: Instant, msg: PeerMessage) {
        let retry_at = now + self.config.raft.heartbeat_interval;
        match msg {
            PeerMessage::Forward { id, .. } => {
                if let Some((req_id, req, deadline, _)) = self.pending.forwards.remove(&id) {
                    self.pending.redispatch_deadline = Some(deadline);
                    self.park_for_leader(now, req_id, req, Some(retry_at));
                    self.pending.redispatch_deadline = None;
                }
            }
            PeerMessage::ReadIndex { id, .. } => {
                self.pending.read_leader.remove(&id);
                if let Some(PendingRead::Local(spec)) = self.pending.reads.remove(&id) {
                    let req = Request::Read {
                        query: spec.query,
                        mode: spec.mode,
                        block: spec.block,
                    };
                    self.park_for_leader(now, spec.req_id, req, Some(retry_at));
                }
            }
            _ => {}
        }
    }

    /// A leader became known: send it everything that was waiting for one.
    pub(super) fn leader_known(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let ids: Vec<u64> = self.pending.wait_leader.keys().copied().collect();
        for id in ids {
            self.redispatch(now, id, out);
        }
    }

    pub(super) fn remote_request(&mut self, now: Instant, from: NodeId, id: u64, req: Request, out: &mut Vec<Effect>) {
        let (seen, order) = self.pending.seen.entry(from).or_default();
        if !seen.insert(id) {
            return; // a duplicate delivery: the first copy is being (or was) answered
        }
        order.push_back(id);
        if order.len() as u64 > SEEN_WINDOW {
            if let Some(oldest) = order.pop_front() {
                seen.remove(&oldest);
            }
        }
        self.request(now, Origin::Remote { from, id }, req, out);
    }

    pub(super) fn forward_reply(&mut self, from: NodeId, id: u64, resp: Response, out: &mut Vec<Effect>) {
        if self.pending.forwards.get(&id).is_some_and(|f| f.3 != from) {
            return; // not from the leader we asked: a stray (e.g. for an earlier incarnation)
        }
        if let Some((req_id, _, _, _)) = self.pending.forwards.remove(&id) {
            out.push(Effect::Reply { req_id, resp });
        }
    }

    // ---- reads ----------------------------------------------------------------------------------------

    fn read(&mut self, now: Instant, spec: ReadSpec, out: &mut Vec<Effect>) {
        if spec.mode == ReadMode::Stale {
            return self.serve(now, spec, out);
        }
        let lease = spec.mode == ReadMode::Default;
        if self.raft.role == Role::Leader {
            let id = self.pending.id();
            match self.raft.read_index(now, id, lease) {
                ReadOutcome::Ready(index) => self.serve_at(now, index, spec, out),
                ReadOutcome::Pending => {
                    self.pending.reads.insert(id, super::client::PendingRead::Local(spec));
                    self.timer(self.request_deadline(now), Timer::Read(id));
                }
                ReadOutcome::NotLeader => self.read_via_leader(now, spec, out),
            }
        } else {
            self.read_via_leader(now, spec, out);
        }
    }

    /// A follower's default or consistent read: get a read index from the leader, then serve locally.
    fn read_via_leader(&mut self, now: Instant, spec: ReadSpec, out: &mut Vec<Effect>) {
        match self.raft.leader.filter(|l| *l != self.config.id) {
            Some(leader) => {
                let id = self.pending.id();
                let lease = spec.mode == ReadMode::Default;
                self.pending.reads.insert(id, PendingRead::Local(spec));
                self.pending.read_leader.insert(id, leader);
                self.timer(self.request_deadline(now), Timer::Read(id));
                out.push(Effect::Send {
                    to: leader,
                    msg: PeerMessage::ReadIndex { id, lease },
                });
            }
            None => {
                let req = Request::Read {
                    query: spec.query,
                    mode: spec.mode,
                    block: spec.block,
                };
                self.park_for_leader(now, spec.req_id, req, None);
            }
        }
    }

    pub(super) fn remote_read_index(
        &mut self,
        now: Instant,
        from: NodeId,
        id: u64,
        lease: bool,
        out: &mut Vec<Effect>,
    ) {
        let local = self.pending.id();
        match self.raft.read_index(now, local, lease) {
            ReadOutcome::Ready(index) => out.push(Effect::Send {
                to: from,
                msg: PeerMessage::ReadIndexReply { id, index: Some(index) },
            }),
            ReadOutcome::Pending => {
                self.pending.reads.insert(local, PendingRead::Remote { from, id });
                self.timer(self.request_deadline(now), Timer::Read(local));
            }
            ReadOutcome::NotLeader => out.push(Effect::Send {
                to: from,
                msg: PeerMessage::ReadIndexReply { id, index: None },
            }),
        }
    }

    pub(super) fn read_index_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        id: u64,
        index: Option<Index>,
        out: &mut Vec<Effect>,
    ) {
        if self.pending.read_leader.get(&id) != Some(&from) {
            return; // not the leader we asked: a stray (e.g. for an earlier incarnation)
        }
        self.pending.read_leader.remove(&id);
        self.read_confirmed(now, id, index, out);
    }

    /// A read index was confirmed (or refused) for pending read `id`.
    pub(super) fn read_confirmed(&mut self, now: Instant, id: u64, index: Option<Index>, out: &mut Vec<Effect>) {
        match (self.pending.reads.remove(&id), index) {
            (None, _) => {}
            (Some(PendingRead::Local(spec)), Some(index)) => self.serve_at(now, index, spec, out),
            (Some(PendingRead::Local(spec)), None) => out.push(Effect::Reply {
                req_id: spec.req_id,
                resp: Response::Error(ApiError::NoLeader),
            }),
            (Some(PendingRead::Remote { from, id }), index) => out.push(Effect::Send {
                to: from,
                msg: PeerMessage::ReadIndexReply { id, index },
            }),
        }
    }

    fn serve_at(&mut self, now: Instant, index: Index, spec: ReadSpec, out: &mut Vec<Effect>) {
        if self.applied >= index {
            self.serve(now, spec, out);
        } else {
            self.pending.apply_waiters.entry(index).or_default().push(spec);
        }
    }

    pub(super) fn release_apply_waiters(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some(entry) = self.pending.apply_waiters.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for spec in entry.remove() {
                self.serve(now, spec, out);
            }
        }
    }

    fn meta(&self, now: Instant, index: Index, mode: ReadMode) -> QueryMeta {
        QueryMeta {
            index: index.max(1),
            known_leader: self.raft.leader.is_some(),
            last_contact_ms: self.last_contact_ms(now).unwrap_or(0),
            consistency: mode,
        }
    }

    /// Answer a read from the applied state, or park it if it blocks and nothing changed yet.
    fn serve(&mut self, now: Instant, spec: ReadSpec, out: &mut Vec<Effect>) {
        if let (Some(block), Query::Catalog(query)) = (spec.block, &spec.query) {
            // A catalog range's index is known without reading the range: a query that will park costs no
            // read (and none of the read's allocations, which would sit between the parked queries' own).
            let index = self.sm.catalog.range_index(&query.range());
            if block.min_index > 0 && index <= block.min_index && !self.pending.watches.contains_key(&spec.req_id) {
                return self.park(now, spec, block, out);
            }
        }
        let (index, result) = self.read_state(&spec.query);
        self.answer(now, spec, index, result, out);
    }

    /// One read of the applied state: the range's index and what it holds.
    fn read_state(&self, query: &Query) -> (Index, ReadResult) {
        match query {
            Query::Kv(query) => {
                let (index, result) = self.kv_read(query);
                (index, ReadResult::Kv(Arc::new(result)))
            }
            Query::Catalog(query) => {
                let (index, result) = self.sm.catalog.read(query);
                (index, ReadResult::Catalog(Arc::new(result)))
            }
        }
    }

    /// Reply with a read's result, or park the read if it blocks and its range has not passed its index.
    fn answer(&mut self, now: Instant, spec: ReadSpec, index: Index, result: ReadResult, out: &mut Vec<Effect>) {
        if let Some(block) = spec.block {
            if block.min_index > 0 && index <= block.min_index && !self.pending.watches.contains_key(&spec.req_id) {
                return self.park(now, spec, block, out);
            }
        }
        let meta = self.meta(now, index, spec.mode);
        let resp = match result {
            ReadResult::Kv(result) => Response::Kv { meta, result },
            ReadResult::Catalog(result) => Response::Catalog { meta, result },
        };
        out.push(Effect::Reply {
            req_id: spec.req_id,
            resp,
        });
    }

    /// Answer woken blocking queries (no longer blocking). Queries asking the same thing (KV or catalog)
    /// share one read: one `Arc` handed to each, so 10,000 watchers of one service woken by one change cost
    /// one read here and one encoding in the HTTP layer. Consistency metadata stays per query. At most
    /// [`SHARED_READS`] distinct queries are remembered per wake-up, so the lookup stays O(1) per watcher.
    fn answer_woken(&mut self, now: Instant, specs: Vec<ReadSpec>, out: &mut Vec<Effect>) {
        let mut shared: Vec<(Query, Index, ReadResult)> = Vec::new();
        out.reserve(specs.len());
        for mut spec in specs {
            spec.block = None;
            let (index, result) = match shared.iter().find(|(q, _, _)| *q == spec.query) {
                Some((_, index, result)) => (*index, result.clone()),
                None => {
                    let (index, result) = self.read_state(&spec.query);
                    if shared.len() < SHARED_READS {
                        shared.push((spec.query.clone(), index, result.clone()));
                    }
                    (index, result)
                }
            };
            self.answer(now, spec, index, result, out);
        }
    }

    fn kv_read(&self, query: &KvQuery) -> (u64, KvResult) {
        match query {
            KvQuery::Get { key } => {
                let (index, entry) = self.sm.kv.get(key);
                (index, KvResult::Entries(entry.into_iter().collect()))
            }
            KvQuery::Recurse { prefix } => {
                let (index, entries) = self.sm.kv.list(prefix);
                (index, KvResult::Entries(entries))
            }
            KvQuery::Keys { prefix, separator } => {
                let (index, keys) = self.sm.kv.keys(prefix, separator.as_deref());
                (index, KvResult::Keys(keys))
            }
        }
    }

    fn park(&mut self, now: Instant, spec: ReadSpec, block: Blocking, out: &mut Vec<Effect>) {
        let limits = &self.config.limits;
        if self.pending.watches.len() >= limits.max_watches {
            let err = ApiError::Overloaded(format!("{} blocking queries parked", self.pending.watches.len()));
            return out.push(Effect::Reply {
                req_id: spec.req_id,
                resp: Response::Error(err),
            });
        }
        let max = limits.max_query_time;
        let wait = if block.wait.is_zero() {
            limits.default_query_time
        } else {
            block.wait
        }
        .min(max);
        // Consul's jitter: up to wait/16, so many watchers do not all return at once.
        let jitter_us = (wait.as_micros() / 16) as u64;
        let jitter = Duration::from_micros(if jitter_us == 0 {
            0
        } else {
            self.rng.gen_range(0..=jitter_us)
        });
        let deadline = now + (wait + jitter).min(max);
        let range = match &spec.query {
            Query::Kv(KvQuery::Get { key }) => KeyRange::Key(key.clone()),
            Query::Kv(KvQuery::Recurse { prefix } | KvQuery::Keys { prefix, .. }) => KeyRange::Prefix(prefix.clone()),
            Query::Catalog(query) => KeyRange::Catalog(query.range()),
        };
        self.watches.insert(range, WatchId(spec.req_id));
        self.timer(deadline, Timer::Watch(spec.req_id));
        self.pending.watches.insert(spec.req_id, (spec, deadline));
    }

    /// Answer the parked queries whose range contains one of `changed`.
    pub(super) fn wake_watches(&mut self, now: Instant, changed: &Changes, out: &mut Vec<Effect>) {
        if self.watches.is_empty() {
            return;
        }
        let mut fired = Vec::new();
        self.watches.fire(&changed.keys, &mut fired);
        self.watches.fire_catalog(&changed.catalog, &mut fired);
        let specs = fired
            .into_iter()
            .filter_map(|WatchId(req_id)| self.pending.watches.remove(&req_id).map(|(spec, _)| spec))
            .collect();
        self.answer_woken(now, specs, out);
    }

    pub(super) fn wake_all_watches(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut specs = Vec::with_capacity(self.pending.watches.len());
        for (req_id, (spec, _)) in std::mem::take(&mut self.pending.watches) {
            self.watches.remove(WatchId(req_id));
            specs.push(spec);
        }
        self.answer_woken(now, specs, out);
    }

    pub(super) fn cancel(&mut self, req_id: ReqId) {
        if self.pending.watches.remove(&req_id).is_some() {
            self.watches.remove(WatchId(req_id));
        }
    }

    // ---- timers and failure ---------------------------------------------------------------------------

    pub(super) fn fire_timers(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some(&(at, timer)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match timer {
                Timer::Write(index) => {
                    if let Some((origin, _)) = self.pending.writes.remove(&index) {
                        if let Origin::Local(_) = origin {
                            self.reply(origin, Response::Error(ApiError::Timeout), out);
                        }
                    }
                }
                Timer::Forward(id) => {
                    if let Some((req_id, _, _, _)) = self.pending.forwards.remove(&id) {
                        out.push(Effect::Reply {
                            req_id,
                            resp: Response::Error(ApiError::Timeout),
                        });
                    }
                }
                Timer::Read(id) => match self.pending.reads.remove(&id).inspect(|_| {
                    self.pending.read_leader.remove(&id);
                }) {
                    Some(PendingRead::Local(spec)) => out.push(Effect::Reply {
                        req_id: spec.req_id,
                        resp: Response::Error(ApiError::Timeout),
                    }),
                    Some(PendingRead::Remote { .. }) | None => {}
                },
                Timer::Retry(id) => self.redispatch(now, id, out),
                Timer::WaitLeader(id) => {
                    if let Some((req_id, _, _)) = self.pending.wait_leader.remove(&id) {
                        out.push(Effect::Reply {
                            req_id,
                            resp: Response::Error(ApiError::NoLeader),
                        });
                    }
                }
                Timer::CoordinateFlush => self.flush_coordinates(now, out),
                Timer::SnapshotCheck => {
                    self.snapshot_check_due = true;
                    self.schedule_snapshot_check(now);
                }
                Timer::Watch(req_id) => {
                    if self.pending.watches.get(&req_id).is_some_and(|(_, d)| *d == at) {
                        let (mut spec, _) = self.pending.watches.remove(&req_id).expect("checked");
                        self.watches.remove(WatchId(req_id));
                        spec.block = None;
                        self.serve(now, spec, out);
                    }
                }
            }
        }
    }

    pub(super) fn fail_all_pending(&mut self, err: ApiError, out: &mut Vec<Effect>) {
        let pending = std::mem::take(&mut self.pending);
        let mut reply = |req_id| {
            out.push(Effect::Reply {
                req_id,
                resp: Response::Error(err.clone()),
            })
        };
        for (origin, _) in pending.writes.into_values() {
            if let Origin::Local(req_id) = origin {
                reply(req_id);
            }
        }
        pending
            .forwards
            .into_values()
            .for_each(|(req_id, _, _, _)| reply(req_id));
        for read in pending.reads.into_values() {
            if let PendingRead::Local(spec) = read {
                reply(spec.req_id);
            }
        }
        pending
            .apply_waiters
            .into_values()
            .flatten()
            .for_each(|s| reply(s.req_id));
        pending
            .wait_leader
            .into_values()
            .for_each(|(req_id, _, _)| reply(req_id));
        pending.watches.into_keys().for_each(&mut reply);
        self.watches = Default::default();
        self.deadlines.clear();
    }

    fn raft_configuration(&self, now: Instant, mode: ReadMode) -> Response {
        let m = &self.raft.membership;
        let servers = m
            .servers
            .iter()
            .map(|(id, s)| RaftServer {
                id: *id,
                node: s.name.clone(),
                address: s.address.clone(),
                leader: self.raft.leader == Some(*id),
                voter: s.voter,
            })
            .collect();
        let index = self.raft.membership_index;
        Response::RaftConfiguration {
            meta: self.meta(now, index, mode),
            servers,
            index,
        }
    }
}
