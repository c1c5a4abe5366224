//! Anti-entropy: make the catalog's rows for this node match the local state, on every local change and
//! every `interval` (plus a random stagger), best effort: a failed round is logged and retried.
//!
//! Every write of a round is fenced with the round's [`SyncSeq`] (this run's start time in Unix
//! milliseconds, then a counter), so a write of an abandoned round that reaches the leader after a later
//! round's write is refused by the state machine instead of undoing it (no resurrection of a deregistered
//! service by a late forward). A refusal as stale tells the agent that an earlier run got a later sequence
//! (the clock went back across a restart): it moves its epoch past that one and retries.

use crate::http::Backend;
use concord_core::api::{CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::state::{CatalogError, CommandResult, HealthCheck, ServiceInstance, SyncSeq};
use rand::Rng;
use std::time::Duration;

/// `backend` is how catalog reads and writes reach the servers (a server's own driver, or a client's
/// RPC forwarding), and whose local state is synced.
pub struct AntiEntropy<B> {
    pub backend: B,
    /// The periodic full sync (Consul: 1 min for clusters up to 128 nodes).
    pub interval: Duration,
}

/// How long to wait before retrying a failed round.
const RETRY: Duration = Duration::from_secs(1);

/// The sequence of this run's rounds.
pub(crate) struct SyncRounds {
    last: SyncSeq,
}

impl SyncRounds {
    /// Rounds of a run started now: epoch = the Unix time in milliseconds (later than any earlier run's as
    /// long as the clock does not go back across a restart; if it does, see [`SyncRounds::stale`]).
    pub(crate) fn starting_now() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        SyncRounds {
            last: SyncSeq { epoch, round: 0 },
        }
    }

    fn next(&mut self) -> SyncSeq {
        self.last.round += 1;
        self.last
    }

    /// The state machine already applied round `applied` of this node, later than ours: continue after it.
    fn stale(&mut self, applied: SyncSeq) {
        if applied >= self.last {
            self.last = SyncSeq {
                epoch: applied.epoch + 1,
                round: 0,
            };
        }
    }
}

pub async fn run_anti_entropy<B: Backend>(ae: AntiEntropy<B>) {
    let mut changes = ae.backend.local().subscribe();
    let mut rounds = SyncRounds::starting_now();
    loop {
        changes.borrow_and_update();
        let wait = match sync_once(&ae, &mut rounds).await {
            Ok(writes) => {
                if writes > 0 {
                    tracing::info!(target: "agent", "Synced node info: {writes} catalog writes");
                }
                let stagger = rand::rngs::OsRng.gen_range(Duration::ZERO..=ae.interval / 16);
                ae.interval + stagger
            }
            Err(e) => {
                tracing::debug!(target: "agent", "anti-entropy: {e}; retrying");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

async fn read(backend: &impl Backend, query: CatalogQuery) -> Result<CatalogResult, String> {
    let req = Request::Read {
        query: Query::Catalog(query),
        mode: ReadMode::Default,
        block: None,
    };
    match backend.call(req).await {
        Response::Catalog { result, .. } => Ok(std::sync::Arc::unwrap_or_clone(result)),
        Response::Error(e) => Err(e.to_string()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// One round; returns the number of writes it made.
pub(crate) async fn sync_once<B: Backend>(ae: &AntiEntropy<B>, rounds: &mut SyncRounds) -> Result<usize, String> {
    let local = ae.backend.local();
    let name = local.node().name;
    let CatalogResult::Node(found) = read(&ae.backend, CatalogQuery::Node { node: name.clone() }).await? else {
        return Err("unexpected catalog answer".into());
    };
    let CatalogResult::Checks(checks) = read(&ae.backend, CatalogQuery::HealthNode { node: name }).await? else {
        return Err("unexpected catalog answer".into());
    };
    let (node, services): (_, Vec<ServiceInstance>) = match found {
        Some(b) => (Some(b.0), b.1),
        None => (None, Vec::new()),
    };
    let checks: Vec<HealthCheck> = checks;
    let now = local.now();
    let plan = local.with_state(|s| s.sync_plan(now, node.as_ref(), &services, &checks));
    let writes = plan.len();
    let seq = rounds.next();
    for cmd in plan {
        match ae.backend.call(Request::Write(cmd.fenced(seq))).await {
            Response::Written {
                result: CommandResult::Bool(_),
                ..
            } => {}
            Response::Written {
                result: CommandResult::Refused(e @ CatalogError::StaleSync { applied, .. }),
                ..
            } => {
                rounds.stale(applied);
                return Err(e.to_string());
            }
            Response::Written {
                result: CommandResult::Refused(e),
                ..
            } => return Err(e.to_string()),
            Response::Error(e) => return Err(e.to_string()),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_count_up_and_move_past_a_later_applied_run() {
        let mut rounds = SyncRounds::starting_now();
        let first = rounds.next();
        assert!(first.epoch > 1_600_000_000_000, "the epoch is the Unix time in ms");
        assert_eq!(rounds.next(), SyncSeq { round: 2, ..first });
        // A stale refusal naming an older round (a late write of ours) changes nothing.
        rounds.stale(SyncSeq { round: 1, ..first });
        assert_eq!(rounds.next(), SyncSeq { round: 3, ..first });
        // An earlier run got a later sequence (the clock went back): continue after it.
        let ahead = SyncSeq {
            epoch: first.epoch + 60_000,
            round: 7,
        };
        rounds.stale(ahead);
        let next = rounds.next();
        assert!(next > ahead, "{next} after {ahead}");
        assert_eq!(
            next,
            SyncSeq {
                epoch: ahead.epoch + 1,
                round: 1
            }
        );
    }
}
