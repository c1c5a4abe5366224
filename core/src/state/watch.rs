//! Blocking-query watches: parked reads keyed by the range of keys they read (KV keys or prefixes) or by
//! the catalog range they read ([`CatalogRange`]: a service, a node, the service or node list, all checks).
//!
//! Invariant: a watch wakes exactly when a key in its range changed. [`Watches::fire`] with the keys an
//! apply reported as changed moves out every watch whose range contains one of them, each once, and keeps
//! every other watch parked. A woken query re-reads its range; returning is not a promise that the index
//! moved past the client's (Consul makes the same non-promise).
//!
//! Cost: `fire` looks up each changed key in the exact-key map and each of its prefixes (one per char
//! boundary, `""` and the whole key included) in the prefix map, so it is O(changed × key length × log W)
//! however many watches are parked, never a scan over all of them.
use std::collections::{BTreeMap, BTreeSet};

use super::CatalogRange;

/// What a read covers: exactly one KV key, every KV key starting with a prefix (`""` = all keys), or a
/// catalog range (which no KV key is in).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyRange {
    Key(String),
    Prefix(String),
    Catalog(CatalogRange),
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p.as_str()),
            KeyRange::Catalog(_) => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

#[derive(Debug, Default)]
pub struct Watches {
    exact: BTreeMap<String, BTreeSet<WatchId>>,
    prefixes: BTreeMap<String, BTreeSet<WatchId>>,
    catalog: BTreeMap<CatalogRange, BTreeSet<WatchId>>,
    /// id → its range, to find it again on `remove`. Every id here is in exactly one set above, and back.
    ranges: BTreeMap<WatchId, KeyRange>,
}

impl Watches {
    /// Park watch `id` on `range`. Inserting an id that is already parked moves it to the new range.
    pub fn insert(&mut self, range: KeyRange, id: WatchId) {
        self.remove(id);
        match &range {
            KeyRange::Key(k) => self.exact.entry(k.clone()).or_default().insert(id),
            KeyRange::Prefix(p) => self.prefixes.entry(p.clone()).or_default().insert(id),
            KeyRange::Catalog(r) => self.catalog.entry(r.clone()).or_default().insert(id),
        };
        self.ranges.insert(id, range);
    }

    /// Unpark watch `id` (its query timed out or its client left). Returns whether it was parked.
    pub fn remove(&mut self, id: WatchId) -> bool {
        let Some(range) = self.ranges.remove(&id) else {
            return false;
        };
        fn unpark<K: Ord + ?Sized, Q: Ord + std::borrow::Borrow<K>>(
            map: &mut BTreeMap<Q, BTreeSet<WatchId>>,
            key: &K,
            id: WatchId,
        ) {
            if let Some(ids) = map.get_mut(key) {
                ids.remove(&id);
                if ids.is_empty() {
                    map.remove(key);
                }
            }
        }
        match &range {
            KeyRange::Key(k) => unpark(&mut self.exact, k.as_str(), id),
            KeyRange::Prefix(p) => unpark(&mut self.prefixes, p.as_str(), id),
            KeyRange::Catalog(r) => unpark(&mut self.catalog, r, id),
        }
        true
    }

    /// Move every watch on one of the `changed` catalog ranges (an exact lookup per range) into `fired` (each id once) and unpark it.
    pub fn fire_catalog(&mut self, changed: &[CatalogRange], fired: &mut Vec<WatchId>) {
        for range in changed {
            if let Some(ids) = self.catalog.remove(range) {
                self.take(ids, fired);
            }
        }
    }

    /// Move every watch whose range contains one of the `changed` keys into `fired` (each id once) and
    /// unpark it.
    pub fn fire(&mut self, changed: &[String], fired: &mut Vec<WatchId>) {
        if self.ranges.is_empty() {
            return;
        }
        for key in changed {
            if let Some(ids) = self.exact.remove(key.as_str()) {
                self.take(ids, fired);
            }
            if self.prefixes.is_empty() {
                continue;
            }
            let boundaries = key.char_indices().map(|(at, _)| at).chain(std::iter::once(key.len()));
            for at in boundaries {
                if let Some(ids) = self.prefixes.remove(&key[..at]) {
                    self.take(ids, fired);
                }
            }
        }
    }

    fn take(&mut self, ids: BTreeSet<WatchId>, fired: &mut Vec<WatchId>) {
        for id in ids {
            self.ranges.remove(&id);
            fired.push(id);
        }
    }

    /// Number of parked watches.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}
