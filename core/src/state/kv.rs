//! The KV tree (Consul's `kvs` table) with tombstones. Placeholder until the KV state machine lands.
use super::{Command, CommandResult, DecodeError, KeyRange, KvEntry};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {}

impl KvStore {
    pub fn apply(&mut self, _index: u64, _cmd: &Command, _changed: &mut Vec<String>) -> CommandResult {
        unimplemented!()
    }
    /// (index of the range, entry)
    pub fn get(&self, _key: &str) -> (u64, Option<KvEntry>) {
        unimplemented!()
    }
    pub fn list(&self, _prefix: &str) -> (u64, Vec<KvEntry>) {
        unimplemented!()
    }
    pub fn keys(&self, _prefix: &str, _separator: Option<&str>) -> (u64, Vec<String>) {
        unimplemented!()
    }
    pub fn range_index(&self, _range: &KeyRange) -> u64 {
        unimplemented!()
    }
    pub fn encode(&self) -> Vec<u8> {
        unimplemented!()
    }
    pub fn decode(_data: &[u8]) -> Result<Self, DecodeError> {
        unimplemented!()
    }
}
