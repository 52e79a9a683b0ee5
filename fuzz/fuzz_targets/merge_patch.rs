#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_raft::fuzzing::merge_patch(data));
