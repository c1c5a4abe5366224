//! The liveness phase: heal everything, then demand within the bound that every client operation
//! completes, a leader exists that every member follows, every member takes writes, linearizable reads
//! succeed, and every member applies and serves the same state.

use super::{us, Sim};
use crate::disk::DiskFaults;
use crate::history::Record;
use crate::sim::cluster::ServerState;
use crate::sim::net::node_id;
use crate::sim::workload::Client;
use concord_core::api::{Blocking, KvQuery, ReadMode, Request, Response};
use concord_core::node::Role;
use concord_core::state::{Command, CommandResult};
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

impl Sim {
    /// Heal everything, then demand within the bound: every client operation completes, a leader exists that
    /// every member follows, writes and linearizable reads succeed, and every member applies the same state.
    pub(super) async fn liveness_phase(
        &mut self,
        clients: Vec<madsim::task::JoinHandle<Vec<Record>>>,
    ) -> (Vec<Record>, Option<String>) {
        self.shared.stop();
        self.actions.clear();
        let deadline = self.shared.now_us() + us(self.plan.liveness_bound);
        let total = self.plan.servers + self.plan.spares;
        self.cluster().net.heal_all();
        for i in 0..total {
            self.cluster().servers[i]
                .disk
                .lock()
                .expect("unpoisoned")
                .set_faults(DiskFaults::default());
            match self.cluster().servers[i].state {
                ServerState::Paused => self.cluster().resume(i),
                ServerState::Down => self.cluster().restart(i),
                _ => {}
            }
        }
        let mut records = Vec::new();
        let mut failure = None;
        for c in clients {
            let left = Duration::from_micros(deadline.saturating_sub(self.shared.now_us()));
            match madsim::time::timeout(left, c).await {
                Ok(Ok(r)) => records.extend(r),
                _ => {
                    failure.get_or_insert("client operations did not complete within the liveness bound".into());
                }
            }
        }
        if failure.is_none() {
            failure = self.converge(deadline, &mut records).await.err();
        }
        (records, failure)
    }

