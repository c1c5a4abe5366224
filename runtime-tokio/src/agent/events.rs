//! Consul's user events (`agent/user_event.go`): `PUT /v1/event/fire/:name` broadcasts an event through
//! the LAN gossip pool; every agent that passes the event's node/service/tag filters keeps it in a ring of
//! the last [`EVENT_BUFFER`] events, which `GET /v1/event/list` reads.
//!
//! Invariants:
//! - An event travels as a gossip user event named `consul:event:<name>` whose payload is the encoded
//!   [`UserEvent`] ([`encode_event`]); name plus encoded payload are at most [`USER_EVENT_SIZE_LIMIT`]
//!   bytes (serf's `UserEventSizeLimit`), checked before anything is sent, with serf's error text.
//! - Bytes from the network are decoded by [`decode_event`] only, which never panics and rejects anything
//!   larger than serf's hard cap; an event that does not decode or whose filters do not compile is dropped.
//! - The ring holds at most [`EVENT_BUFFER`] events, oldest dropped first; every ingest bumps `changed`, so a
//!   blocked `/v1/event/list` wakes.
//! - A filter is a Go RE2 regular expression, matched (unanchored, as `regexp.MatchString`) against the
//!   node name, local service names and their tags; a tag filter needs a service filter.

use crate::gossip::PoolHandle;
use crate::local::LocalAgentHandle;
use concord_core::gossip::{GossipEvent, Input};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// serf's default `UserEventSizeLimit`: name plus encoded payload, in bytes.
pub const USER_EVENT_SIZE_LIMIT: usize = 512;
/// serf's hard cap on a user event (`UserEventSizeLimit` may not be raised above it).
pub const USER_EVENT_HARD_LIMIT: usize = 9 * 1024;
/// Events an agent remembers (`eventBuf` in Consul's agent).
pub const EVENT_BUFFER: usize = 256;
/// Prefix of the gossip event name that carries a Consul user event.
pub const GOSSIP_PREFIX: &str = "consul:event:";
/// The event protocol version this agent writes (`userEventMaxVersion`).
const EVENT_VERSION: u32 = 1;

/// A user event (`agent.UserEvent`). `ltime` is the gossip Lamport time, set on receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    pub id: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub version: u32,
    #[serde(skip)]
    pub ltime: u64,
}

/// The gossip payload of `event`.
pub fn encode_event(event: &UserEvent) -> Vec<u8> {
    postcard::to_allocvec(event).expect("a user event always encodes")
}

/// Decode a gossip payload written by [`encode_event`]; `None` for anything else. Never panics.
pub fn decode_event(bytes: &[u8]) -> Option<UserEvent> {
    if bytes.len() > USER_EVENT_HARD_LIMIT {
        return None;
    }
    match postcard::take_from_bytes::<UserEvent>(bytes) {
        Ok((event, [])) => Some(event),
        _ => None,
    }
}

fn compile(what: &str, filter: &str) -> Result<Option<regex::Regex>, String> {
    if filter.is_empty() {
        return Ok(None);
    }
    regex::RegexBuilder::new(filter)
        .size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| format!("Invalid {what} filter: {}", e.to_string().lines().last().unwrap_or("")))
}

/// Consul's `validateUserEventParams`, with its error texts.
pub fn validate(event: &UserEvent) -> Result<(), String> {
    if event.name.is_empty() {
        return Err("User event missing name".into());
    }
    if !event.tag_filter.is_empty() && event.service_filter.is_empty() {
        return Err("Cannot provide tag filter without service filter".into());
    }
    compile("node", &event.node_filter)?;
    compile("service", &event.service_filter)?;
    compile("tag", &event.tag_filter)?;
    Ok(())
}

/// Whether an agent named `node` running `services` (name, tags) keeps `event` (`shouldProcessUserEvent`).
pub fn passes_filters<'a>(
    event: &UserEvent,
    node: &str,
    services: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> bool {
    let (Ok(node_re), Ok(service_re), Ok(tag_re)) = (
        compile("node", &event.node_filter),
        compile("service", &event.service_filter),
        compile("tag", &event.tag_filter),
    ) else {
        return false;
    };
    if node_re.is_some_and(|re| !re.is_match(node)) {
        return false;
    }
    let Some(service_re) = service_re else { return true };
    services.into_iter().any(|(name, tags)| {
        service_re.is_match(name) && tag_re.as_ref().is_none_or(|re| tags.iter().any(|t| re.is_match(t)))
    })
}

/// Consul's event index: the two 64-bit halves of the event's UUID XORed (`uuidToUint64`); 1 when the
/// list is empty or the ID is not a UUID.
pub fn event_index(events: &[UserEvent]) -> u64 {
    let Some(last) = events.last() else { return 1 };
    let hex: String = last.id.chars().filter(|c| *c != '-').collect();
    match (
        hex.get(..16).map(|h| u64::from_str_radix(h, 16)),
        hex.get(16..).map(|h| u64::from_str_radix(h, 16)),
    ) {
        (Some(Ok(lo)), Some(Ok(hi))) if hex.len() == 32 => (lo ^ hi).max(1),
        _ => 1,
    }
}

fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// This agent's user events: firing through gossip and the ring of received ones.
#[derive(Clone)]
pub struct UserEvents {
    ring: Arc<Mutex<VecDeque<UserEvent>>>,
    changed: Arc<watch::Sender<u64>>,
    /// The LAN pool; `None` delivers fired events straight to this agent (tests, the in-memory backend).
    pool: Option<PoolHandle>,
    node: String,
    local: Option<LocalAgentHandle>,
}

impl UserEvents {
    pub fn new(pool: Option<PoolHandle>, node: String, local: Option<LocalAgentHandle>) -> Self {
        UserEvents {
            ring: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            pool,
            node,
            local,
        }
    }

