#![no_main]
//! Fuzz target `model_file`: see `sslf::fuzz_targets::model_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sslf::fuzz_targets::model_file(data));
