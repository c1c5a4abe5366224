//! Server RPC framing: `[u32 big-endian length][u8 version][postcard Frame]`, the length counting version
//! and payload. Decoding untrusted bytes never panics, never allocates past `max_frame`, and rejects
//! trailing bytes inside a frame.

use crate::api::{Request, Response};
use crate::id::NodeId;
use crate::node::PeerMessage;
use serde::{Deserialize, Serialize};

pub const WIRE_VERSION: u8 = 1;
/// Default hard cap on one frame: a full Raft batch of maximum-size KV values plus headroom.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame on every connection: who is calling. `servers` carries what the caller knows of other
    /// servers (id, name, address) so `-bootstrap-expect` discovery converges by gossip of hellos.
    Hello {
        id: NodeId,
        name: String,
        address: String,
        datacenter: String,
        servers: Vec<(NodeId, String, String)>,
    },
    /// A one-way peer message (Raft, forwarding).
    Peer(PeerMessage),
    /// A client request from another process (a joining server asking to be added); answered by `Reply`.
    Call {
        id: u64,
        req: Request,
    },
    Reply {
        id: u64,
        resp: Response,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("unsupported wire version {0}")]
    Version(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("empty frame")]
    Empty,
}

/// Encode one frame including its length prefix.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = vec![0u8; 5];
    out[4] = WIRE_VERSION;
    let out = postcard::to_extend(frame, out).expect("frames always encode");
    let len = (out.len() - 4) as u32;
    let mut out = out;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Read the length prefix: how many bytes follow it. Errors if over `max_frame`.
pub fn frame_len(prefix: [u8; 4], max_frame: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge(len, max_frame));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// Decode the body of one frame (the bytes after the length prefix).
pub fn decode_frame(body: &[u8]) -> Result<Frame, FrameError> {
    let (&version, payload) = body.split_first().ok_or(FrameError::Empty)?;
    if version != WIRE_VERSION {
        return Err(FrameError::Version(version));
    }
    match postcard::take_from_bytes::<Frame>(payload) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(FrameError::Malformed(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}
