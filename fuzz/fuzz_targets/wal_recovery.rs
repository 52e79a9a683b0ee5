#![no_main]

// Each input writes a fresh log: run with TMPDIR on a tmpfs (scripts/fuzz does), or
// every append's fdatasync reaches the disk.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    shoal_storage::fuzzing::wal_recovery(dir.path(), data);
});
