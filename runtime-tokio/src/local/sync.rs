//! Anti-entropy: make the catalog's rows for this node match the local state, on every local change and
//! every `interval` (plus a random stagger), best effort: a failed round is logged and retried.

use super::LocalAgentHandle;
use crate::driver::DriverHandle;
use concord_core::api::{CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::state::{CommandResult, HealthCheck, ServiceInstance};
use rand::Rng;
use std::time::Duration;

/// Where anti-entropy sends its catalog reads and writes: the server's own driver, or (on a client agent)
/// a server reached over RPC.
pub trait CatalogCaller: Send + Sync + 'static {
    fn call_catalog(&self, req: Request) -> impl std::future::Future<Output = Response> + Send;
}

impl CatalogCaller for DriverHandle {
    fn call_catalog(&self, req: Request) -> impl std::future::Future<Output = Response> + Send {
        self.call(req)
    }
}

pub struct AntiEntropy<H: CatalogCaller> {
    pub handle: H,
    pub local: LocalAgentHandle,
    /// The periodic full sync (Consul: 1 min for clusters up to 128 nodes).
    pub interval: Duration,
}

/// How long to wait before retrying a failed round.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run_anti_entropy<H: CatalogCaller>(ae: AntiEntropy<H>) {
    let mut changes = ae.local.subscribe();
    loop {
        changes.borrow_and_update();
        let wait = match sync_once(&ae).await {
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

async fn read<H: CatalogCaller>(handle: &H, query: CatalogQuery) -> Result<CatalogResult, String> {
    let req = Request::Read {
        query: Query::Catalog(query),
        mode: ReadMode::Default,
        block: None,
    };
    match handle.call_catalog(req).await {
        Response::Catalog { result, .. } => Ok(result),
        Response::Error(e) => Err(e.to_string()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// One round; returns the number of writes it made.
pub(crate) async fn sync_once<H: CatalogCaller>(ae: &AntiEntropy<H>) -> Result<usize, String> {
    let name = ae.local.node().name;
    let CatalogResult::Node(found) = read(&ae.handle, CatalogQuery::Node { node: name.clone() }).await? else {
        return Err("unexpected catalog answer".into());
    };
    let CatalogResult::Checks(checks) = read(&ae.handle, CatalogQuery::HealthNode { node: name }).await? else {
        return Err("unexpected catalog answer".into());
    };
    let (node, services): (_, Vec<ServiceInstance>) = match found {
        Some(b) => (Some(b.0), b.1),
        None => (None, Vec::new()),
    };
    let checks: Vec<HealthCheck> = checks;
    let now = ae.local.now();
    let plan = ae
        .local
        .with_state(|s| s.sync_plan(now, node.as_ref(), &services, &checks));
    let writes = plan.len();
    for cmd in plan {
        match ae.handle.call_catalog(Request::Write(cmd)).await {
            Response::Written {
                result: CommandResult::Bool(_),
                ..
            } => {}
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
