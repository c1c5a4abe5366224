//! concord's production runtime: drives `concord_core::Node` with tokio, fjall, TCP RPC and a
//! Consul-compatible HTTP API, and hosts the CLI.
//!
//! The `driver` module (one task owning the node, written against small device traits) is always built;
//! runtime-sim reuses it under madsim. Everything that touches real I/O sits behind the `server` feature.
#![forbid(unsafe_code)]

pub mod driver;

#[cfg(feature = "server")]
pub mod agent;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod dns;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "server")]
pub mod gossip;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod local;
#[cfg(feature = "server")]
pub mod registrator;
#[cfg(feature = "server")]
pub mod rpc;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod template;
