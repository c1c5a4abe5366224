//! A push-pull frame body: decoding never panics, what decodes round-trips and merges into a member that keeps working.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::gossip_push_pull(data));
