use std::fs;
use std::path::{Path, PathBuf};

use super::format::*;
use super::*;

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
    assert_eq!(recovery, Recovery { records: 9, torn_bytes: 0 });
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
    assert_eq!(recovery.records, 4);
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
fn a_torn_tail_is_cut_off_and_damage_elsewhere_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&records(1..6)).unwrap();
    }
    let segment = segment_files(dir.path()).remove(0);
    let full = fs::read(&segment).unwrap();
    // A crash in the middle of appending record 6: half its frame reached the disk.
    let mut torn = full.clone();
    torn.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    fs::write(&segment, &torn).unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 5, torn_bytes: 6 });
    assert_eq!(wal.bounds(), Some((1, 5)));
    wal.append(&records(6..7)).unwrap();
    drop(wal);
    assert_eq!(Wal::open(dir.path()).unwrap().0.read(1, 7).unwrap(), payloads(1..7));

    // A flipped byte in a record that has later records after it in a later segment:
    // the log refuses to open rather than lose what follows.
    let mut flipped = fs::read(&segment).unwrap();
    flipped[SEGMENT_MAGIC.len() + FRAME_HEADER] ^= 0xff;
    fs::write(&segment, &flipped).unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 7)), SEGMENT_MAGIC).unwrap();
    let error = Wal::open(dir.path()).unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[test]
fn empty_segments_left_by_a_crash_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&records(1..5)).unwrap();
    }
    // Segments that hold nothing, as a crash can leave them: one created for an
    // append that never landed, one whose removal had not reached the disk.
    for first in [2, 3] {
        fs::write(dir.path().join(format!("{first:020}.seg")), SEGMENT_MAGIC).unwrap();
    }
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 4);
    assert_eq!(wal.bounds(), Some((1, 4)));
    assert_eq!(segment_files(dir.path()).len(), 1);
    wal.append(&records(5..6)).unwrap();
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
}
