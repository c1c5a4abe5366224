//! Node identity. A node ID is Consul's 36-character node UUID; inside the core it is a `u128` so it is
//! `Copy` and cheap to compare. It is chosen once (persisted in the data dir) and never reused.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u128);

impl fmt::Display for NodeId {
    /// `8-4-4-4-12` lowercase hex, as `hashicorp/go-uuid` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form keeps traces readable; the low bits are what tests and the simulator vary.
        write!(f, "n{:x}", self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node ID {0:?}: want 36 hex characters in the form 8-4-4-4-12")]
pub struct BadNodeId(pub String);

impl FromStr for NodeId {
    type Err = BadNodeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadNodeId(s.to_string());
        let parts: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, l)| p.len() != l) {
            return Err(bad());
        }
        let hex: String = parts.concat();
        u128::from_str_radix(&hex, 16).map(NodeId).map_err(|_| bad())
    }
}
