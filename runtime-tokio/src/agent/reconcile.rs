//! The leader's `serfHealth` loop (Consul's `leaderLoop` reconcile): while this server leads, every LAN
//! membership change is written to the catalog through Raft, and a full reconciliation runs on gaining
//! leadership and every [`RECONCILE_INTERVAL`], so a change missed while no one led (or a failed write) is
//! repaired. The decisions are `concord_core::reconcile`'s; this file only reads, writes and waits.

use crate::driver::DriverHandle;
use crate::gossip::PoolHandle;
use concord_core::api::{CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::gossip::Member;
use concord_core::reconcile::{CatalogRows, Reconciler};
use concord_core::state::{CatalogNode, Command, CommandResult, HealthCheck};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Consul's `ReconcileInterval`.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed read or write, try again this soon.
const RETRY: Duration = Duration::from_secs(1);

/// Run until the pool closes. Only acts while `handle`'s node is the Raft leader.
pub async fn run(handle: DriverHandle, lan: PoolHandle, reconciler: Reconciler) {
    let mut leader = handle.subscribe_leader();
    loop {
        let leading = *leader.borrow_and_update() == Some(handle.id());
        if leading {
            tracing::info!(target: "agent.leader", "reconciling gossip members into the catalog");
            lead(&handle, &lan, &reconciler, &mut leader).await;
            continue;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            _ = lan.closed() => return,
        }
    }
}

/// One term of leadership: full pass, then member changes as they come, until leadership moves.
async fn lead(
    handle: &DriverHandle,
    lan: &PoolHandle,
    reconciler: &Reconciler,
    leader: &mut tokio::sync::watch::Receiver<Option<concord_core::NodeId>>,
) {
    let mut members = lan.subscribe_members();
    // What the catalog was last made to reflect, by member name; `None` forces a full pass.
    let mut done: Option<BTreeMap<String, Member>> = None;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let current: Arc<Vec<Member>> = members.borrow_and_update().clone();
        let now = tokio::time::Instant::now();
        let result = match done.as_mut() {
            Some(seen) if now < next_full => incremental(handle, reconciler, &current, seen).await,
            _ => match full(handle, reconciler, &current).await {
                Ok(()) => {
                    done = Some(current.iter().map(|m| (m.name.clone(), m.clone())).collect());
                    next_full = now + RECONCILE_INTERVAL;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        // After a failure, wait out RETRY even if members keep changing (they are all read again then):
        // otherwise a burst of member updates while the driver refuses work (e.g. shutting down) would
        // retry once per update with no pause.
        let (wait, failed) = match result {
            Ok(()) => (next_full.saturating_duration_since(tokio::time::Instant::now()), false),
            Err(e) => {
                tracing::warn!(target: "agent.leader", "failed to reconcile gossip members: {e}; retrying");
                (RETRY, true)
            }
        };
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() || *leader.borrow() != Some(handle.id()) {
                    return;
                }
                // Re-elected in a new term: start over with a full pass.
                done = None;
            }
            changed = members.changed(), if !failed => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The members whose status or address changed since `seen`, and those that disappeared (reaped).
async fn incremental(
    handle: &DriverHandle,
    reconciler: &Reconciler,
    current: &[Member],
    seen: &mut BTreeMap<String, Member>,
) -> Result<(), String> {
    for m in current {
        let unchanged = seen
            .get(&m.name)
            .is_some_and(|s| s.status == m.status && s.addr == m.addr && s.tags.get("id") == m.tags.get("id"));
        if unchanged {
            continue;
        }
        let (node, checks) = node_rows(handle, &m.name).await?;
        let rows = rows_of(node.as_ref(), &checks);
        if let Some(cmd) = reconciler.reconcile_member(m, rows) {
            log_write(&cmd, m);
            write(handle, cmd).await?;
        }
        seen.insert(m.name.clone(), m.clone());
    }
    let gone: Vec<String> = seen
        .keys()
        .filter(|n| !current.iter().any(|m| &m.name == *n))
        .cloned()
        .collect();
    for name in gone {
        let (node, checks) = node_rows(handle, &name).await?;
        if let Some(cmd) = reconciler.reconcile_reaped(&name, rows_of(node.as_ref(), &checks)) {
            tracing::info!(target: "agent.leader", "deregistering member: member={name} reason=reaped");
            write(handle, cmd).await?;
        }
        seen.remove(&name);
    }
    Ok(())
}

async fn full(handle: &DriverHandle, reconciler: &Reconciler, current: &[Member]) -> Result<(), String> {
    // Consistent: a new leader first commits an entry of its term, so it reads everything committed before.
    let CatalogResult::Nodes(nodes) = read(handle, CatalogQuery::Nodes, ReadMode::Consistent).await? else {
        return Err("unexpected catalog answer".into());
    };
    let CatalogResult::Checks(checks) =
        read(handle, CatalogQuery::HealthState { status: None }, ReadMode::Default).await?
    else {
        return Err("unexpected catalog answer".into());
    };
    for cmd in reconciler.reconcile_all(current, &nodes, &checks) {
        match &cmd {
            Command::CatalogDeregister { node, .. } if !current.iter().any(|m| &m.name == node) => {
                tracing::info!(target: "agent.leader", "deregistering member: member={node} reason=reaped");
            }
            _ => {
                if let Some(m) = current.iter().find(|m| Some(m.name.as_str()) == command_node(&cmd)) {
                    log_write(&cmd, m);
                }
            }
        }
        write(handle, cmd).await?;
    }
    Ok(())
}

fn command_node(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::CatalogRegister(reg) => Some(&reg.node),
        Command::CatalogDeregister { node, .. } => Some(node),
        _ => None,
    }
}

/// Consul's log lines for each kind of write.
fn log_write(cmd: &Command, m: &Member) {
    let what = match (cmd, m.status) {
        (Command::CatalogDeregister { .. }, _) => "deregistering member",
        (_, concord_core::gossip::MemberStatus::Failed) => "member failed, marking health critical",
        _ => "member joined, marking health alive",
    };
    tracing::info!(target: "agent.leader", "{what}: member={}", m.name);
}

fn rows_of<'a>(node: Option<&'a CatalogNode>, checks: &'a [HealthCheck]) -> CatalogRows<'a> {
    CatalogRows {
        node,
        serf_health: checks
            .iter()
            .find(|c| c.check_id == concord_core::agent::SERF_HEALTH && c.service_id.is_empty()),
    }
}

async fn node_rows(handle: &DriverHandle, name: &str) -> Result<(Option<CatalogNode>, Vec<HealthCheck>), String> {
    let node = match read(handle, CatalogQuery::Node { node: name.into() }, ReadMode::Default).await? {
        CatalogResult::Node(found) => found.map(|b| b.0),
        _ => return Err("unexpected catalog answer".into()),
    };
    let checks = match read(
        handle,
        CatalogQuery::HealthNode { node: name.into() },
        ReadMode::Default,
    )
    .await?
    {
        CatalogResult::Checks(c) => c,
        _ => return Err("unexpected catalog answer".into()),
    };
    Ok((node, checks))
}

async fn read(handle: &DriverHandle, query: CatalogQuery, mode: ReadMode) -> Result<CatalogResult, String> {
    let req = Request::Read {
        query: Query::Catalog(query),
        mode,
        block: None,
    };
    match handle.call(req).await {
        Response::Catalog { result, .. } => Ok(std::sync::Arc::unwrap_or_clone(result)),
        Response::Error(e) => Err(e.to_string()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

async fn write(handle: &DriverHandle, cmd: Command) -> Result<(), String> {
    match handle.call(Request::Write(cmd)).await {
        Response::Written {
            result: CommandResult::Bool(_),
            ..
        } => Ok(()),
        // One member the catalog refuses (e.g. its node ID belongs to another node) must not hold up the
        // others: Consul logs it and moves on; the next full pass tries again.
        Response::Written {
            result: CommandResult::Refused(e),
            ..
        } => {
            tracing::warn!(target: "agent.leader", "failed to reconcile member: {e}");
            Ok(())
        }
        Response::Error(e) => Err(e.to_string()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
