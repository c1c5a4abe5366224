//! Client histories and the checks over them: linearizability per key (default and `?consistent` reads,
//! every write), stale reads (a value that was really written, never one from the future), blocking
//! queries (indexes never go back, a watch never misses an acknowledged change), and `ModifyIndex`
//! consistency (one value, one index).
//!
//! Every value the workload writes is unique, which is what lets a read name the write it observed and a
//! compare-and-swap on a `ModifyIndex` be checked as a compare on a value. A write answered with anything
//! but `Written` (an error, a timeout in the client) has an unknown outcome: it may have been applied.

use crate::linearizability::{self, Cond, KeyOp, RegOp, Val, Verdict};
use bytes::Bytes;
use concord_core::api::{KvQuery, ReadMode, Request, Response};
use concord_core::state::{Command, CommandResult};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One client operation as the client saw it. Times are true simulated time in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub client: usize,
    /// The server the request was sent to.
    pub node: usize,
    pub call: u64,
    pub ret: u64,
    pub req: Request,
    /// `None`: the client gave up waiting.
    pub resp: Option<Response>,
}

/// What the checks found besides violations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub ops: usize,
    pub unknown_writes: usize,
    pub linearizable_reads: usize,
    pub stale_reads: usize,
    /// Blocking queries answered (watch checks).
    pub blocking_reads: usize,
    /// Blocking queries held to the wake-up bound (`check_wakeups`).
    pub wakeups_checked: usize,
    pub keys_checked: usize,
    /// Keys whose linearizability search ran out of budget.
    pub inconclusive_keys: Vec<String>,
}

/// A failed check, with a human-readable account of the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryViolation {
    pub message: String,
}

impl std::fmt::Display for HistoryViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks every client history. `keys` is every key the workload may touch (delete-tree is expanded over it).
pub fn check(records: &[Record], keys: &[String]) -> Result<HistoryStats, HistoryViolation> {
    let mut h = Builder::new(records, keys);
    h.build()?;
    let mut stats = HistoryStats {
        ops: records.len(),
        ..Default::default()
    };
    stats.unknown_writes = h.unknown_writes;
    stats.linearizable_reads = h.linear_reads;
    stats.stale_reads = h.stale_reads;
    stats.blocking_reads = records
        .iter()
        .filter(|r| {
            matches!(
                (&r.req, &r.resp),
                (Request::KvRead { block: Some(_), .. }, Some(Response::Kv { .. }))
            )
        })
        .count();
    for (key, ops) in &h.per_key {
        if ops.is_empty() {
            continue;
        }
        stats.keys_checked += 1;
        match linearizability::check(ops) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => {
                if std::env::var_os("SIM_DEBUG_INCONCLUSIVE").is_some() {
                    eprintln!("{}", h.explain(key, &Verdict::Inconclusive));
                }
                stats.inconclusive_keys.push(key.clone())
            }
            v @ Verdict::Violation { .. } => {
                return Err(HistoryViolation {
                    message: h.explain(key, &v),
                });
            }
        }
    }
    h.check_stale_reads()?;
    h.check_watch_indexes()?;
    Ok(stats)
}

struct Builder<'a> {
    records: &'a [Record],
    keys: &'a [String],
    vals: BTreeMap<Bytes, Val>,
    /// Per value: the record that wrote it.
    writer: Vec<usize>,
    /// ModifyIndex of each value, as observed (write replies, reads).
    val_index: BTreeMap<Val, u64>,
    index_val: BTreeMap<u64, (Val, usize)>,
    per_key: BTreeMap<String, Vec<KeyOp>>,
    unknown_writes: usize,
    linear_reads: usize,
    stale_reads: usize,
}

fn fail<T>(message: String) -> Result<T, HistoryViolation> {
    Err(HistoryViolation { message })
}

fn read_key(req: &Request) -> Option<(&str, ReadMode, bool)> {
    match req {
        Request::KvRead {
            query: KvQuery::Get { key },
            mode,
            block,
        } => Some((key, *mode, block.is_some())),
        _ => None,
    }
}

impl<'a> Builder<'a> {
    fn new(records: &'a [Record], keys: &'a [String]) -> Self {
        Builder {
            records,
            keys,
            vals: BTreeMap::new(),
            writer: Vec::new(),
            val_index: BTreeMap::new(),
            index_val: BTreeMap::new(),
            per_key: keys.iter().map(|k| (k.clone(), Vec::new())).collect(),
            unknown_writes: 0,
            linear_reads: 0,
            stale_reads: 0,
        }
    }

