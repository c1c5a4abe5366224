//! The HTTP front end's view of the agent: requests go to the driver, `/v1/agent/self` is assembled from
//! the configuration and Raft status, and `/v1/agent/leave` removes this server, then stops the agent.

use super::DriverExitWatch;
use crate::driver::{DriverExit, DriverHandle};
use crate::gossip::PoolHandle;
use crate::http::{AgentSelf, Backend, KeyringOp, KeyringPool};
use concord_core::api::{Request, Response};
use concord_core::gossip::Member;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct AgentBackend {
    pub(super) handle: DriverHandle,
    /// Everything static in `/v1/agent/self`; `raft` and `leader_addr` are filled per request.
    pub(super) info: Arc<AgentSelf>,
    /// Set to true to stop the agent (after a leave).
    pub(super) stop: Arc<watch::Sender<bool>>,
    pub(super) exit: DriverExitWatch,
    pub(super) lan: PoolHandle,
    pub(super) wan: Option<PoolHandle>,
    pub(super) local: crate::local::LocalAgentHandle,
    pub(super) events: super::events::UserEvents,
}

impl Backend for AgentBackend {
    fn call(&self, req: Request) -> impl std::future::Future<Output = Response> + Send {
        self.handle.call(req)
    }

    fn local(&self) -> &crate::local::LocalAgentHandle {
        &self.local
    }

    fn user_events(&self) -> Option<&super::events::UserEvents> {
        Some(&self.events)
    }

    async fn agent_self(&self) -> AgentSelf {
        let mut me = (*self.info).clone();
        me.services = self.local.services().len();
        me.checks = self.local.checks().len();
        me.raft = self.handle.status().await;
        me.leader_addr = self
            .handle
            .leader()
            .and_then(|leader| self.handle.membership().servers.get(&leader).map(|s| s.address.clone()));
        me
    }

    async fn leave(&self) -> Result<(), String> {
        if !self.info.server {
            self.leave_gossip().await;
            self.stop.send_replace(true);
            return Ok(());
        }
        let me = self.handle.id();
        if self.handle.membership().voters().all(|id| id == me) {
            // The last server has no quorum to shrink (Consul skips the removal here too).
            tracing::info!(target: "agent", "Graceful leave: this is the only server; shutting down");
            self.leave_gossip().await;
            self.stop.send_replace(true);
            return Ok(());
        }
        tracing::info!(target: "agent", "Graceful leave: removing this server from the Raft configuration");
        // A configuration change still settling (a new server's promotion) or an election in progress
        // refuses the removal for a moment: retry for a few seconds.
        let retry_until = tokio::time::Instant::now() + Duration::from_secs(5);
        let resp = loop {
            let req = Request::RemovePeer {
                id: Some(self.handle.id()),
                address: None,
            };
            match self.handle.call(req).await {
                Response::Error(_) if tokio::time::Instant::now() < retry_until && !self.handle.is_stopped() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                resp => break resp,
            }
        };
        let removed = matches!(resp, Response::Done) || self.wait_removed().await;
        if !removed {
            let why = match resp {
                Response::Error(e) => e.to_string(),
                other => format!("unexpected answer {other:?}"),
            };
            tracing::error!(target: "agent", "Graceful leave failed: {why}");
            return Err(why);
        }
        self.leave_gossip().await;
        tracing::info!(target: "agent", "Graceful leave complete; shutting down");
        self.stop.send_replace(true);
        Ok(())
    }

    async fn members(&self, wan: bool) -> Result<Vec<Member>, String> {
        Ok(self.pool(wan)?.members().as_ref().clone())
    }

    async fn wan_coordinates(&self) -> Vec<(String, String, concord_core::coordinate::Coordinate)> {
        let Some(wan) = &self.wan else { return Vec::new() };
        wan.coordinates()
            .into_iter()
            .filter(|(m, _)| m.tags.get("role").map(String::as_str) == Some("consul"))
            .map(|(m, c)| (m.tags.get("dc").cloned().unwrap_or_default(), m.name, c))
            .collect()
    }

    async fn join(&self, addr: String, wan: bool) -> Result<(), String> {
        let pool = self.pool(wan)?;
        let port = if wan {
            self.info.ports.serf_wan
        } else {
            self.info.ports.serf_lan
        };
        pool.join(&[addr], port).await.map(|_| ())
    }

    async fn force_leave(&self, node: String, prune: bool, wan: bool) -> Result<(), String> {
        self.pool(wan)?.force_leave(&node, prune).await
    }

    async fn keyring(&self, op: KeyringOp) -> Result<Vec<KeyringPool>, String> {
        let mut pools = vec![(false, &self.lan)];
        if let Some(wan) = &self.wan {
            pools.push((true, wan));
        }
        super::serf::keyring_op(&pools, &self.info.datacenter, op).await
    }
}

impl AgentBackend {
    fn pool(&self, wan: bool) -> Result<&PoolHandle, String> {
        match (wan, &self.wan) {
            (false, _) => Ok(&self.lan),
            (true, Some(pool)) => Ok(pool),
            (true, None) => Err("WAN gossip runs on servers only".into()),
        }
    }

    /// Leave the gossip pools (WAN first, as Consul does), waiting for the intents to spread.
    async fn leave_gossip(&self) {
        if let Some(wan) = &self.wan {
            wan.leave().await;
        }
        self.lan.leave().await;
    }

    /// A follower may learn of its own removal (and its driver stop) before the leader's answer comes
    /// back; that is a completed leave too.
    async fn wait_removed(&self) -> bool {
        let mut exit = self.exit.clone();
        let done = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
        matches!(done, Ok(Ok(e)) if *e == Some(DriverExit::Removed))
    }
}
