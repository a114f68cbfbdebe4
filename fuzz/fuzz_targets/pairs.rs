#![no_main]
//! Fuzz target `pairs`: see `sslf::fuzz_targets::pairs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslf::fuzz_targets::pairs(data));
