//! Reading one segment's bytes: which records belong to the log, and whether what
//! follows the last of them is a torn append or damage (the rules are in the `wal`
//! module docs).

use super::format::{
    find_marker, is_marker_at, marker_magics, parse_frame, parse_marker, read_u64, Version,
    FRAME_HEADER, MARKER_LEN, MAX_RECORD_BYTES,
};

/// What one segment file holds, as read at open.
#[derive(Debug, Default)]
pub(super) struct Scanned {
    pub(super) indexes: Vec<u64>,
    pub(super) offsets: Vec<u64>,
    pub(super) append_ends: Vec<u64>,
    /// Where the log's bytes in the file end: after the last whole append.
    pub(super) end: usize,
    /// What follows `end`, when the file does not end there.
    pub(super) tail: Option<Tail>,
}

/// Bytes after the log's end in a segment: a torn append, or damage.
#[derive(Debug)]
pub(super) struct Tail {
    /// What is wrong at the first bad byte.
    pub(super) reason: String,
    pub(super) verdict: Verdict,
}

#[derive(Debug)]
pub(super) enum Verdict {
    /// An append that never completed: never acknowledged, cut if in the newest segment.
    Torn,
    /// Not a torn append: why.
    Damaged(String),
}

/// What is wrong with the bytes where a segment's reading stopped.
enum Bad {
    /// They do not check out (cut short, a CRC that fails): a torn write, or damage.
    Unreadable,
    /// They check out, so they are what was written, but do not fit: damage.
    Inconsistent,
}

/// Reads a format 2 segment: records count once a marker that checks out ends their
/// append.
pub(super) fn scan_v2(bytes: &[u8], first_index: u64) -> Scanned {
    let mut scanned = Scanned { end: Version::V2.header_len(), ..Scanned::default() };
    let mut at = scanned.end;
    // Records read since the last marker: (index, offset).
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let problem = loop {
        if at == bytes.len() {
            break (!pending.is_empty()).then(|| {
                let reason = format!("the records from byte {} on have no end marker", scanned.end);
                (reason, Bad::Unreadable)
            });
        }
        if is_marker_at(bytes, at) {
            let Some(marker) = parse_marker(bytes, at) else {
                let reason = format!("the end marker at byte {at} fails its checksum");
                break Some((reason, Bad::Unreadable));
            };
            if marker.start != scanned.end || pending.last().map(|p| p.0) != Some(marker.last_index)
            {
                let reason = format!("the end marker at byte {at} does not match its records");
                break Some((reason, Bad::Inconsistent));
            }
            scanned.indexes.extend(pending.iter().map(|(index, _)| *index));
            scanned.offsets.extend(pending.drain(..).map(|(_, offset)| offset));
            at += MARKER_LEN;
            scanned.end = at;
            scanned.append_ends.push(at as u64);
            continue;
        }
        match parse_frame(&bytes[at..]) {
            Ok((index, _, used)) => {
                let previous = pending.last().map(|p| p.0).or(scanned.indexes.last().copied());
                if !previous.map_or(index == first_index, |previous| index > previous) {
                    let reason = format!("record {index} (at byte {at}) is out of order");
                    break Some((reason, Bad::Inconsistent));
                }
                pending.push((index, at as u64));
                at += used;
            }
            Err(error) => break Some((error.describe(at), Bad::Unreadable)),
        }
    };
    scanned.tail = problem.map(|(reason, bad)| {
        let verdict = match bad {
            Bad::Inconsistent => intact(),
            // A marker that checks out after the bad bytes ends an append that completed
            // after them, which only began once theirs had been acknowledged.
            Bad::Unreadable => match find_marker(bytes, at, scanned.end) {
                Some(marker_at) => Verdict::Damaged(format!(
                    "an acknowledged append is damaged: an append that completed later ends \
                     at byte {}",
                    marker_at + MARKER_LEN
                )),
                None => match later_append(bytes, at, scanned.end) {
                    Some(later_at) => Verdict::Damaged(format!(
                        "an acknowledged append is damaged: the bytes of a later append \
                         follow it from byte {later_at}"
                    )),
                    None => Verdict::Torn,
                },
            },
        };
        Tail { reason, verdict }
    });
    scanned
}

