//! `fstore_tests::fuzz::references` on whatever libFuzzer makes up.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fstore_tests::fuzz::references(data));
