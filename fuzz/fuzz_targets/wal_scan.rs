#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_storage::fuzzing::wal_scan(data));
