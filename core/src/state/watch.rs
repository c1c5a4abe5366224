//! Blocking-query watches. Placeholder until the KV state machine lands.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyRange {
    Key(String),
    Prefix(String),
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);
#[derive(Debug, Default)]
pub struct Watches {}
impl Watches {
    pub fn insert(&mut self, _range: KeyRange, _id: WatchId) {
        unimplemented!()
    }
    pub fn remove(&mut self, _id: WatchId) -> bool {
        unimplemented!()
    }
    pub fn fire(&mut self, _changed: &[String], _fired: &mut Vec<WatchId>) {
        unimplemented!()
    }
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        unimplemented!()
    }
}
