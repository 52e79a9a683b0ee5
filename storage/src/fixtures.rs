//! The format-fixture check the crates share (the `testsuite` feature; `docs/formats.md`).
//!
//! Each release checks in one sample of every kind of bytes it writes, under
//! `<crate>/tests/fixtures/formats/<release>/`. [`check_releases`] decodes every fixture of
//! every release with this build, requires that writing the value again gives the same
//! bytes and that the sample this build makes gives them too, and fails while a sample
//! has no fixture. With `SHOAL_WRITE_FIXTURES` set it first writes the missing fixtures
//! of this release; it never rewrites one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;

/// This build's bytes of a sample, at the level of a fixture (`None`: as it writes new
/// bytes).
pub type Writer = Box<dyn Fn(Option<&[u8]>) -> Vec<u8>>;

/// One kind of encoded bytes, as this build reads and writes it.
pub struct Sample {
    pub name: String,
    pub written: Writer,
    /// Reads fixture bytes and writes the value again (at their level).
    pub round_trip: fn(&[u8]) -> Result<Vec<u8>, String>,
}

/// A sample of the postcard codec: `value`, written at each fixture's level.
pub fn postcard<T: Serialize + DeserializeOwned + 'static>(name: &str, value: T) -> Sample {
    fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let value: T = codec::decode(bytes, "fixture").map_err(|error| error.to_string())?;
        Ok(codec::encode_at(bytes[0], &value))
    }
    let written = Box::new(move |fixture: Option<&[u8]>| {
        let level = fixture.and_then(codec::level_of).unwrap_or(codec::WRITE_LEVEL);
        codec::encode_at(level, &value)
    });
    Sample { name: name.to_string(), written, round_trip: round_trip::<T> }
}

/// A sample of a JSON body of type `T`, given as JSON text: what this build writes is `T`
/// read from it and written again.
pub fn json<T: Serialize + DeserializeOwned>(name: &str, text: &str) -> Sample {
    fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let value: T = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        Ok(serde_json::to_vec(&value).expect("samples serialize"))
    }
    let bytes = round_trip::<T>(text.as_bytes()).expect("samples parse");
    Sample {
        name: name.to_string(),
        written: Box::new(move |_| bytes.clone()),
        round_trip: round_trip::<T>,
    }
}

/// Checks `samples` against every release directory under `dir` (files named after the
/// samples, `/` as `--`, with `extension`); `release` names this build's directory.
pub fn check_releases(dir: &Path, release: &str, extension: &str, samples: &[Sample]) {
    let path_of = |release: &Path, name: &str| {
        release.join(format!("{}.{extension}", name.replace('/', "--")))
    };
    let mut names = BTreeSet::new();
    for sample in samples {
        assert!(names.insert(sample.name.as_str()), "sample {} is listed twice", sample.name);
    }
    if std::env::var_os("SHOAL_WRITE_FIXTURES").is_some() {
        let this_release = dir.join(release);
        std::fs::create_dir_all(&this_release).unwrap();
        for sample in samples {
            let path = path_of(&this_release, &sample.name);
            if !path.exists() {
                std::fs::write(&path, (sample.written)(None)).unwrap();
            }
        }
    }
    let mut releases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("the fixtures in {} are checked in: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    releases.sort();
    assert!(!releases.is_empty(), "no release fixtures in {}", dir.display());
    let mut covered = BTreeSet::new();
    for release in &releases {
        let mut matched = 0;
        for sample in samples {
            let path = path_of(release, &sample.name);
            let Ok(fixture) = std::fs::read(&path) else { continue };
            matched += 1;
            let again = (sample.round_trip)(&fixture)
                .unwrap_or_else(|error| panic!("{} does not decode: {error}", path.display()));
            assert_eq!(again, fixture, "{} decodes to another value", path.display());
            assert_eq!(
                (sample.written)(Some(&fixture)),
                fixture,
                "this build writes {} otherwise than {} did",
                sample.name,
                release.display()
            );
            covered.insert(sample.name.as_str());
        }
        let present = std::fs::read_dir(release).unwrap().count();
        assert_eq!(present, matched, "{} holds fixtures no sample reads", release.display());
    }
    let missing: Vec<_> = names.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "samples without a fixture (write them with SHOAL_WRITE_FIXTURES=1): {missing:?}"
    );
}
