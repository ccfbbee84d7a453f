//! Random operations (puts, deletes, checkpoints, reopens, rollbacks, compactions) with a
//! crash countdown against a model: after the crash the store must reopen on exactly the last
//! acknowledged state or the one in flight.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn::fuzz_ops::ops_crash(data));
