#![no_main]
//! Fuzz target `ratings`: see `sslf::fuzz_targets::ratings`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslf::fuzz_targets::ratings(data));
