//! `fstore_tests::fuzz::tickets_and_cursors` on whatever libFuzzer makes up.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fstore_tests::fuzz::tickets_and_cursors(data));
