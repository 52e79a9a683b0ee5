//! Replays every input in `fuzz/regressions/<target>/` (each a crash or property
//! failure the fuzzer found, kept once fixed) and `fuzz/seeds/<target>/` through the
//! fuzz target's entry point, so that plain `cargo test` keeps them fixed.
//! `scripts/fuzz` runs the fuzzers themselves.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for kind in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
        found.extend(entries.map(|entry| entry.expect("a readable directory").path()));
    }
    found.sort();
    found
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds or regressions for {target}");
    for input in inputs {
        let data = std::fs::read(&input).expect("a readable input");
        eprintln!("{target}: {}", input.display());
        run(&data);
    }
}

#[test]
fn wal_scan() {
    replay("wal_scan", shoal_storage::fuzzing::wal_scan);
}

#[test]
fn wal_recovery() {
    replay("wal_recovery", |data| {
        let dir = tempfile::tempdir().unwrap();
        shoal_storage::fuzzing::wal_recovery(dir.path(), data);
    });
}

#[test]
fn stored_records() {
    replay("stored_records", shoal_raft::fuzzing::stored_records);
}

#[test]
fn merge_patch() {
    replay("merge_patch", shoal_raft::fuzzing::merge_patch);
}

#[test]
fn auth() {
    replay("auth", shoal_raft::fuzzing::auth);
}

#[test]
fn resp_request() {
    replay("resp_request", shoal_node::fuzzing::resp_request);
}

#[test]
fn stream_head() {
    replay("stream_head", shoal_node::fuzzing::stream_head);
}

#[test]
fn gossip_datagram() {
    replay("gossip_datagram", shoal_node::fuzzing::gossip_datagram);
}
