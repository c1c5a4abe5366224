//! The bounded retransmit queue (memberlist's `TransmitLimitedQueue`): each broadcast is piggybacked on
//! outgoing packets, the least transmitted first, newest first among equals, and dropped after the
//! retransmit limit. A newer broadcast about the same member replaces the older one.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// What a broadcast is about: a newer one with the same key invalidates the older.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BroadcastKey {
    Member(String),
    Event(u64, String, u64),
}

type Order = (u32, Reverse<u64>);

#[derive(Default)]
pub(crate) struct BroadcastQueue {
    items: BTreeMap<Order, (BroadcastKey, Vec<u8>)>,
    by_key: BTreeMap<BroadcastKey, Order>,
    next_id: u64,
}

impl BroadcastQueue {
    /// Queue `encoded` (a length-prefixed message), replacing any broadcast with the same key, and drop
    /// the most transmitted ones above `max`.
    pub(crate) fn push(&mut self, key: BroadcastKey, encoded: Vec<u8>, max: usize) {
        if let Some(order) = self.by_key.remove(&key) {
            self.items.remove(&order);
        }
        self.next_id += 1;
        let order = (0, Reverse(self.next_id));
        self.by_key.insert(key.clone(), order);
        self.items.insert(order, (key, encoded));
        while self.items.len() > max.max(1) {
            if let Some((_, (key, _))) = self.items.pop_last() {
                self.by_key.remove(&key);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Take broadcasts fitting in `budget` bytes, counting one transmission for each and dropping those
    /// that reached `limit` transmissions.
    pub(crate) fn take(&mut self, mut budget: usize, limit: u32) -> Vec<Vec<u8>> {
        let mut picked = Vec::new();
        for (order, (_, bytes)) in &self.items {
            if budget < 8 {
                break;
            }
            if bytes.len() <= budget {
                budget -= bytes.len();
                picked.push(*order);
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for order in picked {
            let Some((key, bytes)) = self.items.remove(&order) else {
                continue;
            };
            let transmits = order.0 + 1;
            if transmits < limit {
                let new_order = (transmits, order.1);
                self.by_key.insert(key.clone(), new_order);
                self.items.insert(new_order, (key, bytes.clone()));
            } else {
                self.by_key.remove(&key);
            }
            out.push(bytes);
        }
        out
    }
}
