//! Torn appends are cut; damage, and missing files, are refused with the file named and
//! every file left as it was.

use super::*;

/// The granularity at which a crash can tear a write: a page of the page cache.
const PAGE: usize = 4096;

/// Returns each record's (index, offset) and each append's end in the newest segment.
fn layout(wal: &Wal) -> (Vec<(u64, u64)>, Vec<u64>) {
    let segments = wal.segments.read().unwrap();
    let segment = segments.last().unwrap();
    let records = segment.indexes.iter().copied().zip(segment.offsets.iter().copied()).collect();
    (records, segment.append_ends.clone())
}

/// Returns the bytes an append of `records` at byte `start` of a segment writes.
fn append_bytes(records: &[(u64, Vec<u8>)], start: u64) -> Vec<u8> {
    let mut frames = Vec::new();
    for (index, payload) in records {
        encode_frame(&mut frames, *index, payload);
    }
    let marker = encode_marker(&frames, records.last().unwrap().0, start);
    frames.extend_from_slice(&marker);
    frames
}

/// A log of two appends, 1..=3 and 4..=5, in one segment; returns its path.
fn two_appends(dir: &Path) -> PathBuf {
    let (wal, _) = Wal::open(dir).unwrap();
    wal.append(&records(1..4)).unwrap();
    wal.append(&records(4..6)).unwrap();
    segment_files(dir).remove(0)
}

#[test]
fn a_torn_append_is_cut_and_the_log_reopens_with_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let segment = two_appends(dir.path());
    let whole = fs::read(&segment).unwrap();
    let torn_append = append_bytes(&records(6..9), whole.len() as u64);
    // Crashes during the append of 6..=8, before its fdatasync returned: half of it
    // reached the disk; all its records but not its marker; zeros where the file grew.
    let tears = [
        torn_append[..torn_append.len() / 2].to_vec(),
        torn_append[..torn_append.len() - MARKER_LEN].to_vec(),
        vec![0; 300],
    ];
    for tear in tears {
        let mut torn = whole.clone();
        torn.extend_from_slice(&tear);
        fs::write(&segment, &torn).unwrap();
        let (wal, recovery) = Wal::open(dir.path()).unwrap();
        let torn_bytes = tear.len() as u64;
        assert_eq!(recovery, Recovery { records: 5, torn_bytes, removed_segments: 0 });
        assert_eq!(fs::read(&segment).unwrap(), whole, "cut where the torn append began");
        assert_eq!(wal.read(1, 10).unwrap(), payloads(1..6));
    }
    let (wal, _) = Wal::open(dir.path()).unwrap();
    wal.append(&records(6..7)).unwrap();
    drop(wal);
    assert_eq!(Wal::open(dir.path()).unwrap().0.read(1, 10).unwrap(), payloads(1..7));
}

#[test]
fn an_append_torn_at_page_granularity_is_cut_since_its_marker_covers_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    wal.append(&records(1..4)).unwrap();
    let big: Vec<(u64, Vec<u8>)> = (4..7).map(|index| (index, vec![index as u8; 3_000])).collect();
    wal.append(&big).unwrap();
    let (layout, append_ends) = layout(&wal);
    drop(wal);
    let segment = segment_files(dir.path()).remove(0);
    let whole = fs::read(&segment).unwrap();
    let start = append_ends[0] as usize; // where the append of 4..=6 starts
    let marker_at = whole.len() - MARKER_LEN;
    assert!(start < PAGE && whole.len() > 2 * PAGE, "the append spans three pages");
    assert_eq!(layout[3], (4, start as u64));
    let before_the_append = whole[..start].to_vec();

    // The fdatasync did not return, and only some of the append's pages reached the disk
    // (a page that did not still reads as it was before: zeros past the old end).
    for lost_page in 0..3 {
        let mut torn = whole.clone();
        let lost = (lost_page * PAGE).max(start)..((lost_page + 1) * PAGE).min(whole.len());
        torn[lost.clone()].fill(0);
        fs::write(&segment, &torn).unwrap();
        if lost_page < 2 {
            // The page with the marker landed, whole: its magic, last index and start
            // are intact, but its CRC covers the lost page too.
            assert_eq!(torn[marker_at..marker_at + 24], whole[marker_at..marker_at + 24]);
            assert!(is_marker_at(&torn, marker_at));
            assert_eq!(parse_marker(&whole, marker_at).map(|m| m.start), Some(start));
            assert_eq!(parse_marker(&torn, marker_at), None);
        }
        let (wal, recovery) = Wal::open(dir.path()).unwrap();
        let torn_bytes = (whole.len() - start) as u64;
        assert_eq!(recovery, Recovery { records: 3, torn_bytes, removed_segments: 0 });
        assert_eq!(wal.bounds(), Some((1, 3)), "page {lost_page} lost: the whole append goes");
        assert_eq!(fs::read(&segment).unwrap(), before_the_append);
        drop(wal);
        fs::write(&segment, &whole).unwrap();
    }
    // Every page landed (the crash came just before the fdatasync returned): the marker
    // checks out, and the append counts, as if the crash had come just after.
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 6, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.read(4, 7).unwrap(), big);
}

