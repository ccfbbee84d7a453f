//! Fuzz delta chunks: a delta made against any base rebuilds its chunk exactly, and arbitrary
//! stored bytes applied to any base give Ok or Err, never a panic or an unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::format::fuzzing::delta(data));