/// Returns where bytes of an append later than the one that holds byte `at` start, if
/// any. A torn append is the last thing in its file, since the next append starts only
/// once it has been acknowledged; a later append means this one completed, and damage
/// that also reached the next append must not pass for a torn write (found by fuzzing,
/// fuzz/regressions/wal_recovery/). The evidence, CRCs aside (they are what failed): a
/// marker magic after `at` that is not the file's last bytes (the failing append's own
/// marker, if intact, ends the file), or whose start field says its append began after
/// another that began at or after `trusted_end` ended.
fn later_append(bytes: &[u8], at: usize, trusted_end: usize) -> Option<usize> {
    marker_magics(bytes, at).find_map(|magic_at| {
        if magic_at + MARKER_LEN < bytes.len() {
            return Some(magic_at);
        }
        // A magic near the end may be cut short before its start field.
        let field = bytes.get(magic_at + 16..magic_at + 24)?;
        let start = usize::try_from(read_u64(field, 0)).ok()?;
        (start > trusted_end && start <= magic_at).then_some(start)
    })
}

/// Reads a format 1 segment (no markers): every intact record counts; a bad one is a
/// torn append only if it is the very last frame and no intact later record parses
/// after it.
pub(super) fn scan_v1(bytes: &[u8], first_index: u64) -> Scanned {
    let mut scanned = Scanned::default();
    let mut at = Version::V1.header_len();
    while at < bytes.len() {
        let reason = match parse_frame(&bytes[at..]) {
            Ok((index, _, used)) => {
                let in_order = match scanned.indexes.last() {
                    Some(last) => index > *last,
                    None => index == first_index,
                };
                if in_order {
                    scanned.indexes.push(index);
                    scanned.offsets.push(at as u64);
                    at += used;
                    continue;
                }
                let reason = format!("record {index} (at byte {at}) is out of order");
                scanned.tail = Some(Tail { reason, verdict: intact() });
                break;
            }
            Err(error) => error.describe(at),
        };
        let verdict = if !is_last_v1_frame(bytes, at) {
            Verdict::Damaged(
                "format 1: it is not the last record of the segment, so no torn append".to_string(),
            )
        } else if let Some((later_at, index)) =
            intact_v1_frame_after(bytes, at, scanned.indexes.last().copied())
        {
            Verdict::Damaged(format!(
                "format 1: intact record {index} follows at byte {later_at}, so no torn append"
            ))
        } else {
            Verdict::Torn
        };
        scanned.tail = Some(Tail { reason, verdict });
        break;
    }
    scanned.end = at;
    scanned
}

/// The verdict on bytes that check out but do not fit: they are what was written, so
/// no torn write.
fn intact() -> Verdict {
    Verdict::Damaged("its bytes are intact, so it is no torn write".to_string())
}

/// Returns whether the frame at `at` is the last of the file: its header is cut short,
/// or the length it claims reaches the end.
fn is_last_v1_frame(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + FRAME_HEADER) else { return true };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    len <= MAX_RECORD_BYTES && at + FRAME_HEADER + len >= bytes.len()
}

/// Returns the first intact record (offset, index) after byte `at` with an index above
/// `last`, looking at every offset.
fn intact_v1_frame_after(bytes: &[u8], at: usize, last: Option<u64>) -> Option<(usize, u64)> {
    (at + 1..bytes.len()).find_map(|offset| match parse_frame(&bytes[offset..]) {
        Ok((index, _, _)) if last.is_none_or(|last| index > last) => Some((offset, index)),
        _ => None,
    })
}
