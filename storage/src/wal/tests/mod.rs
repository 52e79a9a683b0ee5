//! The log's behaviour; `damage` covers damaged and torn files, `format1` the files
//! older builds wrote.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::format::*;
use super::segment::rewrite_path;
use super::*;

mod damage;
mod format1;

fn records(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|index| (index, format!("entry {index}").into_bytes())).collect()
}

fn payloads(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    records(range)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Returns every file of `dir` with its bytes.
fn dir_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&path).unwrap())
        })
        .collect()
}

/// Opens the log in `dir`, which must be refused as damaged, naming `file`; returns the
/// message. Every file of `dir` must be byte for byte as before.
fn assert_refused(dir: &Path, file: &Path) -> String {
    let before = dir_contents(dir);
    let error = Wal::open(dir).expect_err("a damaged log must not open");
    let StorageError::Damaged { path, .. } = &error else { panic!("not damage: {error}") };
    assert_eq!(path, file, "{error}");
    let message = error.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("shoal reset-replica"), "{message}");
    assert_eq!(dir_contents(dir), before, "a refused open changed the files");
    message
}

#[test]
fn appends_read_back_across_segments_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![7_u8; (SEGMENT_TARGET_BYTES * 3 / 8) as usize];
    {
        let (wal, recovery) = Wal::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(wal.bounds(), None);
        wal.append(&records(1..4)).unwrap();
        // Four large records: the segment passes its target size and a new one starts.
        for index in 4..8 {
            wal.append(&[(index, big.clone())]).unwrap();
        }
        wal.append(&records(8..10)).unwrap();
        assert_eq!(wal.bounds(), Some((1, 9)));
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(wal.read(2, 4).unwrap(), payloads(2..4));
        let across = wal.read(3, 9).unwrap();
        assert_eq!(across.len(), 6);
        assert_eq!(across[1], (4, big.clone()));
        assert_eq!(across[5], (8, b"entry 8".to_vec()));
    }
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 9, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.bounds(), Some((1, 9)));
    assert_eq!(wal.read(8, 10).unwrap(), payloads(8..10));
    assert_eq!(wal.read(9, 11).unwrap(), payloads(9..10), "only what is held");
    assert!(wal.append(&records(9..10)).is_err(), "an overlap is refused");
    assert!(wal.append(&[(12, vec![]), (11, vec![])]).is_err(), "disorder is refused");
    wal.append(&records(10..11)).unwrap();
    // A gap is allowed (openraft's storage suite writes some): reads skip it.
    wal.append(&records(13..14)).unwrap();
    assert_eq!(wal.bounds(), Some((1, 13)));
    assert_eq!(wal.read(10, 20).unwrap(), [payloads(10..11), payloads(13..14)].concat());
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 11);
    assert_eq!(wal.read(12, 14).unwrap(), payloads(13..14));
}

#[test]
fn an_append_is_its_frames_and_one_marker_and_a_segment_starts_with_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    wal.append(&records(1..3)).unwrap();
    wal.append(&[(5, b"after a gap".to_vec())]).unwrap();
    let bytes = fs::read(&segment_files(dir.path())[0]).unwrap();

    let mut expected = encode_header(1, 0).to_vec();
    let mut frames = Vec::new();
    for (index, payload) in records(1..3) {
        encode_frame(&mut frames, index, &payload);
    }
    let start = expected.len() as u64;
    expected.extend_from_slice(&frames);
    expected.extend_from_slice(&encode_marker(&frames, 2, start));
    let second_start = expected.len() as u64;
    let mut second = Vec::new();
    encode_frame(&mut second, 5, b"after a gap");
    expected.extend_from_slice(&second);
    expected.extend_from_slice(&encode_marker(&second, 5, second_start));
    assert_eq!(bytes, expected);

    // The layout the module docs give, byte by byte.
    assert_eq!(&bytes[0..8], b"shoalwl2");
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 0, "nothing before");
    assert_eq!(bytes[24..28], crc32fast::hash(&bytes[0..24]).to_le_bytes());
    let marker_at = (start as usize) + frames.len();
    assert_eq!(bytes[marker_at..marker_at + 8], [0xff, 0xff, b'A', b'P', b'P', b'E', b'N', b'D']);
    assert_eq!(u64::from_le_bytes(bytes[marker_at + 8..marker_at + 16].try_into().unwrap()), 2);
    assert_eq!(
        u64::from_le_bytes(bytes[marker_at + 16..marker_at + 24].try_into().unwrap()),
        start
    );
    let mut covered = frames.clone();
    covered.extend_from_slice(&bytes[marker_at..marker_at + 24]);
    assert_eq!(bytes[marker_at + 24..marker_at + 28], crc32fast::hash(&covered).to_le_bytes());
    let manifest = fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!(parse_small(&manifest).unwrap(), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn truncate_and_purge_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![1_u8; (SEGMENT_TARGET_BYTES * 5 / 8) as usize];
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&records(1..3)).unwrap();
        wal.append(&[(3, big.clone())]).unwrap();
        wal.append(&[(4, big.clone())]).unwrap(); // segment 1: 1..=4
        wal.append(&records(5..8)).unwrap(); // segment 2: 5..=7
        assert_eq!(segment_files(dir.path()).len(), 2);

        wal.truncate(6).unwrap();
        assert_eq!(wal.bounds(), Some((1, 5)));
        wal.append(&records(6..7)).unwrap();
        wal.truncate(5).unwrap(); // removes the second segment whole
        assert_eq!(segment_files(dir.path()).len(), 1);
        assert_eq!(wal.bounds(), Some((1, 4)));

        wal.append(&records(5..9)).unwrap();
        wal.purge(3).unwrap(); // segment 1 also holds 4: it stays
        assert_eq!(wal.bounds(), Some((1, 8)));
        wal.purge(4).unwrap();
        assert_eq!(wal.bounds(), Some((5, 8)));
    }
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 4, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.read(5, 9).unwrap(), payloads(5..9));

    // Purging past the end empties the log; the next append starts anywhere.
    wal.purge(20).unwrap();
    assert_eq!(wal.bounds(), None);
    assert!(segment_files(dir.path()).is_empty());
    wal.append(&records(21..23)).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.bounds(), Some((21, 22)));
}

