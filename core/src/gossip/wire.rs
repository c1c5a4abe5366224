//! The gossip wire format. A UDP packet is `[u8 version][u16 BE length][postcard Message]…`: several
//! messages (a probe plus piggybacked broadcasts) in one datagram of at most `max_packet` bytes. A push-pull
//! exchange over TCP is one frame `[u32 BE length][u8 version][postcard PushPull]`.
//!
//! Decoding untrusted bytes never panics and is bounded: packets and frames over their limits, unknown
//! versions, oversized names or tags and trailing bytes are rejected as a whole.

use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GOSSIP_VERSION: u8 = 1;
/// Largest datagram accepted (a peer may use a larger `max_packet` than ours, never above UDP's limit).
pub const MAX_PACKET_BYTES: usize = 65_507;
/// Most messages in one packet.
pub const MAX_MESSAGES_PER_PACKET: usize = 512;
/// Largest push-pull frame (about 40,000 members with full tags).
pub const MAX_PUSH_PULL_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_NAME_BYTES: usize = 256;
/// memberlist's `MetaMaxSize`: all tags of a member, encoded.
pub const MAX_TAGS_BYTES: usize = 512;
pub const MAX_EVENT_PAYLOAD: usize = 512;
/// Largest ack payload (a coordinate of 8 dimensions takes about 100 bytes).
pub const MAX_ACK_PAYLOAD: usize = 512;

pub type Tags = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A direct probe of `target` (by name, so a reused address cannot answer for someone else).
    Ping {
        seq: u32,
        target: String,
    },
    /// Please probe `target` for me; `nack`: tell me if you could not reach it either.
    IndirectPing {
        seq: u32,
        target: String,
        target_addr: SocketAddr,
        nack: bool,
    },
    Ack {
        seq: u32,
    },
    /// The relay of an indirect probe got no ack (proof the requester's own network works).
    Nack {
        seq: u32,
    },
    Alive {
        incarnation: u32,
        name: String,
        addr: SocketAddr,
        tags: Tags,
    },
    Suspect {
        incarnation: u32,
        name: String,
        from: String,
    },
    Dead {
        incarnation: u32,
        name: String,
        from: String,
    },
    /// A leave intent (graceful, or forced by `force-leave`; `prune` removes the member outright).
    Leave {
        incarnation: u32,
        name: String,
        prune: bool,
    },
    UserEvent {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
    /// An ack with the acker's payload (its network coordinate), memberlist's `ackResp.Payload`. Sent only
    /// to members that advertise [`super::ACK_PAYLOAD_TAG`]: older members, which do not know this variant,
    /// get a plain `Ack`.
    AckPayload {
        seq: u32,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    Suspect,
    /// Failed: stopped answering probes.
    Dead,
    /// Left gracefully (or was forced out).
    Left,
}

/// One member as sent in a full-state sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub addr: SocketAddr,
    pub tags: Tags,
    pub incarnation: u32,
    pub state: MemberState,
}

/// A full-state sync, sent both ways over TCP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPull {
    /// Sent by a joining member (the receiver learns the joiner even if it was never gossiped).
    pub join: bool,
    pub members: Vec<MemberRecord>,
    /// The sender's user-event Lamport clock.
    pub event_ltime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipWireError {
    #[error("{0} bytes exceed the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("unsupported gossip version {0}")]
    Version(u8),
    #[error("truncated input")]
    Truncated,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("more than {MAX_MESSAGES_PER_PACKET} messages in a packet")]
    TooManyMessages,
    #[error("a field exceeds its size limit")]
    FieldTooLarge,
}

/// One message, encoded with its length prefix, ready to be appended to a packet.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let out = postcard::to_extend(msg, vec![0u8; 2]).expect("messages always encode");
    let len = (out.len() - 2).min(u16::MAX as usize) as u16;
    let mut out = out;
    out[..2].copy_from_slice(&len.to_be_bytes());
    out
}

/// Assemble a packet from already encoded messages (see [`encode_message`]).
pub fn assemble_packet<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![GOSSIP_VERSION];
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Decode a UDP packet. This is the entry point for fuzzing.
pub fn decode_packet(bytes: &[u8]) -> Result<Vec<Message>, GossipWireError> {
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(GossipWireError::TooLarge(bytes.len(), MAX_PACKET_BYTES));
    }
    let (&version, mut rest) = bytes.split_first().ok_or(GossipWireError::Truncated)?;
    if version != GOSSIP_VERSION {
        return Err(GossipWireError::Version(version));
    }
    let mut msgs = Vec::new();
    while !rest.is_empty() {
        if msgs.len() == MAX_MESSAGES_PER_PACKET {
            return Err(GossipWireError::TooManyMessages);
        }
        if rest.len() < 2 {
            return Err(GossipWireError::Truncated);
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let body = rest.get(2..2 + len).ok_or(GossipWireError::Truncated)?;
        let msg: Message = decode_exact(body)?;
        check_message(&msg)?;
        msgs.push(msg);
        rest = &rest[2 + len..];
    }
    Ok(msgs)
}

