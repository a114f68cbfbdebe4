#![no_main]
//! Fuzz target `checkpoint`: see `sslf::fuzz_targets::checkpoint`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslf::fuzz_targets::checkpoint(data));
