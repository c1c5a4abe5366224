//! One HTTP request to the API router over the in-memory backend: no panic, well-formed answers.
//! The checks live in `concord::fuzzing` so `cargo test -p concord --lib fuzzing` replays this corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzzing::http_request(data));
