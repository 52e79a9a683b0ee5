//! Data dirs written by builds before format 2: segments headed `shoalwl1`, no markers,
//! no manifest.

use super::*;

/// The checked-in format 1 log, as `format1_segments` writes it.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wal-format1");

/// Returns a format 1 segment holding `records`, byte for byte as builds before format 2
/// wrote it (written out here, not with this build's encoder): `shoalwl1`, then per
/// record its payload length (u32 LE), CRC-32 of index (u64 LE) and payload (u32 LE),
/// index (u64 LE), payload.
fn format1_segment(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = b"shoalwl1".to_vec();
    for (index, payload) in records {
        let mut covered = index.to_le_bytes().to_vec();
        covered.extend_from_slice(payload);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(payload);
    }
    bytes
}

fn format1_records(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|index| (index, format!("format 1 entry {index}").into_bytes())).collect()
}

/// The fixture's files: two segments, 1..=3 and 4..=5.
fn format1_segments() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (format!("{:020}.seg", 1), format1_segment(&format1_records(1..4))),
        (format!("{:020}.seg", 4), format1_segment(&format1_records(4..6))),
    ])
}

fn write_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn the_fixture_is_what_builds_before_format_2_wrote() {
    // SHOAL_WRITE_FIXTURES=1 writes the fixture again (it must not change once released).
    if std::env::var_os("SHOAL_WRITE_FIXTURES").is_some() {
        fs::create_dir_all(FIXTURE).unwrap();
        write_dir(Path::new(FIXTURE), &format1_segments());
    }
    assert_eq!(dir_contents(Path::new(FIXTURE)), format1_segments());
}

#[test]
fn the_format1_fixture_opens_and_the_log_goes_on_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &dir_contents(Path::new(FIXTURE)));
    let checked = Wal::check(dir.path()).unwrap();
    assert_eq!(checked.bounds(), Some((1, 5)));
    assert!(!dir.path().join(MANIFEST_FILE).exists(), "checking changes nothing");
    let (wal, recovery) = checked.open().unwrap();
    assert_eq!(recovery, Recovery { records: 5, torn_bytes: 0, removed_segments: 0 });
    assert_eq!(wal.read(1, 10).unwrap(), format1_records(1..6));
    let manifest = fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!(parse_manifest(&manifest), Ok(Some(4)), "the manifest names the newest");

    // New appends go into a format 2 segment, never into a format 1 one.
    wal.append(&records(6..8)).unwrap();
    let segments = segment_files(dir.path());
    assert_eq!(segments.len(), 3);
    assert_eq!(fs::read(&segments[1]).unwrap(), format1_segments()[&format!("{:020}.seg", 4)]);
    assert_eq!(&fs::read(&segments[2]).unwrap()[..V2_HEADER_LEN], encode_header(6, 6));
    drop(wal);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.read(1, 10).unwrap(), [format1_records(1..6), payloads(6..8)].concat());

    // A truncate into a format 1 segment cuts it at a record; a purge removes them.
    wal.truncate(5).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    drop(wal);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.read(1, 10).unwrap(), format1_records(1..5));
    wal.append(&records(5..6)).unwrap();
    wal.purge(4).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.read(1, 10).unwrap(), payloads(5..6));
}

#[test]
fn a_bad_last_frame_of_format_1_is_cut_only_when_nothing_intact_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = format1_segments();
    let last = dir.path().join(format!("{:020}.seg", 4));
    let whole = files[&format!("{:020}.seg", 4)].clone();
    let second_frame_at = 8 + FRAME_HEADER + "format 1 entry 4".len();

    // A crash in the middle of appending record 6: half its frame reached the disk.
    write_dir(dir.path(), &files);
    let mut torn = whole.clone();
    torn.extend_from_slice(&format1_segment(&format1_records(6..7))[8..30]);
    fs::write(&last, &torn).unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 5, torn_bytes: 22, removed_segments: 0 });
    assert_eq!(fs::read(&last).unwrap(), whole);
    drop(wal);

    // The last record's payload damaged, so that it fails its checksum at the very end:
    // format 1 cannot tell that from a torn append, and cuts it (with a warning).
    let mut bytes = whole.clone();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&last, &bytes).unwrap();
    let (_, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.torn_bytes, (bytes.len() - second_frame_at) as u64);

    // Record 4 damaged, with intact record 5 after it: refused.
    let mut bytes = whole.clone();
    bytes[8 + FRAME_HEADER] ^= 1;
    fs::write(&last, &bytes).unwrap();
    let message = assert_refused(dir.path(), &last);
    assert!(message.contains("record 4 (at byte 8) fails its checksum"), "{message}");
    assert!(message.contains("format 1: it is not the last record"), "{message}");

    // Record 4's length damaged so that it seems to reach the end of the file, as the
    // last frame of a torn append would: intact record 5 inside it gives it away.
    let mut bytes = whole.clone();
    bytes[8] += 40;
    fs::write(&last, &bytes).unwrap();
    let message = assert_refused(dir.path(), &last);
    assert!(message.contains(&format!("intact record 5 follows at byte {second_frame_at}")));

    // Damage at the end of a format 1 segment that is not the newest: refused.
    fs::write(&last, &whole).unwrap();
    let first = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = files[&format!("{:020}.seg", 1)].clone();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&first, &bytes).unwrap();
    let message = assert_refused(dir.path(), &first);
    assert!(message.contains("yet newer segments follow"), "{message}");
}

#[test]
fn format1_segments_that_hold_nothing_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &format1_segments());
    // What a crash left under format 1: a segment created for an append at 6 and
    // replaced by one for 7 before its removal was durable, and that one created just
    // before the crash, its header incomplete.
    fs::write(dir.path().join(format!("{:020}.seg", 6)), b"shoalwl1").unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 7)), b"shoal").unwrap();
    let (wal, recovery) = Wal::open(dir.path()).unwrap();
    assert_eq!(recovery, Recovery { records: 5, torn_bytes: 0, removed_segments: 2 });
    assert_eq!(segment_files(dir.path()).len(), 2);
    let manifest = fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    assert_eq!(parse_manifest(&manifest), Ok(Some(4)));
    wal.append(&records(7..8)).unwrap();
    assert_eq!(wal.read(5, 8).unwrap(), [format1_records(5..6), payloads(7..8)].concat());
}
