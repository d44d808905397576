//! Arbitrary UTF-8 as a YAML configuration file through `wshub::Config::load_from`.
//! See `wshub_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wshub_fuzz::config(data));
