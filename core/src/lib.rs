//! concord-core: every deterministic state machine of a concord server, with no I/O, no clock, no threads
//! and no ambient randomness. A runtime drives [`Node`] (see its docs for the contract); runtime-tokio does
//! it with real sockets and disks, runtime-sim under madsim with simulated ones.
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod agent;
pub mod api;
pub mod coordinate;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod gossip;
pub mod id;
pub mod node;
pub mod raft;
pub mod reconcile;
pub mod state;
pub mod template;
pub mod time;
pub mod wire;

pub use id::NodeId;
pub use node::{Effect, Event, Input, Limits, Mutation, Node, NodeConfig, PeerMessage, RaftConfig, ReqId};
pub use time::Instant;