/// Encode a push-pull frame with its length prefix.
pub fn encode_push_pull(pp: &PushPull) -> Vec<u8> {
    let mut out = postcard::to_extend(pp, vec![0u8, 0, 0, 0, GOSSIP_VERSION]).expect("push-pull always encodes");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// A TCP connection to the gossip port carries either a push-pull frame or, for memberlist's TCP fallback
/// ping and its answer, one packet (the UDP format) as `[u32 BE length | STREAM_PACKET_FLAG][packet]`:
/// the flag is a bit no push-pull length can have, so the first four bytes tell the two apart (and a
/// reader that knows only push-pulls rejects a flagged frame as too large).
pub const STREAM_PACKET_FLAG: u32 = 0x8000_0000;

/// What a TCP frame's 4-byte prefix announces, and how many bytes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    PushPull(usize),
    Packet(usize),
}

/// Read a TCP frame's prefix (see [`STREAM_PACKET_FLAG`]); `slack` is what sealing adds to a body.
pub fn stream_frame_len(prefix: [u8; 4], slack: usize) -> Result<StreamFrame, GossipWireError> {
    let raw = u32::from_be_bytes(prefix);
    if raw & STREAM_PACKET_FLAG == 0 {
        return push_pull_frame_len(prefix).map(StreamFrame::PushPull);
    }
    let len = (raw & !STREAM_PACKET_FLAG) as usize;
    if len > MAX_PACKET_BYTES + slack {
        return Err(GossipWireError::TooLarge(len, MAX_PACKET_BYTES + slack));
    }
    Ok(StreamFrame::Packet(len))
}

/// The prefix of a stream-packet frame whose body is `len` bytes.
pub fn stream_packet_prefix(len: usize) -> [u8; 4] {
    ((len.min(MAX_PACKET_BYTES * 2) as u32) | STREAM_PACKET_FLAG).to_be_bytes()
}

/// The length a push-pull frame announces in its 4-byte prefix, checked against the limit, so a reader
/// knows how many bytes to read next.
pub fn push_pull_frame_len(prefix: [u8; 4]) -> Result<usize, GossipWireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_PUSH_PULL_BYTES {
        return Err(GossipWireError::TooLarge(len, MAX_PUSH_PULL_BYTES));
    }
    Ok(len)
}

/// Decode the body of a push-pull frame (after the length prefix). Also a fuzzing entry point.
pub fn decode_push_pull(body: &[u8]) -> Result<PushPull, GossipWireError> {
    if body.len() > MAX_PUSH_PULL_BYTES {
        return Err(GossipWireError::TooLarge(body.len(), MAX_PUSH_PULL_BYTES));
    }
    let (&version, rest) = body.split_first().ok_or(GossipWireError::Truncated)?;
    if version != GOSSIP_VERSION {
        return Err(GossipWireError::Version(version));
    }
    let pp: PushPull = decode_exact(rest)?;
    for m in &pp.members {
        check_name(&m.name)?;
        check_tags(&m.tags)?;
    }
    Ok(pp)
}

fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, GossipWireError> {
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| GossipWireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(GossipWireError::Malformed("trailing bytes".into()));
    }
    Ok(v)
}

fn check_message(msg: &Message) -> Result<(), GossipWireError> {
    match msg {
        Message::Ping { target, .. } | Message::IndirectPing { target, .. } => check_name(target),
        Message::Ack { .. } | Message::Nack { .. } => Ok(()),
        Message::Alive { name, tags, .. } => {
            check_name(name)?;
            check_tags(tags)
        }
        Message::Suspect { name, from, .. } | Message::Dead { name, from, .. } => {
            check_name(name)?;
            check_name(from)
        }
        Message::Leave { name, .. } => check_name(name),
        Message::UserEvent { name, payload, .. } => {
            check_name(name)?;
            if payload.len() > MAX_EVENT_PAYLOAD {
                return Err(GossipWireError::FieldTooLarge);
            }
            Ok(())
        }
        Message::AckPayload { payload, .. } => {
            if payload.len() > MAX_ACK_PAYLOAD {
                return Err(GossipWireError::FieldTooLarge);
            }
            Ok(())
        }
    }
}

fn check_name(name: &str) -> Result<(), GossipWireError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(GossipWireError::FieldTooLarge);
    }
    Ok(())
}

/// The encoded size of a member's tags, as limited by `MAX_TAGS_BYTES`.
pub fn tags_size(tags: &Tags) -> usize {
    tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}

fn check_tags(tags: &Tags) -> Result<(), GossipWireError> {
    if tags_size(tags) > MAX_TAGS_BYTES {
        return Err(GossipWireError::FieldTooLarge);
    }
    Ok(())
}
