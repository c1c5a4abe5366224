//! Forming or joining the cluster at start.
//!
//! - `-bootstrap` / `-dev`: bootstrap a one-server cluster at once.
//! - `-bootstrap-expect N`: exchange hellos each second with every server the LAN gossip pool shows (they
//!   advertise their RPC port in their tags); once N servers are known and every peer heard from reports
//!   the same N (the lowest IDs), bootstrap with exactly those. All of them compute the same set, so they
//!   all bootstrap the same configuration.
//! - `-retry-join` alone: once gossip shows servers, ask them to add this server (`AddServer`; a follower
//!   forwards to the leader) until one answers `Done`.
//!
//! A server that already holds a configuration (a restart) does none of this.

use crate::driver::DriverHandle;
use crate::rpc::{self, AddressBook, ServerEntry};
use concord_core::api::{Request, Response};
use std::sync::Arc;
use std::time::Duration;

pub struct Plan {
    pub bootstrap: bool,
    pub bootstrap_expect: Option<usize>,
    /// `-retry-join` was given (the gossip join itself runs elsewhere).
    pub has_join: bool,
    /// RPC addresses (`ip:port`) of the other servers gossip currently shows alive.
    pub discovered: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    pub retry_interval: Duration,
    pub max_frame: usize,
}

/// Run the plan until the server is part of a cluster (or has nothing to do).
pub async fn form(plan: Plan, book: Arc<AddressBook>, handle: DriverHandle) {
    let me = book.me().clone();
    let myself: ServerEntry = (me.id, me.name.clone(), me.address.clone());
    if !handle.membership().servers.is_empty() {
        tracing::debug!(target: "agent", "cluster configuration recovered from disk; not bootstrapping or joining");
        return;
    }
    match plan.bootstrap_expect {
        _ if plan.bootstrap => bootstrap(&handle, vec![myself]).await,
        Some(expect) if expect <= 1 => bootstrap(&handle, vec![myself]).await,
        Some(expect) => {
            if !plan.has_join {
                tracing::warn!(target: "agent",
                    "-bootstrap-expect {expect} without -retry-join: waiting for the other servers to contact this one");
            }
            if expect_servers(&plan, expect, &book, &handle).await {
                return;
            }
            // This server is not among the first `expect`: the cluster formed without it, so join it.
            join(&plan, &book, &handle, myself).await;
        }
        None if plan.has_join => join(&plan, &book, &handle, myself).await,
        None => {
            tracing::info!(target: "agent",
                "no -bootstrap, -bootstrap-expect or -retry-join: waiting to be added to a cluster")
        }
    }
}

async fn bootstrap(handle: &DriverHandle, servers: Vec<ServerEntry>) {
    let names: Vec<String> = servers
        .iter()
        .map(|(_, name, addr)| format!("{name} ({addr})"))
        .collect();
    match handle.call(Request::Bootstrap { servers }).await {
        Response::Done => {
            tracing::info!(target: "agent.server", "bootstrapping the cluster with: {}", names.join(", "))
        }
        other => tracing::error!(target: "agent.server", "bootstrap failed: {other:?}"),
    }
}

/// Wait for `expect` servers; true once bootstrapped (or configured by a peer), false if this server
/// turned out not to be one of the founders.
async fn expect_servers(plan: &Plan, expect: usize, book: &AddressBook, handle: &DriverHandle) -> bool {
    let me = book.me().id;
    loop {
        for address in &(plan.discovered)() {
            if let Err(e) = rpc::exchange_hello(address, book, plan.max_frame).await {
                tracing::debug!(target: "agent", "hello to {address} failed: {e}");
            }
        }
        if !handle.membership().servers.is_empty() {
            tracing::info!(target: "agent.server", "the cluster was bootstrapped by another server");
            return true;
        }
        let known = book.known().len();
        if known >= expect {
            // Enough servers for a cluster: one may already exist (this server started late).
            if let Some(peers) = existing_cluster(plan, book).await {
                if peers.contains(&book.me().address) {
                    return true; // Another founder bootstrapped first; its leader will reach us.
                }
                tracing::info!(target: "agent", "a cluster of {} servers already exists; joining it", peers.len());
                return false;
            }
            if let Some(set) = book.bootstrap_set(expect) {
                if !set.iter().any(|(id, ..)| *id == me) {
                    tracing::info!(target: "agent", "{expect} servers are known without this one; joining instead");
                    return false;
                }
                bootstrap(handle, set).await;
                return true;
            }
        }
        tracing::info!(target: "agent.server", "waiting for {expect} servers to bootstrap ({known} known)");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The voters of a cluster one of the join addresses already belongs to, if any: a server started with
/// `-bootstrap-expect` after the cluster formed must join it, not found a second one.
async fn existing_cluster(plan: &Plan, book: &AddressBook) -> Option<Vec<String>> {
    for address in &(plan.discovered)() {
        match rpc::call(address, book, Request::Peers, plan.max_frame, Duration::from_secs(2)).await {
            Ok(Response::Peers(peers)) if !peers.is_empty() => return Some(peers),
            _ => {}
        }
    }
    None
}

async fn join(plan: &Plan, book: &AddressBook, handle: &DriverHandle, myself: ServerEntry) {
    let (id, name, address) = myself;
    loop {
        if handle.membership().servers.contains_key(&id) {
            tracing::info!(target: "agent", "Join completed: this server is in the cluster configuration");
            return;
        }
        for target in &(plan.discovered)() {
            let req = Request::AddServer {
                id,
                name: name.clone(),
                address: address.clone(),
            };
            match rpc::call(target, book, req, plan.max_frame, Duration::from_secs(10)).await {
                Ok(Response::Done) => {
                    tracing::info!(target: "agent", "Join completed. Added to the cluster through {target}");
                    return;
                }
                Ok(other) => tracing::warn!(target: "agent", "join through {target} refused: {other:?}"),
                Err(e) => tracing::warn!(target: "agent", "join through {target} failed: {e}"),
            }
        }
        // Until joined, retry every second (or faster if -retry-interval says so).
        let wait = plan.retry_interval.min(Duration::from_secs(1));
        tracing::info!(target: "agent", "Join failed, retrying in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}
