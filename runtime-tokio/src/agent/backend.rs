//! The HTTP front end's view of the agent: requests go to the driver, `/v1/agent/self` is assembled from
//! the configuration and Raft status, and `/v1/agent/leave` removes this server, then stops the agent.

use super::DriverExitWatch;
use crate::driver::{DriverExit, DriverHandle};
use crate::http::{AgentSelf, Backend};
use concord_core::api::{Request, Response};
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
    pub(super) local: crate::local::LocalAgentHandle,
}

impl Backend for AgentBackend {
    fn call(&self, req: Request) -> impl std::future::Future<Output = Response> + Send {
        self.handle.call(req)
    }

    fn local(&self) -> &crate::local::LocalAgentHandle {
        &self.local
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
            self.stop.send_replace(true);
            return Ok(());
        }
        let me = self.handle.id();
        if self.handle.membership().voters().all(|id| id == me) {
            // The last server has no quorum to shrink (Consul skips the removal here too).
            tracing::info!(target: "agent", "Graceful leave: this is the only server; shutting down");
            self.stop.send_replace(true);
            return Ok(());
        }
        tracing::info!(target: "agent", "Graceful leave: removing this server from the Raft configuration");
        let resp = self
            .handle
            .call(Request::RemovePeer {
                id: Some(self.handle.id()),
                address: None,
            })
            .await;
        let removed = matches!(resp, Response::Done) || self.wait_removed().await;
        if !removed {
            let why = match resp {
                Response::Error(e) => e.to_string(),
                other => format!("unexpected answer {other:?}"),
            };
            tracing::error!(target: "agent", "Graceful leave failed: {why}");
            return Err(why);
        }
        tracing::info!(target: "agent", "Graceful leave complete; shutting down");
        self.stop.send_replace(true);
        Ok(())
    }
}

impl AgentBackend {
    /// A follower may learn of its own removal (and its driver stop) before the leader's answer comes
    /// back; that is a completed leave too.
    async fn wait_removed(&self) -> bool {
        let mut exit = self.exit.clone();
        let done = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
        matches!(done, Ok(Ok(e)) if *e == Some(DriverExit::Removed))
    }
}
