//! Bytes read back from disk as a log entry, hard state or snapshot file: never panic, round-trip.
//! The checks live in `concord::fuzzing` so `cargo test -p concord --lib fuzzing` replays this corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzzing::storage_record(data));
