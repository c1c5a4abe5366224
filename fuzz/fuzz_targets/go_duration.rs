//! Go durations (`?wait=`, config files): parsing arbitrary UTF-8 never panics.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::go_duration(data));
