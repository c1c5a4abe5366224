//! A schedule of faults and client requests over three in-process nodes: one leader per term, one applied history.
//! The checks live in `concord_core::fuzzing` so `core/tests/fuzz_corpus.rs` replays this corpus with them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_core::fuzzing::cluster_schedule(data));
