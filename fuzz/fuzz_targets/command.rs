//! Raft entry command bytes: decode never panics, decoded commands round-trip and apply without breaking KV invariants.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::command(data));