#[test]
fn a_truncate_inside_an_append_keeps_the_rest_of_that_append() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&records(1..4)).unwrap();
        wal.append(&records(4..9)).unwrap();
        // Cuts the second append after record 5: 4 and 5 lose their marker, so the
        // segment gets a new one after them.
        wal.truncate(6).unwrap();
        assert_eq!(wal.read(1, 10).unwrap(), payloads(1..6));
        wal.append(&records(6..7)).unwrap();
        // At an append's boundary: the file is only cut.
        wal.truncate(6).unwrap();
        wal.truncate(4).unwrap();
        assert_eq!(wal.bounds(), Some((1, 3)));
        wal.append(&records(4..6)).unwrap();
        wal.truncate(5).unwrap();
    }
    let names: Vec<String> = dir_contents(dir.path()).into_keys().collect();
    assert_eq!(names, ["00000000000000000001.seg", "manifest"], "no rewrite is left");
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 4, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.read(1, 10).unwrap(), payloads(1..5));
    wal.append(&records(5..7)).unwrap();
    drop(wal);
    assert_eq!(Wal::open(dir.path()).unwrap().0.read(1, 10).unwrap(), payloads(1..7));
}

#[test]
fn leftover_segments_above_the_manifest_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![3_u8; (SEGMENT_TARGET_BYTES * 5 / 8) as usize];
    let removed_by_truncate;
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[(1, big.clone())]).unwrap();
        wal.append(&[(2, big.clone())]).unwrap(); // segment 1: 1..=2
        wal.append(&records(3..6)).unwrap(); // segment 3: 3..=5
        let segments = segment_files(dir.path());
        removed_by_truncate = (segments[1].clone(), fs::read(&segments[1]).unwrap());
        wal.truncate(3).unwrap();
    }
    // What crashes leave: a truncate that had named segment 1 in the manifest but whose
    // removal of segment 3 had not reached the disk, a segment created for the next
    // append whose header was torn, and one whose header was written but which the
    // manifest never named.
    fs::write(&removed_by_truncate.0, &removed_by_truncate.1).unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 6)), &encode_header(6, 3)[..11]).unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 7)), encode_header(7, 3)).unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 2, torn_bytes: 0, removed_segments: 3 });
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(wal.bounds(), Some((1, 2)));
    wal.append(&records(3..4)).unwrap();
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 3, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.read(3, 4).unwrap(), payloads(3..4));

    // A purge of the whole log whose removals had not reached the disk: the manifest
    // names no segment, and what is left holds only purged records.
    let left: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path())
        .into_iter()
        .map(|path| (path.clone(), fs::read(path).unwrap()))
        .collect();
    wal.purge(10).unwrap();
    drop(wal);
    for (path, bytes) in &left {
        fs::write(path, bytes).unwrap();
    }
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(recovery, Recovery { records: 0, torn_bytes: 0, removed_segments: 2 });
    assert_eq!(wal.bounds(), None);
    assert!(segment_files(dir.path()).is_empty());
}

