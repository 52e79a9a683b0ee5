//! Format fixtures of the JSON bodies nodes send each other (relay lines, forwarded
//! tracker events and searches, Redis channel messages), one sample each, as a release
//! wrote them (`tests/fixtures/formats/<release>/`). The postcard formats have their
//! fixtures in shoal-raft; the rule for both is in `docs/formats.md`.
//!
//! Every checked-in fixture must parse with this build, and this build must write the
//! same sample as those bytes. `SHOAL_WRITE_FIXTURES=1 cargo test -p shoal-node fixtures`
//! writes the missing ones into this release's directory and never overwrites one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fabric::redis_feed::Message;
use crate::fabric::relay::Frame;
use crate::fabric::TrackerEvent;
use crate::jobs::SearchParams;

struct Sample {
    name: &'static str,
    /// This build's encoding of the sample.
    bytes: Vec<u8>,
    /// Parses fixture bytes and writes the value again.
    round_trip: fn(&[u8]) -> Result<Vec<u8>, String>,
}

/// A sample of type `T` given as JSON text: what this build writes is `T` read from it
/// and written again.
fn sample<T: Serialize + DeserializeOwned>(name: &'static str, json: &str) -> Sample {
    fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let value: T = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        Ok(serde_json::to_vec(&value).expect("samples serialize"))
    }
    let bytes = round_trip::<T>(json.as_bytes()).expect("samples parse");
    Sample { name, bytes, round_trip: round_trip::<T> }
}

fn samples() -> Vec<Sample> {
    vec![
        // The owner's relay stream, one line per event (`/internal/searches/{id}/stream`).
        sample::<Frame>(
            "relay-frame/progress",
            r#"{"seq":3,"kind":"progress","data":{"uf":"SP","page":2,"pages":4,"records":50}}"#,
        ),
        sample::<Frame>(
            "relay-frame/part-completed",
            r#"{"seq":5,"kind":"part_completed","data":{"uf":"SP","pages":4,"records":180,"completed_parts":1,"total_parts":2}}"#,
        ),
        sample::<Frame>(
            "relay-frame/completed",
            r#"{"seq":9,"kind":"completed","data":{"status":"completed","result":{"total_records":180,"download":"/api/searches/x/download"},"error":null}}"#,
        ),
        sample::<Frame>(
            "relay-frame/failed",
            r#"{"seq":9,"kind":"failed","data":{"status":"failed","result":null,"error":"source unreachable"}}"#,
        ),
        sample::<Frame>(
            "relay-frame/cancelled",
            r#"{"seq":4,"kind":"cancelled","data":{"status":"cancelled","result":null,"error":null}}"#,
        ),
        // A tracker event forwarded to the tracker's owner.
        sample::<TrackerEvent>(
            "tracker-event/progress",
            r#"{"type":"progress","data":{"done":3}}"#,
        ),
        // A search started on another node whose queue had room.
        sample::<SearchParams>(
            "search-params/search",
            r#"{"ufs":["SP","RJ"],"date_from":"2026-01-01","date_to":"2026-01-31","keywords":["merenda"],"source":"sample"}"#,
        ),
        // An event on a Redis channel (compatibility mode), which every node reads.
        sample::<Message>(
            "redis-message/progress",
            r#"{"id":"5f0c8a3e","attempt":1,"seq":3,"event":"progress","data":{"page":2}}"#,
        ),
    ]
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn fixture_path(release: &Path, name: &str) -> PathBuf {
    release.join(format!("{}.json", name.replace('/', "--")))
}

#[test]
fn every_release_fixture_parses_and_this_build_writes_it_again() {
    let samples = samples();
    if std::env::var_os("SHOAL_WRITE_FIXTURES").is_some() {
        let release = fixtures_dir().join(env!("CARGO_PKG_VERSION"));
        std::fs::create_dir_all(&release).unwrap();
        for sample in &samples {
            let path = fixture_path(&release, sample.name);
            if !path.exists() {
                std::fs::write(&path, &sample.bytes).unwrap();
            }
        }
    }
    let mut releases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("the fixtures directory is checked in")
        .map(|entry| entry.unwrap().path())
        .collect();
    releases.sort();
    let mut covered = BTreeSet::new();
    for release in &releases {
        for sample in &samples {
            let path = fixture_path(release, sample.name);
            let Ok(fixture) = std::fs::read(&path) else { continue };
            let again = (sample.round_trip)(&fixture)
                .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
            assert_eq!(again, fixture, "{} parses to another value", path.display());
            assert_eq!(sample.bytes, fixture, "this build writes {} otherwise", sample.name);
            covered.insert(sample.name);
        }
        let known = std::fs::read_dir(release).unwrap().count();
        let matched = samples.iter().filter(|s| fixture_path(release, s.name).exists()).count();
        assert_eq!(known, matched, "{} holds fixtures no sample reads", release.display());
    }
    let missing: Vec<_> = samples.iter().map(|s| s.name).filter(|n| !covered.contains(n)).collect();
    assert!(missing.is_empty(), "samples without a fixture (SHOAL_WRITE_FIXTURES=1): {missing:?}");
}
