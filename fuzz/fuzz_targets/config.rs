#![no_main]
//! Fuzz target `config`: see `sslf::fuzz_targets::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslf::fuzz_targets::config(data));
