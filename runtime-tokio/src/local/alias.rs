//! Alias check tasks. An alias of this agent's own node (no `AliasNode`, or this node's name) follows the
//! local state: it is recomputed on every local change. An alias of another node follows the catalog
//! with blocking `/v1/health/node/:node` reads through the agent's RPC path (the driver on a server, the
//! forwarding client on a client agent), so it wakes only when that node's checks change.

use super::{Inner, LocalAgentHandle};
use concord_core::agent::alias_status;
use concord_core::api::{Blocking, CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::state::HealthCheck;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One request to the catalog, answered as the driver answers it.
pub type CatalogCall = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// How long one blocking read waits (Consul's alias uses the default query time).
const BLOCK_WAIT: Duration = Duration::from_secs(300);
/// After a failed read.
const RETRY: Duration = Duration::from_secs(1);

pub(super) async fn run(agent: Weak<Inner>, check_id: String, node: String, service_id: String) {
    let Some(me) = agent.upgrade().map(|inner| LocalAgentHandle { inner }.node().name) else {
        return;
    };
    if node.is_empty() || node == me {
        local(agent, check_id, service_id).await
    } else {
        remote(agent, check_id, node, service_id).await
    }
}

async fn local(agent: Weak<Inner>, check_id: String, service_id: String) {
    let Some(mut changes) = agent.upgrade().map(|inner| inner.changed.subscribe()) else {
        return;
    };
    loop {
        changes.borrow_and_update();
        {
            let Some(inner) = agent.upgrade() else {
                return;
            };
            let handle = LocalAgentHandle { inner };
            let (status, output) = handle.with_state(|s| {
                let checks: Vec<HealthCheck> = s
                    .checks()
                    .values()
                    .filter(|c| c.def.id != check_id)
                    .map(|c| s.health_check(c))
                    .collect();
                let exists = s.services().contains_key(&service_id);
                alias_status(&checks, &s.node().name, &service_id, exists)
            });
            handle.report(&check_id, status, &output);
        }
        // The sender lives in the agent: an error means the agent is gone.
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn remote(agent: Weak<Inner>, check_id: String, node: String, service_id: String) {
    let mut index = 0;
    loop {
        let Some(mut catalog) = agent.upgrade().map(|inner| inner.catalog.subscribe()) else {
            return;
        };
        let call = match catalog.wait_for(Option::is_some).await {
            Ok(call) => call.clone().expect("waited for Some"),
            Err(_) => return,
        };
        let block = (index > 0).then_some(Blocking {
            min_index: index,
            wait: BLOCK_WAIT,
        });
        let answer = call(read(CatalogQuery::HealthNode { node: node.clone() }, block)).await;
        let (meta, checks) = match answer {
            Response::Catalog { meta, result } if matches!(*result, CatalogResult::Checks(_)) => {
                let CatalogResult::Checks(checks) = std::sync::Arc::unwrap_or_clone(result) else {
                    unreachable!("matched above")
                };
                (meta, checks)
            }
            other => {
                tracing::debug!(target: "agent.checks", "alias check {check_id}: reading node {node}: {other:?}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let exists = service_id.is_empty()
            || checks.iter().any(|c| c.service_id == service_id)
            || has_service(&call, &node, &service_id).await;
        let (status, output) = alias_status(&checks, &node, &service_id, exists);
        let Some(inner) = agent.upgrade() else {
            return;
        };
        LocalAgentHandle { inner }.report(&check_id, status, &output);
        // An index that went backwards (a restored snapshot) starts over.
        index = if meta.index < index { 0 } else { meta.index };
    }
}

fn read(query: CatalogQuery, block: Option<Blocking>) -> Request {
    Request::Read {
        query: Query::Catalog(query),
        mode: ReadMode::Default,
        block,
    }
}

/// Whether the catalog lists `service_id` on `node` (a service without checks has no check rows).
async fn has_service(call: &CatalogCall, node: &str, service_id: &str) -> bool {
    match call(read(CatalogQuery::Node { node: node.into() }, None)).await {
        Response::Catalog { result, .. } => match &*result {
            CatalogResult::Node(Some(found)) => found.1.iter().any(|s| s.id == service_id),
            _ => false,
        },
        _ => false,
    }
}
