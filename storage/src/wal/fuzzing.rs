//! Entry points for the fuzz targets (`fuzz/`) and their regression tests: each takes
//! the fuzzer's bytes and panics when a property of the segment log fails.

use std::fs;
use std::path::Path;

use super::format::{encode_header, parse_frame, parse_header, parse_marker, Version, MARKER_LEN};
use super::scan::{scan_v1, scan_v2, Verdict};
use super::{Wal, SEGMENT_SUFFIX};
use crate::StorageError;

/// Reads `data` as a segment's bytes (the first byte picks how: as is, after a valid
/// format 2 header, or after the format 1 magic) and checks what the scan reports
/// against the bytes: records in order from the segment's first index, each a frame
/// that checks out at its offset, format 2 appends each closed by a marker that checks
/// out, and an end that is the file's unless a tail says why not.
pub fn wal_scan(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let first_index = 1;
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let previous_end =
                rest.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
            let mut bytes = encode_header(first_index, previous_end).to_vec();
            bytes.extend_from_slice(rest.get(8..).unwrap_or_default());
            bytes
        }
        _ => [b"shoalwl1".as_slice(), rest].concat(),
    };
    let Ok(header) = parse_header(&bytes, first_index) else { return };
    let scanned = match header.version {
        Version::V1 => scan_v1(&bytes, first_index),
        Version::V2 => scan_v2(&bytes, first_index),
    };
    assert!(scanned.end <= bytes.len(), "end {} past the file", scanned.end);
    assert!(scanned.end >= header.version.header_len().min(bytes.len()));
    assert_eq!(scanned.tail.is_none(), scanned.end == bytes.len(), "{:?}", scanned.tail);
    assert_eq!(scanned.indexes.len(), scanned.offsets.len());
    if let Some(first) = scanned.indexes.first() {
        assert_eq!(*first, first_index);
    }
    assert!(scanned.indexes.windows(2).all(|pair| pair[0] < pair[1]), "indexes out of order");
    for (index, offset) in scanned.indexes.iter().zip(&scanned.offsets) {
        let offset = *offset as usize;
        assert!(offset < scanned.end, "record {index} at {offset}, past the end");
        let (found, _, _) = parse_frame(&bytes[offset..]).expect("a record's frame checks out");
        assert_eq!(found, *index);
    }
    if header.version == Version::V2 {
        assert!(scanned.append_ends.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(
            scanned.append_ends.last().copied().unwrap_or(header.version.header_len() as u64),
            scanned.end as u64
        );
        for end in &scanned.append_ends {
            let at = *end as usize - MARKER_LEN;
            assert!(parse_marker(&bytes, at).is_some(), "append ending at {end} has no marker");
        }
        // A verdict of torn means no marker that checks out follows the log's end.
        if let Some(Verdict::Torn) = scanned.tail.as_ref().map(|tail| &tail.verdict) {
            let later = (scanned.end..bytes.len()).find(|at| {
                parse_marker(&bytes, *at).is_some_and(|marker| marker.start >= scanned.end)
            });
            assert_eq!(later, None, "torn, yet an append that completed later ends there");
        }
    }
}