#[test]
fn a_damaged_record_followed_by_a_complete_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment = two_appends(dir.path());
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let (layout, _) = layout(&wal);
    drop(wal);
    // One bit of record 2's payload ("entry 2") flips.
    let mut bytes = fs::read(&segment).unwrap();
    let at = layout[1].1 as usize + FRAME_HEADER;
    assert_eq!(&bytes[at..at + 7], b"entry 2");
    bytes[at] ^= 0x20;
    fs::write(&segment, &bytes).unwrap();
    let message = assert_refused(dir.path(), &segment);
    assert!(message.contains("record 2 (at byte"), "{message}");
    assert!(message.contains("fails its checksum (an acknowledged append is damaged"), "{message}");
}

#[test]
fn a_damaged_marker_or_length_followed_by_a_complete_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment = two_appends(dir.path());
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let (layout, append_ends) = layout(&wal);
    drop(wal);
    let whole = fs::read(&segment).unwrap();

    // The first append's marker: a bit of its last index flips.
    let mut bytes = whole.clone();
    let marker_at = append_ends[0] as usize - MARKER_LEN;
    assert_eq!(bytes[marker_at + 8], 3);
    bytes[marker_at + 8] ^= 0x04;
    fs::write(&segment, &bytes).unwrap();
    let message = assert_refused(dir.path(), &segment);
    assert!(message.contains(&format!("end marker at byte {marker_at} fails")), "{message}");

    // Record 2's length grows past the end of the file: it reads as cut short, as the
    // last record of a torn append would, but the second append's marker is found.
    let mut bytes = whole.clone();
    let at = layout[1].1 as usize;
    assert_eq!(bytes[at..at + 4], 7_u32.to_le_bytes());
    bytes[at + 2] = 0x10;
    fs::write(&segment, &bytes).unwrap();
    let message = assert_refused(dir.path(), &segment);
    assert!(message.contains("is cut short (an acknowledged append is damaged"), "{message}");
}

#[test]
fn intact_records_out_of_order_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment = two_appends(dir.path());
    let mut bytes = fs::read(&segment).unwrap();
    // Every byte checks out, but record 3 comes again: no tear writes that.
    let again = append_bytes(&records(3..4), bytes.len() as u64);
    bytes.extend_from_slice(&again);
    fs::write(&segment, &bytes).unwrap();
    let message = assert_refused(dir.path(), &segment);
    assert!(message.contains("record 3 (at byte"), "{message}");
    assert!(message.contains("is out of order"), "{message}");
}

/// A log of three segments: 1..=2, 3..=4, 5..=7; returns their paths.
fn three_segments(dir: &Path) -> Vec<PathBuf> {
    let big = vec![9_u8; (SEGMENT_TARGET_BYTES * 5 / 8) as usize];
    let (wal, _) = Wal::open(dir).unwrap();
    for index in 1..5 {
        wal.append(&[(index, big.clone())]).unwrap();
    }
    wal.append(&records(5..7)).unwrap();
    wal.append(&records(7..8)).unwrap();
    let segments = segment_files(dir);
    assert_eq!(segments.len(), 3);
    segments
}

