//! Fuzz the JOURNAL decoder (the checkpoints that did not commit): arbitrary bytes must give
//! Ok or Err, never a panic, a hang or an unbounded allocation; what decodes must re-encode
//! to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::format::fuzzing::journal(data));