    /// Status of every running server (None for a server that does not answer promptly).
    async fn statuses(&self) -> Vec<Option<concord_core::node::NodeStatus>> {
        let mut out = Vec::new();
        for i in 0..self.plan.servers + self.plan.spares {
            let st = match self.shared.handle(i) {
                Some(h) => madsim::time::timeout(Duration::from_millis(200), h.status())
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            out.push(st);
        }
        out
    }

    /// Waits for a leader followed by every member; returns (leader, members).
    async fn stable_leader(&mut self, deadline: u64, last: &mut String) -> Option<(usize, Vec<usize>)> {
        while self.shared.now_us() < deadline {
            self.drain_exits();
            let st = self.statuses().await;
            let leader = st
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().filter(|s| s.role == Role::Leader).map(|s| (s.term, i)))
                .max();
            *last = format!(
                "statuses: {:?}",
                st.iter()
                    .map(|s| s
                        .as_ref()
                        .map(|s| (s.role, s.term, s.leader, s.commit_index, s.applied_index)))
                    .collect::<Vec<_>>()
            );
            if let Some((term, l)) = leader {
                let members: Vec<usize> = self
                    .shared
                    .handle(l)
                    .map(|h| {
                        h.membership()
                            .servers
                            .keys()
                            .filter_map(|&id| crate::sim::net::index_of(id))
                            .collect()
                    })
                    .unwrap_or_default();
                // A member that stopped (e.g. it saw itself removed by an entry that was later rolled back)
                // is restarted, as an operator would.
                for &m in &members {
                    if m < self.plan.servers + self.plan.spares && !self.cluster().is_running(m) {
                        self.cluster().restart(m);
                    }
                }
                let all = members.iter().all(|&m| {
                    st.get(m)
                        .and_then(|s| s.as_ref())
                        .is_some_and(|s| s.term == term && s.leader == Some(node_id(l)))
                });
                if all && !members.is_empty() {
                    return Some((l, members));
                }
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn drain_exits(&mut self) {
        let mut exits = self.exits.take().expect("exits");
        while let Ok(exit) = exits.try_recv() {
            self.on_exit(exit);
        }
        self.exits = Some(exits);
    }

    async fn converge(&mut self, deadline: u64, records: &mut Vec<Record>) -> Result<(), String> {
        let bound = self.plan.liveness_bound;
        let mut last = String::new();
        let Some((_, members)) = self.stable_leader(deadline, &mut last).await else {
            return Err(format!(
                "no leader followed by every member within {bound:?} of healing; {last}"
            ));
        };
        let mut client = Client::new(
            999,
            self.plan.seed,
            self.plan.workload.clone(),
            self.shared.clone(),
            self.plan.op_timeout,
        );
        let result = self.final_checks(&mut client, &members, deadline).await;
        // Whatever happened, the final operations join the history.
        records.extend(std::mem::take(&mut client.records));
        result
    }

    /// A write through every member, one write and one linearizable read per key, then every member applies
    /// the same state and serves the same data.
    async fn final_checks(&mut self, client: &mut Client, members: &[usize], deadline: u64) -> Result<(), String> {
        let bound = self.plan.liveness_bound;
        // A client of any member can write again: each member takes a write (forwarded to the leader).
        let first_key = self.plan.workload.keys[0].clone();
        for &m in members {
            let write = |attempt: u32| put(&first_key, format!("via-s{}-{attempt}", m + 1));
            self.until_ok(client, &[m], write, deadline, written)
                .await
                .map_err(|e| {
                    format!(
                        "a write through member s{} did not succeed within {bound:?} of healing: {e}",
                        m + 1
                    )
                })?;
        }
        let mut finals = BTreeMap::new();
        for (k, key) in self.plan.workload.keys.clone().into_iter().enumerate() {
            let write = |attempt: u32| put(&key, format!("final-{k}-{attempt}"));
            self.until_ok(client, members, write, deadline, written)
                .await
                .map_err(|e| format!("a write of {key:?} did not succeed within {bound:?} of healing: {e}"))?;
            let read = |_| get(&key, ReadMode::Consistent);
            let resp = self
                .until_ok(client, members, read, deadline, |r| matches!(r, Response::Kv { .. }))
                .await
                .map_err(|e| {
                    format!("a consistent read of {key:?} did not succeed within {bound:?} of healing: {e}")
                })?;
            finals.insert(key, resp);
        }
        self.await_agreement(members, deadline).await?;
        // Every member has caught up: from here on follower lag is bounded, and so is how late a blocking
        // query may wake (see `Sim::wake_bound`). Each key gets blocking queries parked on every member, then a
        // write.
        self.wake_from = Some(self.shared.now_us());
        for (k, (key, resp)) in finals.clone().into_iter().enumerate() {
            let Response::Kv { meta, .. } = resp else {
                unreachable!("until_ok accepted only a Kv reply")
            };
            self.watch_then_write(client, members, k, &key, meta.index, deadline)
                .await?;
            let read = |_| get(&key, ReadMode::Consistent);
            let resp = self
                .until_ok(client, members, read, deadline, |r| matches!(r, Response::Kv { .. }))
                .await
                .map_err(|e| {
                    format!("a consistent read of {key:?} did not succeed within {bound:?} of healing: {e}")
                })?;
            finals.insert(key, resp);
        }
        self.await_agreement(members, deadline).await?;
        let finals: BTreeMap<String, _> = finals.into_iter().map(|(k, r)| (k, entry_value(&r))).collect();
        // And serve the same data: a stale read of every key on every member.
        for &m in members {
            for (key, want) in &finals {
                let got = client
                    .call(get(key, ReadMode::Stale), Some(m), self.plan.op_timeout)
                    .await;
                let got = got.as_ref().map(entry_value);
                if got.as_ref() != Some(want) {
                    return Err(format!(
                        "after convergence, member s{} serves {key:?} = {got:?}, the cluster says {want:?}",
                        m + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parks blocking queries of `key` above `index` on every member (a default and a stale one each, so a
    /// write fires several watches per node), then writes the key through one member. Every query must come
    /// back with the change; `history::check_wakeups` then holds each to the wake-up bound.
    async fn watch_then_write(
        &mut self,
        client: &mut Client,
        members: &[usize],
        k: usize,
        key: &str,
        index: u64,
        deadline: u64,
    ) -> Result<(), String> {
        let bound = self.plan.liveness_bound;
        let wait = WATCH_WAIT;
        let mut parked = Vec::new();
        for (j, &m) in members.iter().enumerate() {
            for (n, mode) in [ReadMode::Default, ReadMode::Stale].into_iter().enumerate() {
                let id = 1_000 + 100 * k + 2 * j + n;
                let mut watcher = Client::new(
                    id,
                    self.plan.seed,
                    self.plan.workload.clone(),
                    self.shared.clone(),
                    self.plan.op_timeout,
                );
                let req = Request::KvRead {
                    query: KvQuery::Get { key: key.to_string() },
                    mode,
                    block: Some(Blocking { min_index: index, wait }),
                };
                let timeout = wait + wait / 16 + self.plan.op_timeout;
                parked.push(madsim::task::spawn(async move {
                    watcher.call(req, Some(m), timeout).await;
                    watcher.records
                }));
            }
        }
        // Let every query reach its server and park.
        madsim::time::sleep(Duration::from_millis(100)).await;
        let write = |attempt: u32| put(key, format!("wake-{k}-{attempt}"));
        self.until_ok(client, members, write, deadline, written)
            .await
            .map_err(|e| format!("a write of {key:?} did not succeed within {bound:?} of healing: {e}"))?;
        let mut problem = None;
        for p in parked {
            let records = p.await.map_err(|e| format!("a watcher task failed: {e}"))?;
            for r in &records {
                let woke = matches!(&r.resp, Some(Response::Kv { meta, .. }) if meta.index > index);
                if !woke {
                    problem.get_or_insert(format!(
                        "a blocking query parked before a write of {key:?} did not return the change: node s{} \
                         answered {}",
                        r.node + 1,
                        crate::history::describe(r)
                    ));
                }
            }
            client.records.extend(records);
        }
        problem.map_or(Ok(()), Err)
    }

    /// Every member applies up to the highest index any node applied, with the same digest.
    async fn await_agreement(&mut self, members: &[usize], deadline: u64) -> Result<(), String> {
        let bound = self.plan.liveness_bound;
        let target = self
            .shared
            .checker
            .lock()
            .expect("unpoisoned")
            .highest_applied()
            .map_or(0, |(i, _)| i);
        loop {
            let applied: Vec<_> = members
                .iter()
                .map(|&m| self.shared.handle(m).map(|h| *h.subscribe_applied().borrow()))
                .collect();
            if applied.iter().all(|a| a.is_some_and(|a| a.index >= target)) {
                let states: BTreeSet<_> = applied.iter().flatten().map(|a| (a.index, a.digest)).collect();
                // Different indexes are fine while a write is still being applied; wait for them.
                if states.len() == 1 {
                    return Ok(());
                }
                if self.shared.now_us() >= deadline {
                    return Err(format!("members applied different states: {states:?}"));
                }
            }
            if self.shared.now_us() >= deadline {
                return Err(format!(
                    "members did not apply up to index {target} within {bound:?} of healing: {applied:?}"
                ));
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Retries `req(attempt)` on random members until `ok` accepts a reply or the deadline passes.
    async fn until_ok(
        &mut self,
        client: &mut Client,
        members: &[usize],
        req: impl Fn(u32) -> Request,
        deadline: u64,
        ok: impl Fn(&Response) -> bool,
    ) -> Result<Response, String> {
        let (mut attempt, mut outcomes) = (0, BTreeMap::<String, u32>::new());
        while self.shared.now_us() < deadline {
            attempt += 1;
            let m = *members.choose(&mut self.rng).expect("members");
            let resp = client.call(req(attempt), Some(m), self.plan.op_timeout).await;
            match resp {
                Some(resp) if ok(&resp) => return Ok(resp),
                other => *outcomes.entry(format!("{other:?}")).or_default() += 1,
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{attempt} attempts answered {outcomes:?}"))
    }
}

/// The wait of the liveness phase's blocking queries: well above the wake-up bound, so a query that sleeps
/// through its key's change to this deadline is told apart from one that woke late but within it.
const WATCH_WAIT: Duration = Duration::from_secs(4);

fn entry_value(resp: &Response) -> Option<bytes::Bytes> {
    resp.kv_entries().and_then(|(_, e)| e.first()).map(|e| e.value.clone())
}

fn put(key: &str, value: String) -> Request {
    Request::Write(Command::KvSet {
        key: key.to_string(),
        value: bytes::Bytes::from(value),
        flags: 0,
        cas: None,
    })
}

fn get(key: &str, mode: ReadMode) -> Request {
    Request::KvRead {
        query: KvQuery::Get { key: key.to_string() },
        mode,
        block: None,
    }
}

fn written(r: &Response) -> bool {
    matches!(
        r,
        Response::Written {
            result: CommandResult::Bool(true),
            ..
        }
    )
}
