//! Fuzz target: see `crashsafe::fuzzing::plan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crashsafe::fuzzing::plan(data));
