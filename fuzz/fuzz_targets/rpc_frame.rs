//! Length-prefixed RPC frames as a server reads them off a connection: never panics, decoded frames round-trip.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::rpc_frame(data));
