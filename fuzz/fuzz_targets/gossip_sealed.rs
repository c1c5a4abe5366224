//! An encrypted gossip datagram: opening never panics; sealed input opens to itself.
//! The checks live in `concord::fuzzing` so `cargo test -p concord --lib fuzzing` replays this corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzzing::gossip_sealed(data));
