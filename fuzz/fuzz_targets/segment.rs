//! Fuzz the segment decoder: arbitrary bytes must give Ok or Err, never a panic, a hang or an
//! unbounded allocation; what decodes must re-encode to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::format::fuzzing::segment(data));
