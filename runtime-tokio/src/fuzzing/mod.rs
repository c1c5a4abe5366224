//! Fuzz-target bodies for the parsers that live in the runtime (config files, storage records, sealed
//! gossip, the HTTP API), shared by the cargo-fuzz crate (`fuzz/`, feature `fuzzing`) and the corpus replay
//! test (`tests.rs`, run by plain `cargo test`). Not part of concord's API.
//!
//! Same contract as `concord_core::fuzzing`: each function takes arbitrary bytes and returns normally; it
//! panics only when the code under test breaks a documented property, and that panic is the bug report.

mod http;
#[cfg(test)]
mod tests;

pub use http::{http_request, http_wire};

use crate::gossip::Keyring;
use crate::storage::codec::{decode_checked, encode_checked};
use crate::storage::snapshot_file::{decode_file, file_header};
use concord_core::raft::{Entry, HardState};

/// A target's body: takes any bytes, panics only on a bug.
pub type Check = fn(&[u8]);

/// Every runtime target: its name (cargo-fuzz target and `fuzz/corpus/<name>/`) and body.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_file", config_file),
    ("storage_record", storage_record),
    ("gossip_sealed", gossip_sealed),
    ("http_request", http_request),
    ("user_event", user_event),
    ("http_wire", http_wire),
];

/// A gossip user event's payload (`consul:event:*`), as another agent sends it: `decode_event` never
/// panics; what decodes re-encodes to the same bytes; filtering it against a node with services never
/// panics (filters are untrusted regular expressions) and a decoded event is kept in the ring at most once.
pub fn user_event(data: &[u8]) {
    use crate::agent::events::{decode_event, encode_event, passes_filters, UserEvents};
    let Some(event) = decode_event(data) else { return };
    assert_eq!(
        encode_event(&event),
        data,
        "a decoded user event re-encodes to other bytes"
    );
    let tags = vec!["v1".to_string(), String::new()];
    let _ = passes_filters(&event, "node-1", [("web", tags.as_slice()), ("", &[][..])]);
    let events = UserEvents::new(None, "node-1".into(), None);
    events.ingest(event);
    assert!(events.list().len() <= 1);
}

/// A config file: first byte even = JSON, odd = HCL; the rest is the file's text (skipped unless UTF-8,
/// as the agent reads files as UTF-8). Parsing, merging and validation never panic, and give the same
/// answer twice.
pub fn config_file(data: &[u8]) {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let format = if pick % 2 == 0 { "json" } else { "hcl" };
    let first = crate::config::parse_config_text(text, format);
    let again = crate::config::parse_config_text(text, format);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "config parsing is not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("config parsing is not deterministic: {first:?} vs {again:?}"),
    }
    if let Err(e) = first {
        let line = e.to_string();
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "config error is not one line: {line:?}"
        );
    }
}

/// Term and index of the snapshot file name the `storage_record` target reads its bytes under.
pub const SNAPSHOT_NAME: (u64, u64) = (2, 10);

/// Bytes read back from disk, tried as each stored record: a log entry and the hard state (checksummed
/// postcard values in fjall) and a snapshot file named `2-10.snap`. Decoding never panics; a decoded
/// record re-encodes to bytes that decode to the same value, and a restored snapshot's state machine
/// decodes or is rejected without a panic.
pub fn storage_record(data: &[u8]) {
    if let Ok(entry) = decode_checked::<Entry>(data) {
        assert_eq!(
            decode_checked::<Entry>(&encode_checked(&entry)),
            Ok(entry),
            "log entry round-trip"
        );
    }
    if let Ok(hs) = decode_checked::<HardState>(data) {
        assert_eq!(
            decode_checked::<HardState>(&encode_checked(&hs)),
            Ok(hs),
            "hard state round-trip"
        );
    }
    let (term, index) = SNAPSHOT_NAME;
    if let Ok(snapshot) = decode_file(data, term, index) {
        assert_eq!((snapshot.meta.term, snapshot.meta.index), (term, index));
        let body = postcard::to_allocvec(&snapshot).expect("a snapshot encodes");
        let file = [file_header(&body).as_slice(), &body].concat();
        assert_eq!(
            decode_file(&file, term, index).as_ref(),
            Ok(&snapshot),
            "snapshot file round-trip"
        );
        let _ = concord_core::state::StateMachine::restore(&snapshot.data);
    }
}

/// The two keys of the `gossip_sealed` keyring (base64 of 32 and 16 bytes); the second is not primary.
pub const GOSSIP_KEYS: [&str; 2] = [
    "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
    "AAECAwQFBgcICQoLDA0ODw==",
];

/// An encrypted gossip datagram (`-encrypt`). Opening arbitrary bytes never panics (it fails unless they
/// carry a valid tag); the same bytes sealed with the keyring open to themselves and decode (or are
/// dropped) without a panic, exactly as the agent's receive path does it.
pub fn gossip_sealed(data: &[u8]) {
    let ring = Keyring::new(crate::gossip::parse_key(GOSSIP_KEYS[0]).expect("valid key"), None);
    ring.install(GOSSIP_KEYS[1]).expect("install");
    if let Ok(plain) = ring.decrypt(data) {
        let _ = concord_core::gossip::wire::decode_packet(&plain);
    }
    let sealed = ring.encrypt(data);
    assert_eq!(sealed.len(), data.len() + crate::gossip::keyring::OVERHEAD);
    assert_eq!(
        ring.decrypt(&sealed).as_deref(),
        Ok(data),
        "sealed datagram does not open"
    );
    let _ = concord_core::gossip::wire::decode_packet(data);
    let mut tampered = sealed;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(ring.decrypt(&tampered).is_err(), "a tampered datagram opened");
}
