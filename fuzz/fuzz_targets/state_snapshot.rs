//! State-machine snapshot bytes (disk or InstallSnapshot): restore never panics, restored states round-trip.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::state_snapshot(data));