/// Writes a log of appends that `data` describes into `dir` (which must be empty),
/// damages its segment as `data` says (a cut, a flipped byte, bytes overwritten), opens
/// it again and checks that no acknowledged record is lost or changed silently: a cut
/// (a torn append) keeps exactly the appends that ended before it; other damage is
/// refused as damage, or leaves every record, except that damage inside the last
/// append cannot be told from a torn write and drops that append whole. Opening also
/// never touches the files before [`Wal::check`] has passed, and the log stays usable.
pub fn wal_recovery(dir: &Path, data: &[u8]) {
    let [kind, at_low, at_high, value, plan @ ..] = data else { return };
    let appends = write_log(dir, plan);
    let segment = dir.join(format!("{:020}{SEGMENT_SUFFIX}", 1));
    let Ok(mut bytes) = fs::read(&segment) else { return };
    let at = usize::from(u16::from_le_bytes([*at_low, *at_high])) % bytes.len();
    let cut = match kind % 3 {
        0 => {
            bytes.truncate(at);
            true
        }
        1 => {
            bytes[at] ^= value.max(&1);
            false
        }
        _ => {
            let len = usize::from(*value % 32 + 1).min(bytes.len() - at);
            bytes[at..at + len].iter_mut().for_each(|byte| *byte = byte.wrapping_add(*value | 1));
            false
        }
    };
    fs::write(&segment, &bytes).unwrap();
    let held: Vec<_> = (1..=appends.iter().map(|append| append.last).max().unwrap_or(0)).collect();
    let before = read_files(dir);
    let checked = match Wal::check(dir) {
        Ok(checked) => checked,
        // Damage may also make the header read as a newer format's.
        Err(StorageError::Damaged { .. } | StorageError::UnsupportedVersion { .. })
            if !cut || at < Version::V2.header_len() =>
        {
            assert_eq!(read_files(dir), before, "a refused log was changed");
            return;
        }
        Err(error) => panic!("cut at {at} of {} refused: {error}", bytes.len()),
    };
    assert_eq!(read_files(dir), before, "checking changed the files");
    let (wal, _) = checked.open().unwrap();
    let kept = wal.bounds().map_or(Vec::new(), |(first, last)| wal.read(first, last + 1).unwrap());
    let whole: Vec<u64> = match cut {
        true => appends.iter().filter(|append| append.end <= at as u64).map(|a| a.last).collect(),
        false => appends.iter().map(|append| append.last).collect(),
    };
    let expected = whole.last().copied().unwrap_or(0);
    let found = kept.last().map_or(0, |(index, _)| *index);
    let one_append_short = appends.iter().rev().nth(1).map_or(0, |append| append.last);
    match cut {
        true => assert_eq!(found, expected, "a cut at {at} kept up to {found}"),
        false => assert!(
            found == expected
                || (found == one_append_short && at as u64 >= end_before_last(&appends)),
            "damage at {at} kept up to {found} of {expected} without a word"
        ),
    }
    assert_eq!(kept.len() as u64, found, "records missing below {found}");
    for (index, payload) in &kept {
        assert!(held.contains(index));
        assert_eq!(payload, &payload_of(*index, payload.len()), "record {index} changed");
    }
    // The repaired log takes appends and opens again with them.
    wal.append(&[(found + 1, payload_of(found + 1, 3))]).unwrap();
    drop(wal);
    let (again, _) = Wal::open(dir).unwrap();
    assert_eq!(again.bounds().map(|(_, last)| last), Some(found + 1));
}

/// One acknowledged append: its last index, and the segment's length once it returned.
struct Append {
    last: u64,
    end: u64,
}

/// Each byte of `plan` is an append of 1 to 4 records of up to 63 bytes each.
fn write_log(dir: &Path, plan: &[u8]) -> Vec<Append> {
    let (wal, _) = Wal::open(dir).unwrap();
    let mut next = 1;
    let mut appends = Vec::new();
    for byte in plan.iter().take(64) {
        let records: Vec<_> = (0..=u64::from(byte & 3))
            .map(|offset| (next + offset, payload_of(next + offset, usize::from(byte >> 2))))
            .collect();
        next += records.len() as u64;
        wal.append(&records).unwrap();
        let segment = dir.join(format!("{:020}{SEGMENT_SUFFIX}", 1));
        let end = fs::metadata(segment).unwrap().len();
        appends.push(Append { last: next - 1, end });
    }
    appends
}

/// Where the last append starts: the end of the one before it (or the header).
fn end_before_last(appends: &[Append]) -> u64 {
    appends.iter().rev().nth(1).map_or(Version::V2.header_len() as u64, |append| append.end)
}

/// The payload of record `index`, `len` bytes that tell it from every other record.
fn payload_of(index: u64, len: usize) -> Vec<u8> {
    index.to_le_bytes().iter().copied().cycle().take(len).collect()
}

fn read_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}
