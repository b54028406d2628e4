//! Fuzz target: see `crashsafe::fuzzing::temp_name`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| crashsafe::fuzzing::temp_name(data));