    /// Validate and broadcast `event` (its `id` and `version` are filled in); answers the event as fired.
    pub async fn fire(&self, mut event: UserEvent) -> Result<UserEvent, String> {
        validate(&event)?;
        event.id = new_uuid();
        event.version = EVENT_VERSION;
        event.ltime = 0;
        let name = format!("{GOSSIP_PREFIX}{}", event.name);
        let payload = encode_event(&event);
        if name.len() + payload.len() > USER_EVENT_SIZE_LIMIT {
            return Err(format!(
                "user event exceeds configured limit of {USER_EVENT_SIZE_LIMIT} bytes before encoding"
            ));
        }
        match &self.pool {
            Some(pool) => pool.input(Input::UserEvent { name, payload }).await?,
            None => self.ingest(event.clone()),
        }
        Ok(event)
    }

    /// Keep `event` if it passes this agent's filters.
    pub fn ingest(&self, event: UserEvent) {
        let services = self.local.as_ref().map(|l| l.services()).unwrap_or_default();
        let named = services.iter().map(|s| (s.service.as_str(), s.tags.as_slice()));
        if !passes_filters(&event, &self.node, named) {
            return;
        }
        tracing::debug!(target: "agent", "new event: {} ({})", event.name, event.id);
        {
            let mut ring = self.ring.lock().expect("event ring lock");
            if ring.len() == EVENT_BUFFER {
                ring.pop_front();
            }
            ring.push_back(event);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The remembered events, oldest first.
    pub fn list(&self) -> Vec<UserEvent> {
        self.ring.lock().expect("event ring lock").iter().cloned().collect()
    }

    /// Bumped on every new event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Ingest user events the pool delivers (our own included). Ends when the pool does.
    pub async fn collect(self) {
        let Some(pool) = self.pool.clone() else { return };
        let mut events = pool.subscribe();
        loop {
            let received = tokio::select! {
                r = events.recv() => r,
                _ = pool.closed() => return,
            };
            let (ltime, name, payload) = match received {
                Ok(GossipEvent::User { ltime, name, payload }) => (ltime, name, payload),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let Some(event_name) = name.strip_prefix(GOSSIP_PREFIX) else {
                continue;
            };
            match decode_event(&payload) {
                Some(mut event) if event.name == event_name => {
                    event.ltime = ltime;
                    self.ingest(event);
                }
                _ => tracing::warn!(target: "agent", "dropped a user event that does not decode ({name})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> UserEvent {
        UserEvent {
            name: name.into(),
            ..UserEvent::default()
        }
    }

    #[tokio::test]
    async fn the_ring_keeps_the_last_256_events_and_wakes_listeners() {
        let events = UserEvents::new(None, "n1".into(), None);
        let mut changed = events.subscribe();
        for i in 0..300 {
            events.fire(event(&format!("e{i}"))).await.unwrap();
        }
        let list = events.list();
        assert_eq!(list.len(), EVENT_BUFFER);
        assert_eq!((list[0].name.as_str(), list[255].name.as_str()), ("e44", "e299"));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        assert_ne!(event_index(&list), 1);
        assert_eq!(event_index(&[]), 1);
    }

    #[tokio::test]
    async fn consuls_validation_and_size_limit() {
        let events = UserEvents::new(None, "n1".into(), None);
        let mut e = event("deploy");
        e.tag_filter = "v1".into();
        assert_eq!(
            events.fire(e).await.unwrap_err(),
            "Cannot provide tag filter without service filter"
        );
        let mut e = event("deploy");
        e.node_filter = "(".into();
        assert!(events.fire(e).await.unwrap_err().starts_with("Invalid node filter: "));
        assert_eq!(events.fire(event("")).await.unwrap_err(), "User event missing name");
        let mut e = event("deploy");
        e.payload = vec![b'x'; 420];
        assert!(
            events.fire(e.clone()).await.is_ok(),
            "fits with its 36-byte ID and the name"
        );
        e.payload = vec![b'x'; 500];
        assert_eq!(
            events.fire(e).await.unwrap_err(),
            "user event exceeds configured limit of 512 bytes before encoding"
        );
        assert_eq!(events.list().len(), 1);
    }

    #[test]
    fn filters_match_node_services_and_tags_like_consul() {
        let tags = vec!["v1".to_string(), "primary".to_string()];
        let services = [("web", tags.as_slice())];
        let mut e = event("x");
        assert!(passes_filters(&e, "n1", services));
        e.node_filter = "^n[0-9]$".into();
        assert!(passes_filters(&e, "n1", services));
        assert!(!passes_filters(&e, "db1", services));
        e.node_filter.clear();
        e.service_filter = "we".into();
        assert!(passes_filters(&e, "n1", services), "unanchored, as regexp.MatchString");
        e.tag_filter = "^prim".into();
        assert!(passes_filters(&e, "n1", services));
        e.tag_filter = "^v2$".into();
        assert!(!passes_filters(&e, "n1", services));
        e.tag_filter.clear();
        e.service_filter = "db".into();
        assert!(!passes_filters(&e, "n1", services));
        assert!(!passes_filters(&e, "n1", []));
    }

    #[test]
    fn the_wire_form_round_trips_and_garbage_is_refused() {
        let mut e = event("deploy");
        e.id = new_uuid();
        e.payload = b"v2".to_vec();
        e.version = 1;
        assert_eq!(decode_event(&encode_event(&e)), Some(e.clone()));
        let bytes = encode_event(&e);
        assert_eq!(decode_event(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_event(&[bytes.as_slice(), b"x"].concat()), None);
        assert_eq!(decode_event(&vec![0u8; USER_EVENT_HARD_LIMIT + 1]), None);
    }
}