    /// Interns every written value (each must be unique).
    fn intern_writes(&mut self) {
        for (r, rec) in self.records.iter().enumerate() {
            if let Request::Write(Command::KvSet { value, .. }) = &rec.req {
                let v = self.writer.len() as Val;
                let fresh = self.vals.insert(value.clone(), v).is_none();
                assert!(fresh, "the workload wrote {value:?} twice; values must be unique");
                self.writer.push(r);
            }
        }
    }

    fn observe_index(&mut self, v: Val, index: u64, r: usize) -> Result<(), HistoryViolation> {
        if let Some(&old) = self.val_index.get(&v) {
            if old != index {
                return fail(format!(
                    "value written by record #{} was seen with ModifyIndex {old} and later {index} (record #{r})",
                    self.writer[v as usize]
                ));
            }
        }
        if let Some(&(other, r0)) = self.index_val.get(&index) {
            if other != v {
                return fail(format!(
                    "ModifyIndex {index} names two different writes: records #{} and #{} (seen in records #{r0} \
                     and #{r})",
                    self.writer[other as usize], self.writer[v as usize]
                ));
            }
        }
        self.val_index.insert(v, index);
        self.index_val.insert(index, (v, r));
        Ok(())
    }

    /// Collects every observation of (value, ModifyIndex) before the histories are built, so a CAS can be
    /// resolved whatever the order.
    fn observe_all(&mut self) -> Result<(), HistoryViolation> {
        for (r, rec) in self.records.iter().enumerate() {
            match (&rec.req, &rec.resp) {
                (
                    Request::Write(Command::KvSet { value, .. }),
                    Some(Response::Written {
                        index,
                        result: CommandResult::Bool(true),
                    }),
                ) => {
                    let v = self.vals[value];
                    self.observe_index(v, *index, r)?;
                }
                (req, Some(resp)) if resp.kv_entries().is_some() => {
                    let Some((meta, entries)) = resp.kv_entries() else {
                        continue;
                    };
                    let Some((key, _, _)) = read_key(req) else {
                        continue;
                    };
                    if entries.len() > 1 || entries.iter().any(|e| e.key != key) {
                        return fail(format!("record #{r}: a read of {key:?} returned {entries:?}"));
                    }
                    for e in entries {
                        let Some(&v) = self.vals.get(&e.value) else {
                            return fail(format!(
                                "record #{r}: read of {key:?} returned {:?}, which no client ever wrote",
                                e.value
                            ));
                        };
                        if e.modify_index > meta.index {
                            return fail(format!(
                                "record #{r}: entry ModifyIndex {} is above the read's X-Consul-Index {}",
                                e.modify_index, meta.index
                            ));
                        }
                        self.observe_index(v, e.modify_index, r)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The condition of a write with `?cas=` (Consul: a PUT with `cas=0` creates only; a DELETE with `cas=0`
    /// deletes nothing and answers whether the key is absent; a DELETE of an absent key answers true); `None`
    /// if the index names no observed write (the workload takes it from a read, so this does not happen;
    /// skipping is safer than guessing).
    fn cond(&self, cas: Option<u64>, delete: bool) -> Option<Cond> {
        match cas {
            None => Some(Cond::Always),
            Some(0) => Some(Cond::Absent),
            Some(n) => self
                .index_val
                .get(&n)
                .map(|&(v, _)| if delete { Cond::AbsentOr(v) } else { Cond::Is(v) }),
        }
    }

    fn push_write(&mut self, key: &str, r: usize, value: Option<Val>, cond: Cond) {
        let rec = &self.records[r];
        let applied = match &rec.resp {
            Some(Response::Written {
                result: CommandResult::Bool(b),
                ..
            }) => Some(*b),
            _ => None,
        };
        if applied.is_none() {
            self.unknown_writes += 1;
        }
        let ret = applied.map(|_| rec.ret);
        if let Some(ops) = self.per_key.get_mut(key) {
            ops.push(KeyOp {
                call: rec.call,
                ret,
                op: RegOp::Write { value, cond, applied },
                record: r,
            });
        }
    }

    fn build(&mut self) -> Result<(), HistoryViolation> {
        self.intern_writes();
        self.observe_all()?;
        for r in 0..self.records.len() {
            let rec = &self.records[r];
            match &rec.req {
                Request::Write(Command::KvSet { key, value, cas, .. }) => {
                    let v = self.vals[value];
                    if let Some(cond) = self.cond(*cas, false) {
                        self.push_write(&key.clone(), r, Some(v), cond);
                    }
                }
                Request::Write(Command::KvDelete { key, cas }) => {
                    if let Some(cond) = self.cond(*cas, true) {
                        self.push_write(&key.clone(), r, None, cond);
                    }
                }
                Request::Write(Command::KvDeleteTree { prefix }) => {
                    let covered: Vec<String> = self
                        .keys
                        .iter()
                        .filter(|k| k.starts_with(prefix.as_str()))
                        .cloned()
                        .collect();
                    for key in covered {
                        self.push_write(&key, r, None, Cond::Always);
                    }
                }
                req => {
                    let Some((key, mode, _)) = read_key(req) else {
                        continue;
                    };
                    let Some((_, entries)) = rec.resp.as_ref().and_then(Response::kv_entries) else {
                        continue;
                    };
                    if mode == ReadMode::Stale {
                        self.stale_reads += 1;
                        continue;
                    }
                    self.linear_reads += 1;
                    let seen = entries.first().map(|e| self.vals[&e.value]);
                    let op = KeyOp {
                        call: rec.call,
                        ret: Some(rec.ret),
                        op: RegOp::Read { seen },
                        record: r,
                    };
                    if let Some(ops) = self.per_key.get_mut(key) {
                        ops.push(op);
                    }
                }
            }
        }
        Ok(())
    }

    /// A stale read may be old, but it must show a value that was really written, by a write that had
    /// started before the read returned and that was not refused.
    fn check_stale_reads(&self) -> Result<(), HistoryViolation> {
        for (r, rec) in self.records.iter().enumerate() {
            let Some((key, ReadMode::Stale, _)) = read_key(&rec.req) else {
                continue;
            };
            let Some((_, entries)) = rec.resp.as_ref().and_then(Response::kv_entries) else {
                continue;
            };
            for e in entries {
                let w = self.writer[self.vals[&e.value] as usize];
                let wrec = &self.records[w];
                if wrec.call > rec.ret {
                    return fail(format!(
                        "stale read #{r} of {key:?} returned a value from the future: written by record #{w}, \
                         called at {}µs, after the read returned at {}µs",
                        wrec.call, rec.ret
                    ));
                }
                if let Some(Response::Written {
                    result: CommandResult::Bool(false),
                    ..
                }) = wrec.resp
                {
                    return fail(format!(
                        "stale read #{r} of {key:?} returned the value of refused write #{w}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Blocking queries (and every default/consistent read): the key's index never goes back for one client,
    /// and covers every value write to the key that was acknowledged before the read was sent.
    fn check_watch_indexes(&self) -> Result<(), HistoryViolation> {
        // (key) -> acknowledged value writes as (ack time, index), sorted by ack time.
        let mut acked: BTreeMap<&str, Vec<(u64, u64, usize)>> = BTreeMap::new();
        for (r, rec) in self.records.iter().enumerate() {
            if let (
                Request::Write(Command::KvSet { key, .. }),
                Some(Response::Written {
                    index,
                    result: CommandResult::Bool(true),
                }),
            ) = (&rec.req, &rec.resp)
            {
                acked.entry(key).or_default().push((rec.ret, *index, r));
            }
        }
        for v in acked.values_mut() {
            v.sort_unstable();
        }
        let mut last: BTreeMap<(usize, &str), (u64, usize)> = BTreeMap::new();
        for (r, rec) in self.records.iter().enumerate() {
            let Some((key, mode, blocking)) = read_key(&rec.req) else {
                continue;
            };
            if mode == ReadMode::Stale {
                continue;
            }
            let Some(Response::Kv { meta, .. }) = &rec.resp else {
                continue;
            };
            if let Some(writes) = acked.get(key) {
                let before = writes.partition_point(|&(t, _, _)| t < rec.call);
                if let Some(&(_, w, wr)) = writes[..before].iter().max_by_key(|&&(_, w, _)| w) {
                    if meta.index < w {
                        return fail(format!(
                            "read #{r} of {key:?} ({mode:?}{}) answered X-Consul-Index {}, below index {w} of write \
                             #{wr} acknowledged before it was sent: the change was missed; operations on the key \
                             between the two:\n{}",
                            if blocking { ", blocking" } else { "" },
                            meta.index,
                            self.listing(key, &[wr, r], Some((self.records[wr].call, rec.ret))),
                        ));
                    }
                }
            }
            if blocking {
                if let Some(&(prev, pr)) = last.get(&(rec.client, key)) {
                    if meta.index < prev {
                        return fail(format!(
                            "blocking query #{r} of {key:?} went back from index {prev} (record #{pr}) to {}",
                            meta.index
                        ));
                    }
                }
                last.insert((rec.client, key), (meta.index, r));
            }
        }
        Ok(())
    }

    /// Prints the key's history around the failure.
    fn explain(&self, key: &str, verdict: &Verdict) -> String {
        let stuck = match verdict {
            Verdict::Violation { stuck, .. } => *stuck,
            _ => usize::MAX,
        };
        format!("history of {key:?} is {verdict}\n{}", self.listing(key, &[stuck], None))
    }

    /// The key's operations in call order, `marked` ones flagged; only those overlapping `window` if given.
    fn listing(&self, key: &str, marked: &[usize], window: Option<(u64, u64)>) -> String {
        let mut s = String::new();
        let mut ops: Vec<&KeyOp> = self.per_key[key].iter().collect();
        ops.sort_by_key(|o| (o.call, o.record));
        for op in ops {
            let rec = &self.records[op.record];
            if window.is_some_and(|(from, to)| rec.call > to || op.ret.is_some_and(|r| r < from)) {
                continue;
            }
            let mark = if marked.contains(&op.record) { ">>" } else { "  " };
            let ret = op
                .ret
                .map_or("unknown".to_string(), |t| format!("{:.3}ms", t as f64 / 1000.0));
            let _ = writeln!(
                s,
                "{mark} #{:<5} client {} node {} [{:>10.3}ms .. {ret}] {}",
                op.record,
                rec.client,
                rec.node,
                rec.call as f64 / 1000.0,
                describe(rec),
            );
        }
        s
    }
}

fn short(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One line per operation for failure reports.
pub fn describe(rec: &Record) -> String {
    let req = match &rec.req {
        Request::Write(Command::KvSet { key, value, cas, .. }) => match cas {
            None => format!("put {key}={}", short(value)),
            Some(n) => format!("cas {key}={} if index={n}", short(value)),
        },
        Request::Write(Command::KvDelete { key, cas }) => match cas {
            None => format!("delete {key}"),
            Some(n) => format!("delete {key} if index={n}"),
        },
        Request::Write(Command::KvDeleteTree { prefix }) => format!("delete-tree {prefix}"),
        Request::KvRead { query, mode, block } => {
            let b = block.map_or(String::new(), |b| format!(" blocking(index>{})", b.min_index));
            format!("get {query:?} {mode:?}{b}")
        }
        other => format!("{other:?}"),
    };
    let resp = match &rec.resp {
        None => "client timeout".to_string(),
        Some(Response::Written {
            index,
            result: CommandResult::Bool(b),
        }) => format!("-> {b} @ {index}"),
        Some(resp) if resp.kv_entries().is_some() => {
            let (meta, e) = resp.kv_entries().expect("checked");
            match e.first() {
                None => format!("-> absent (X-Consul-Index {})", meta.index),
                Some(e) => format!(
                    "-> {} (ModifyIndex {}, X-Consul-Index {})",
                    short(&e.value),
                    e.modify_index,
                    meta.index
                ),
            }
        }
        Some(other) => format!("-> {other:?}"),
    };
    format!("{req} {resp}")
}

/// A bound on when blocking queries must wake, for the part of a run where follower lag is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeBound {
    /// Only blocking queries sent at or after this time (µs) are held to the bound: the cluster was healed,
    /// every fault off and a leader followed by every member.
    pub from_us: u64,
    /// A parked query must return within this long (µs) of the acknowledgement of a write that changed its key.
    pub bound_us: u64,
    /// Most a node's clock may run fast, in ppm: a query that returned with no change is only accepted once
    /// `wait` may have passed on the serving node's clock.
    pub drift_ppm: u64,
}

/// Missed wake-ups: a blocking query on key k with `min_index = m`, sent at `call` at or after
/// `bound.from_us`, must return within `bound.bound_us` of the earliest `max(ack, call)` over acknowledged
/// writes of k with `ModifyIndex > m` (a write acknowledged before the query was sent must make it return at
/// once); and it must not return with X-Consul-Index ≤ m before its `wait` passed. A query the client gave
/// up on counts as returning when the client gave up. Returns how many blocking queries were held to the
/// bound.
pub fn check_wakeups(records: &[Record], bound: WakeBound) -> Result<usize, HistoryViolation> {
    // key -> acknowledged value writes as (index, ack time, record).
    let mut acked: BTreeMap<&str, Vec<(u64, u64, usize)>> = BTreeMap::new();
    for (r, rec) in records.iter().enumerate() {
        if let (
            Request::Write(Command::KvSet { key, .. }),
            Some(Response::Written {
                index,
                result: CommandResult::Bool(true),
            }),
        ) = (&rec.req, &rec.resp)
        {
            acked.entry(key).or_default().push((*index, rec.ret, r));
        }
    }
    let mut checked = 0;
    for (r, rec) in records.iter().enumerate() {
        let Request::KvRead {
            query: KvQuery::Get { key },
            block: Some(b),
            ..
        } = &rec.req
        else {
            continue;
        };
        if rec.call < bound.from_us {
            continue;
        }
        checked += 1;
        let m = b.min_index;
        let wake = acked
            .get(key.as_str())
            .into_iter()
            .flatten()
            .filter(|&&(index, _, _)| index > m)
            .map(|&(index, ack, w)| (ack.max(rec.call), index, w))
            .min();
        if let Some((due, index, w)) = wake {
            if rec.ret > due + bound.bound_us {
                let ctx = {
                    let window: Vec<&Record> = records
                        .iter()
                        .filter(|o| o.call <= rec.ret && o.ret >= rec.call)
                        .filter(|o| read_key(&o.req).is_some_and(|(k, _, _)| k == key) || writes_key(&o.req, key))
                        .collect();
                    window.iter().fold(String::new(), |mut s, o| {
                        let _ = writeln!(
                            s,
                            "   client {} node {} [{:>10.3}ms .. {:.3}ms] {}",
                            o.client,
                            o.node,
                            o.call as f64 / 1000.0,
                            o.ret as f64 / 1000.0,
                            describe(o)
                        );
                        s
                    })
                };
                return fail(format!(
                    "missed wake-up: blocking query #{r} of {key:?} (index>{m}, wait {:?}) sent at {:.3}ms to node {} \
                     returned at {:.3}ms ({}), but write #{w} (ModifyIndex {index}) was acknowledged at {:.3}ms: it \
                     should have returned by {:.3}ms; operations on the key meanwhile:\n{ctx}",
                    b.wait,
                    rec.call as f64 / 1000.0,
                    rec.node,
                    rec.ret as f64 / 1000.0,
                    describe(rec),
                    records[w].ret as f64 / 1000.0,
                    (due + bound.bound_us) as f64 / 1000.0,
                ));
            }
        }
        if let Some(Response::Kv { meta, .. }) = &rec.resp {
            let wait_us = b.wait.as_micros() as u64 * 1_000_000 / (1_000_000 + bound.drift_ppm);
            if meta.index <= m && rec.ret - rec.call < wait_us {
                return fail(format!(
                    "blocking query #{r} of {key:?} (index>{m}, wait {:?}) sent at {:.3}ms to node {} returned after \
                     {:.3}ms with X-Consul-Index {}: no change, yet its wait had not passed",
                    b.wait,
                    rec.call as f64 / 1000.0,
                    rec.node,
                    (rec.ret - rec.call) as f64 / 1000.0,
                    meta.index
                ));
            }
        }
    }
    Ok(checked)
}

fn writes_key(req: &Request, key: &str) -> bool {
    match req {
        Request::Write(Command::KvSet { key: k, .. } | Command::KvDelete { key: k, .. }) => k == key,
        Request::Write(Command::KvDeleteTree { prefix }) => key.starts_with(prefix.as_str()),
        _ => false,
    }
}

/// Every key that appears in `records` (for histories whose key set is not known up front).
pub fn keys_of(records: &[Record]) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for rec in records {
        match &rec.req {
            Request::Write(Command::KvSet { key, .. } | Command::KvDelete { key, .. }) => {
                keys.insert(key.clone());
            }
            req => {
                if let Some((key, _, _)) = read_key(req) {
                    keys.insert(key.to_string());
                }
            }
        }
    }
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests;