#[test]
fn empty_segments_left_by_a_crash_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![5_u8; (SEGMENT_TARGET_BYTES * 5 / 8) as usize];
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[(1, big.clone())]).unwrap();
        wal.append(&[(2, big.clone())]).unwrap();
    }
    // A crash after segment 3 was named but before anything went in: the newest
    // segment stays, empty, and takes the next append.
    let empty = dir.path().join(format!("{:020}.seg", 3));
    fs::write(&empty, encode_header(3, 3)).unwrap();
    fs::write(dir.path().join(MANIFEST_FILE), encode_manifest(Some(3))).unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 2, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(segment_files(dir.path()).len(), 2);
    drop(wal);
    // A crash after segment 4 replaced the empty segment 3 in the manifest, before 3
    // was removed: 3 holds nothing and is removed.
    fs::write(dir.path().join(format!("{:020}.seg", 4)), encode_header(4, 3)).unwrap();
    fs::write(dir.path().join(MANIFEST_FILE), encode_manifest(Some(4))).unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 2, torn_bytes: 0, removed_segments: 1 });
    assert!(!empty.exists());
    wal.append(&records(4..6)).unwrap();
    assert_eq!(wal.read(4, 6).unwrap(), payloads(4..6));
    drop(wal);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.bounds(), Some((1, 5)));
}

#[test]
fn a_rewrite_a_crash_interrupted_is_removed_and_the_segment_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&records(1..6)).unwrap();
    }
    let segment = segment_files(dir.path()).remove(0);
    fs::write(rewrite_path(&segment), b"half a rewrite").unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 5, torn_bytes: 0, removed_segments: 0 });
    assert!(!rewrite_path(&segment).exists());
    assert_eq!(wal.read(1, 6).unwrap(), payloads(1..6));
}

#[test]
fn meta_is_replaced_atomically_and_a_torn_hint_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.read_meta().unwrap(), None);
    wal.write_meta(b"vote 1").unwrap();
    wal.write_meta(b"vote 2").unwrap();
    assert_eq!(wal.read_meta().unwrap(), Some(b"vote 2".to_vec()));
    assert!(!dir.path().join(META_TMP_FILE).exists());

    assert_eq!(wal.read_hint(), None);
    wal.write_hint(b"committed 10").unwrap();
    wal.write_hint(b"c 9").unwrap(); // shorter than before: the length still says
    assert_eq!(wal.read_hint(), Some(b"c 9".to_vec()));
    let mut torn = fs::read(dir.path().join(HINT_FILE)).unwrap();
    torn[9] ^= 1;
    fs::write(dir.path().join(HINT_FILE), torn).unwrap();
    assert_eq!(wal.read_hint(), None);

    // The meta file is renamed into place, so never torn: a bad one is damage.
    let mut damaged_meta = fs::read(dir.path().join(META_FILE)).unwrap();
    damaged_meta[9] ^= 1;
    fs::write(dir.path().join(META_FILE), damaged_meta).unwrap();
    let error = wal.read_meta().unwrap_err();
    assert!(error.is_damaged(), "{error}");
}

#[test]
fn a_new_directory_is_only_created_when_opened() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("raft-log");
    let checked = Wal::check(&dir).unwrap();
    assert_eq!(checked.bounds(), None);
    assert!(!dir.exists(), "checking changes nothing");
    let (wal, _) = checked.open().unwrap();
    assert_eq!(dir_contents(&dir).into_keys().collect::<Vec<_>>(), ["manifest"]);
    wal.append(&records(1..2)).unwrap();
}

/// A read racing a truncate of the records it reads (a deposed leader's replication
/// reading its tail while the new leader's entries truncate it) sees them whole or not
/// at all: before, the read could come up short ("failed to fill whole buffer") or find
/// the next append's records, and openraft stops its core on such an error.
#[test]
fn reads_racing_truncates_of_the_same_records_see_them_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let wal = std::sync::Arc::new(wal);
    wal.append(&records(1..11)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (wal, stop) = (wal.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let read = wal.read(5, 20).unwrap_or_else(|error| panic!("read {reads}: {error}"));
                let indexes: Vec<u64> = read.iter().map(|(index, _)| *index).collect();
                assert!(indexes.is_empty() || indexes[0] == 5, "{indexes:?}");
                for (index, payload) in read {
                    let expected = [format!("entry {index}"), format!("again {index}")];
                    assert!(expected.iter().any(|text| text.as_bytes() == payload), "{index}");
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..2_000 {
        wal.truncate(5).unwrap();
        let word = if round % 2 == 0 { "again" } else { "entry" };
        let batch: Vec<(u64, Vec<u8>)> =
            (5..11).map(|index| (index, format!("{word} {index}").into_bytes())).collect();
        wal.append(&batch).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}
