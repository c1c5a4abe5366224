//! Round-trip times from probes, for network coordinates (serf's ping delegate on memberlist): a direct
//! probe's ack reports the time since the ping as [`GossipEvent::PingRtt`], with the acker's payload (its
//! coordinate) when the ack carried one. Kept apart from the probe logic: it only observes pings and acks.
//!
//! Compatibility: a member advertises that it reads [`Message::AckPayload`] with the tag
//! [`ACK_PAYLOAD_TAG`]; every other member (an older build rejects the unknown variant, and with it the whole
//! packet) gets a plain `Ack`. Only an ack from the probed address counts: one relayed by an indirect
//! prober measures another path.

use super::{Effect, Gossip, GossipEvent, Message};
use crate::time::Instant;
use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::time::Duration;

/// The tag by which a member says it reads acks with a payload (`Message::AckPayload`).
pub const ACK_PAYLOAD_TAG: &str = "ack_payload";

/// Probes older than this are forgotten (an ack after it is no RTT sample serf would take either).
const MAX_PROBE_AGE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct RttProbes {
    /// Direct probe seq → (sent at, target, its address).
    sent: BTreeMap<u32, (Instant, String, SocketAddr)>,
    /// What our acks carry to members that read it.
    payload: Option<Vec<u8>>,
}

impl Gossip {
    /// Set what our acks carry (our encoded coordinate) to members advertising [`ACK_PAYLOAD_TAG`]; `None`
    /// sends plain acks. At most `wire::MAX_ACK_PAYLOAD` bytes (longer payloads are not sent).
    pub fn set_ack_payload(&mut self, payload: Option<Vec<u8>>) {
        self.rtt.payload = payload.filter(|p| p.len() <= super::wire::MAX_ACK_PAYLOAD);
    }

    pub(super) fn rtt_probe_sent(&mut self, now: Instant, seq: u32, target: &str, addr: SocketAddr) {
        self.rtt
            .sent
            .retain(|_, (at, _, _)| now.saturating_since(*at) <= MAX_PROBE_AGE);
        self.rtt.sent.insert(seq, (now, target.to_owned(), addr));
    }

    /// The ack for a ping from `from`: with our payload if the member at that address reads it.
    pub(super) fn ack_for(&self, from: SocketAddr, seq: u32) -> Message {
        match &self.rtt.payload {
            Some(payload)
                if self
                    .members
                    .values()
                    .any(|e| e.addr == from && e.tags.contains_key(ACK_PAYLOAD_TAG)) =>
            {
                Message::AckPayload {
                    seq,
                    payload: payload.clone(),
                }
            }
            _ => Message::Ack { seq },
        }
    }

    /// Observe an ack (reporting the RTT of a direct probe) and hand on the message, an `AckPayload` as the
    /// plain `Ack` the probe logic knows.
    pub(super) fn rtt_on_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: Message,
        out: &mut Vec<Effect>,
    ) -> Message {
        let (seq, payload) = match msg {
            Message::Ack { seq } => (seq, None),
            Message::AckPayload { seq, payload } => (seq, Some(payload)),
            other => return other,
        };
        if self.rtt.sent.get(&seq).is_some_and(|(_, _, addr)| *addr == from) {
            if let Some((at, member, _)) = self.rtt.sent.remove(&seq) {
                out.push(Effect::Event(GossipEvent::PingRtt {
                    member,
                    rtt: now.saturating_since(at),
                    payload,
                }));
            }
        }
        Message::Ack { seq }
    }
}
