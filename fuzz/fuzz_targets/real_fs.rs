//! Fuzz target: see `crashsafe::fuzzing::real_fs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crashsafe::fuzzing::real_fs(data));
