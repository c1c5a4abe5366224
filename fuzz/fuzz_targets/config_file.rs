//! An agent config file (first byte: even JSON, odd HCL): parsing and validation never panic.
//! The checks live in `concord::fuzzing` so `cargo test -p concord --lib fuzzing` replays this corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzzing::config_file(data));
