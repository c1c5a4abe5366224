//! Raw bytes as an HTTP/1.1 request stream to the server's head parser and body decoders.
//! The checks live in `concord::fuzzing` so `cargo test -p concord --lib fuzzing` replays this corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzzing::http_wire(data));
