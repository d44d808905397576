//! Arbitrary bytes as an inbound WebSocket message: envelope decode, every typed `data`
//! decoder, and the encode/decode round trip. See `wshub_fuzz::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wshub_fuzz::envelope(data));
