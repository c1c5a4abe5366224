//! DNS requests (UDP datagrams, TCP messages): the server logic never panics, drops only headerless packets
//! and responses, answers FORMERR to what does not decode, and keeps every reply well-formed and in size.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::dns_packet(data));
