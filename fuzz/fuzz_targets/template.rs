//! consul-template source (first byte picks the delimiters): lexing, parsing and rendering never panic.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::template(data));
