//! One UDP gossip datagram: decoding never panics, decoded messages round-trip, a member handed it keeps sending valid packets.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::gossip_packet(data));