#[test]
fn damage_to_the_last_append_of_an_older_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    // The last byte of record 4's payload, in the second segment.
    let mut bytes = fs::read(&segments[1]).unwrap();
    let at = bytes.len() - MARKER_LEN - 1;
    assert_eq!(bytes[at], 9);
    bytes[at] = 0;
    fs::write(&segments[1], &bytes).unwrap();
    let message = assert_refused(dir.path(), &segments[1]);
    assert!(message.contains("record 4 (at byte"), "{message}");
    assert!(message.contains("yet newer segments follow"), "{message}");
}

#[test]
fn a_deleted_last_or_middle_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segments = three_segments(dir.path());
    let kept: Vec<Vec<u8>> = segments.iter().map(|path| fs::read(path).unwrap()).collect();

    fs::remove_file(&segments[2]).unwrap();
    let message = assert_refused(dir.path(), &segments[2]);
    assert!(message.contains("segment is missing: the manifest names it"), "{message}");
    fs::write(&segments[2], &kept[2]).unwrap();

    // The middle one: records 3..=4. The indexes of the others, 1..=2 and 5..=7, leave
    // no gap a reader could see; the third segment's header says it followed 4.
    fs::remove_file(&segments[1]).unwrap();
    let message = assert_refused(dir.path(), &segments[2]);
    assert!(message.contains("follows index 4, but the segment before it"), "{message}");
    assert!(message.contains("ends at index 2: a segment between them is missing"), "{message}");
    fs::write(&segments[1], &kept[1]).unwrap();
    assert_eq!(Wal::open(dir.path()).unwrap().0.bounds(), Some((1, 7)));
}

#[test]
fn a_missing_or_damaged_manifest_or_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let segment = two_appends(dir.path());
    let manifest = dir.path().join(MANIFEST_FILE);
    let kept = fs::read(&manifest).unwrap();

    fs::remove_file(&manifest).unwrap();
    let message = assert_refused(dir.path(), &manifest);
    assert!(message.contains("is missing, yet"), "{message}");

    let mut damaged = kept.clone();
    damaged[8 + 2] ^= 1; // the first index it names
    fs::write(&manifest, &damaged).unwrap();
    let message = assert_refused(dir.path(), &manifest);
    assert!(message.contains("the manifest fails its checksum"), "{message}");
    fs::write(&manifest, &kept).unwrap();

    let mut bytes = fs::read(&segment).unwrap();
    bytes[16] ^= 1; // the previous end
    fs::write(&segment, &bytes).unwrap();
    let message = assert_refused(dir.path(), &segment);
    assert!(message.contains("the segment header fails its checksum"), "{message}");
}

/// Found by fuzzing (fuzz/regressions/wal_recovery/): bytes overwritten across the end of
/// one append (its marker's CRC) and the start of the next (its first frame) read as a
/// torn append, and both appends, acknowledged, were cut without a word.
#[test]
fn damage_reaching_into_the_next_append_is_no_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    wal.append(&records(1..4)).unwrap();
    wal.append(&records(4..6)).unwrap();
    wal.append(&records(6..7)).unwrap();
    let (_, append_ends) = layout(&wal);
    drop(wal);
    let segment = segment_files(dir.path()).remove(0);
    let whole = fs::read(&segment).unwrap();
    let second_end = append_ends[1] as usize;
    let mut damaged = whole.clone();
    damaged[second_end - 4..second_end + 2].iter_mut().for_each(|byte| *byte ^= 0x55);
    fs::write(&segment, &damaged).unwrap();
    let error = Wal::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("the bytes of a later append follow it"), "{error}");
    assert_eq!(fs::read(&segment).unwrap(), damaged, "nothing cut");
}

/// Found by fuzzing too: the same, with the first append's marker magic overwritten, so
/// that its length is unknown; the next append's marker still says where that began.
#[test]
fn damage_over_a_marker_magic_and_the_next_append_is_no_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    wal.append(&records(1..2)).unwrap();
    wal.append(&records(2..3)).unwrap();
    let (_, append_ends) = layout(&wal);
    drop(wal);
    let segment = segment_files(dir.path()).remove(0);
    let mut damaged = fs::read(&segment).unwrap();
    let first_end = append_ends[0] as usize;
    damaged[first_end - MARKER_LEN + 7..first_end + 9].iter_mut().for_each(|byte| *byte ^= 0x55);
    fs::write(&segment, &damaged).unwrap();
    let error = Wal::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("the bytes of a later append follow it"), "{error}");
}
