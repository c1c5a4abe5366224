//! Clients: each issues KV operations through `DriverHandle::call` of a random live server, with a
//! per-operation timeout (the outcome is then unknown), and records what it saw. Watchers loop on
//! blocking queries of one key. Every value written is unique (`c<client>-<n>`), which the checkers rely on.

use crate::history::Record;
use crate::sim::plan::WorkloadMix;
use crate::sim::Shared;
use bytes::Bytes;
use concord_core::api::{Blocking, KvQuery, ReadMode, Request, Response};
use concord_core::state::{Command, CommandResult};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Client {
    pub id: usize,
    rng: SmallRng,
    mix: WorkloadMix,
    shared: Arc<Shared>,
    op_timeout: Duration,
    written: u64,
    /// Last ModifyIndex this client saw per key (for CAS).
    known: BTreeMap<String, u64>,
    pub records: Vec<Record>,
}

impl Client {
    pub fn new(id: usize, seed: u64, mix: WorkloadMix, shared: Arc<Shared>, op_timeout: Duration) -> Self {
        Client {
            id,
            rng: SmallRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            mix,
            shared,
            op_timeout,
            written: 0,
            known: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    fn value(&mut self) -> Bytes {
        self.written += 1;
        Bytes::from(format!("c{}-{}", self.id, self.written))
    }

    fn mode(&mut self) -> ReadMode {
        let modes = [ReadMode::Default, ReadMode::Consistent, ReadMode::Stale];
        let total: u32 = self.mix.modes.iter().sum();
        let mut pick = self.rng.gen_range(0..total);
        for (m, w) in modes.iter().zip(self.mix.modes) {
            if pick < w {
                return *m;
            }
            pick -= w;
        }
        ReadMode::Consistent
    }

    fn next_request(&mut self) -> Request {
        let key = self.mix.keys.choose(&mut self.rng).expect("keys").clone();
        let total: u32 = self.mix.ops.iter().sum();
        let mut pick = self.rng.gen_range(0..total);
        let mut op = 0;
        for (i, w) in self.mix.ops.iter().enumerate() {
            if pick < *w {
                op = i;
                break;
            }
            pick -= w;
        }
        let known = self.known.get(&key).copied();
        match op {
            0 => Request::Write(Command::KvSet {
                key,
                value: self.value(),
                flags: 0,
                cas: None,
            }),
            1 => Request::KvRead {
                query: KvQuery::Get { key },
                mode: self.mode(),
                block: None,
            },
            2 => Request::Write(Command::KvSet {
                key,
                value: self.value(),
                flags: 0,
                cas: Some(known.unwrap_or(0)),
            }),
            3 => Request::Write(Command::KvDelete { key, cas: None }),
            4 => match known {
                Some(n) if n > 0 => Request::Write(Command::KvDelete { key, cas: Some(n) }),
                _ => Request::Write(Command::KvDelete { key, cas: None }),
            },
            _ => Request::Write(Command::KvDeleteTree {
                prefix: key[..2].to_string(),
            }),
        }
    }

    /// Sends `req` to a random live server (or `node` if given) and records the outcome.
    pub async fn call(&mut self, req: Request, node: Option<usize>, timeout: Duration) -> Option<Response> {
        let (node, handle) = match node {
            Some(n) => (n, self.shared.handle(n)?),
            None => self.shared.random_handle(&mut self.rng)?,
        };
        let call = self.shared.now_us();
        let resp = madsim::time::timeout(timeout, handle.call(req.clone())).await.ok();
        let ret = self.shared.now_us();
        self.learn(&req, resp.as_ref());
        self.shared.count_op();
        self.records.push(Record {
            client: self.id,
            node,
            call,
            ret,
            req,
            resp: resp.clone(),
        });
        resp
    }

    fn learn(&mut self, req: &Request, resp: Option<&Response>) {
        match (req, resp) {
            (
                Request::Write(Command::KvSet { key, .. }),
                Some(Response::Written {
                    index,
                    result: CommandResult::Bool(true),
                }),
            ) => {
                self.known.insert(key.clone(), *index);
            }
            (
                Request::KvRead {
                    query: KvQuery::Get { key },
                    ..
                },
                Some(resp),
            ) if resp.kv_entries().is_some() => match resp.kv_entries().and_then(|(_, e)| e.first()) {
                Some(e) => {
                    self.known.insert(key.clone(), e.modify_index);
                }
                None => {
                    self.known.remove(key);
                }
            },
            _ => {}
        }
    }

    /// The safety-phase loop: operations with think time until the phase ends.
    pub async fn run(&mut self) {
        while !self.shared.stopping() {
            let think = self.rng.gen_range(self.mix.think_ms.0..=self.mix.think_ms.1);
            madsim::time::sleep(Duration::from_millis(think)).await;
            let req = self.next_request();
            if self.call(req, None, self.op_timeout).await.is_none() && self.shared.live_count() == 0 {
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// A watcher: blocking queries on one key, each starting from the index the last one returned.
    pub async fn watch(&mut self) {
        let key = self.mix.keys.choose(&mut self.rng).expect("keys").clone();
        let mut index = 0;
        while !self.shared.stopping() {
            let wait = Duration::from_millis(self.rng.gen_range(200..2_000));
            let mode = if self.rng.gen_bool(0.8) {
                ReadMode::Default
            } else {
                ReadMode::Consistent
            };
            let block = (index > 0).then_some(Blocking { min_index: index, wait });
            let req = Request::KvRead {
                query: KvQuery::Get { key: key.clone() },
                mode,
                block,
            };
            // The server may add up to wait/16 of jitter.
            match self.call(req, None, wait + wait / 16 + self.op_timeout).await {
                Some(Response::Kv { meta, .. }) => index = meta.index,
                _ => madsim::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
