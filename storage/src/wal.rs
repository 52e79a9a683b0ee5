//! [`Wal`]: an append-only log of numbered records in segment files, the storage of the
//! Raft log.
//!
//! A log on an ordered key-value engine pays for a B-tree update and a transaction commit
//! on every append, for data that is only appended, read back in order and dropped from
//! the front. Here an append is one `pwrite` and one `fdatasync`, and dropping the front
//! deletes whole files (docs/decisions.md has the profile that asked for it).
//!
//! The directory holds:
//! - `<first index, 20 digits>.seg`: a header ([`SEGMENT_MAGIC`]), then records in index
//!   order, each framed as payload length (u32 LE), CRC-32 of index and payload (u32 LE),
//!   index (u64 LE), payload.
//! - `meta`: the caller's durable metadata, replaced atomically (written to `meta.tmp`,
//!   fsynced, renamed, the directory fsynced).
//! - `hint`: metadata that may be lost or stale (openraft's committed index), overwritten
//!   in place without fsync and CRC-checked: a torn copy reads as none.
//!
//! Recovery reads and checks every segment at open. A torn record at the end of the last
//! segment (a crash during an append, which was never acknowledged) is cut off; damage
//! anywhere else is an error, never skipped.
//!
//! Contract: indexes only increase (openraft's own log has no gaps, but its storage
//! suite writes some); mutations (`append`, `truncate`, `purge`) come from one caller at
//! a time (a lock enforces it); reads may run beside them and see every record whose
//! append has returned.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::{Result, StorageError};

/// The first bytes of every segment: the format and its version.
const SEGMENT_MAGIC: &[u8; 8] = b"shoalwl1";
/// Bytes of a record's frame before its payload: length, CRC, index.
const FRAME_HEADER: usize = 16;
/// A new segment starts once the current one holds this much.
const SEGMENT_TARGET_BYTES: u64 = 4 * 1024 * 1024;
/// Bounds one record, so that a damaged length cannot ask for gigabytes.
const MAX_RECORD_BYTES: usize = 1 << 30;
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";
const HINT_FILE: &str = "hint";
const SEGMENT_SUFFIX: &str = ".seg";

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records read back.
    pub records: u64,
    /// Bytes of a torn record cut off the end of the last segment.
    pub torn_bytes: u64,
}

/// The append-only log of one directory.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Held by `append`, `truncate` and `purge` for their whole run.
    writer: Mutex<()>,
    segments: RwLock<Vec<Segment>>,
    /// The hint file, opened at its first write.
    hint: Mutex<Option<File>>,
}

#[derive(Debug, Clone)]
struct Segment {
    /// The index of the segment's first record (also its file name).
    first_index: u64,
    file: Arc<File>,
    path: PathBuf,
    /// The index of each record, in order.
    indexes: Vec<u64>,
    /// Where each record's frame starts.
    offsets: Vec<u64>,
    /// The file's length: the end of the last record.
    len: u64,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        self.indexes.last().copied()
    }

    /// Returns the positions of the records with indexes in `from..to`.
    fn positions(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let start = self.indexes.partition_point(|index| *index < from);
        let end = self.indexes.partition_point(|index| *index < to);
        start..end.max(start)
    }

    fn frame_end(&self, position: usize) -> u64 {
        self.offsets.get(position + 1).copied().unwrap_or(self.len)
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing), checking every record.
    pub fn open(dir: &Path) -> Result<(Self, Recovery)> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            // The new directory's own entry must survive a crash too: the vote goes here.
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for dir_entry in fs::read_dir(dir)? {
            let path = dir_entry?.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
            if let Some(first) = name.strip_suffix(SEGMENT_SUFFIX) {
                let first_index =
                    first.parse().map_err(|_| corrupt(format!("{name}: not a segment name")))?;
                names.push((first_index, path));
            }
        }
        names.sort();
        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let num_segments = names.len();
        for (position, (first_index, path)) in names.into_iter().enumerate() {
            let is_last = position + 1 == num_segments;
            let segment = read_segment(first_index, path, is_last, &mut recovery)?;
            if segment.indexes.is_empty() {
                // Holds nothing: a segment created just before a crash, or an empty one
                // whose removal (when a segment replaced it) was not yet durable.
                fs::remove_file(&segment.path)?;
                sync_dir(dir)?;
                continue;
            }
            if let Some(previous) = segments.last() {
                if previous.last_index().is_none_or(|last| last >= segment.first_index) {
                    return Err(corrupt(format!(
                        "{} does not follow {} (last record {:?})",
                        segment.path.display(),
                        previous.path.display(),
                        previous.last_index()
                    )));
                }
            }
            recovery.records += segment.indexes.len() as u64;
            segments.push(segment);
        }
        let wal = Self {
            dir: dir.to_path_buf(),
            writer: Mutex::new(()),
            segments: RwLock::new(segments),
            hint: Mutex::new(None),
        };
        Ok((wal, recovery))
    }

    /// Returns the indexes held: first and last, or `None` for an empty log.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let first = segments.iter().find_map(|segment| segment.indexes.first().copied())?;
        let last = segments.iter().rev().find_map(Segment::last_index)?;
        Some((first, last))
    }

    /// Appends `records` (index, payload) and makes them durable. Indexes must increase,
    /// from above the last one held. Blocks on the disk: call it off the async threads.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<()> {
        let Some(&(first_new, _)) = records.first() else { return Ok(()) };
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, last)) = self.bounds().filter(|(_, last)| *last >= first_new) {
            return Err(invalid(format!("append at {first_new}, not after {last}")));
        }
        let mut frames = Vec::with_capacity(
            records.iter().map(|(_, payload)| FRAME_HEADER + payload.len()).sum(),
        );
        let mut relative_offsets = Vec::with_capacity(records.len());
        for (position, (index, payload)) in records.iter().enumerate() {
            if position > 0 && *index <= records[position - 1].0 {
                return Err(invalid(format!("records out of order at {index}")));
            }
            if payload.len() > MAX_RECORD_BYTES {
                return Err(invalid(format!("record {index} has {} bytes", payload.len())));
            }
            relative_offsets.push(frames.len() as u64);
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frames.extend_from_slice(&checksum(*index, payload).to_le_bytes());
            frames.extend_from_slice(&index.to_le_bytes());
            frames.extend_from_slice(payload);
        }

        // The segment to append to, and where its end is: the last one unless it is full
        // (an empty last segment must start where this append starts).
        let active = {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            segments
                .last()
                .filter(|segment| segment.len < SEGMENT_TARGET_BYTES)
                .filter(|segment| !segment.indexes.is_empty() || segment.first_index == first_new)
                .map(|segment| (segment.file.clone(), segment.len))
        };
        let (file, end) = match active {
            Some(active) => active,
            None => {
                let segment = self.create_segment(first_new)?;
                (segment.file, segment.len)
            }
        };
        file.write_all_at(&frames, end)?;
        file.sync_data()?;

        let mut segments = self.segments.write().unwrap_or_else(PoisonError::into_inner);
        let segment = segments.last_mut().expect("the active segment is listed");
        segment.indexes.extend(records.iter().map(|(index, _)| *index));
        segment.offsets.extend(relative_offsets.into_iter().map(|offset| end + offset));
        segment.len = end + frames.len() as u64;
        Ok(())
    }

    /// Returns the records held with indexes in `from..to`, in order.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        // Which byte ranges of which files, found under the lock, read outside it.
        let mut spans = Vec::new();
        {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            for segment in segments.iter() {
                let positions = segment.positions(from, to);
                if positions.is_empty() {
                    continue;
                }
                let begin_at = segment.offsets[positions.start];
                let end_at = segment.frame_end(positions.end - 1);
                let indexes = segment.indexes[positions].to_vec();
                spans.push((segment.file.clone(), begin_at, end_at, indexes));
            }
        }
        let mut records = Vec::new();
        for (file, begin_at, end_at, indexes) in spans {
            let mut bytes = vec![0; (end_at - begin_at) as usize];
            file.read_exact_at(&mut bytes, begin_at)?;
            let mut rest = bytes.as_slice();
            for expected in indexes {
                let (index, payload, used) = parse_frame(rest)?
                    .ok_or_else(|| corrupt(format!("record {expected} is cut short")))?;
                if index != expected {
                    return Err(corrupt(format!("found record {index} where {expected} belongs")));
                }
                records.push((index, payload.to_vec()));
                rest = &rest[used..];
            }
        }
        Ok(records)
    }

    /// Removes the records with indexes `from` and above, durably.
    pub fn truncate(&self, from: u64) -> Result<()> {
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut segments = self.segments.read().unwrap_or_else(PoisonError::into_inner).clone();
        // Newest first, so that a crash midway leaves a log without gaps.
        let mut removed_files = false;
        while let Some(segment) = segments.last() {
            if segment.first_index < from {
                break;
            }
            fs::remove_file(&segment.path)?;
            removed_files = true;
            segments.pop();
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        if let Some(segment) = segments.last_mut() {
            let keep = segment.indexes.partition_point(|index| *index < from);
            if keep < segment.indexes.len() {
                let cut_at = segment.offsets[keep];
                segment.file.set_len(cut_at)?;
                segment.file.sync_all()?;
                segment.indexes.truncate(keep);
                segment.offsets.truncate(keep);
                segment.len = cut_at;
            }
        }
        *self.segments.write().unwrap_or_else(PoisonError::into_inner) = segments;
        Ok(())
    }

    /// Deletes the segments that hold only records with indexes `upto` and below. Records
    /// of a segment that also holds later ones stay: the caller keeps its purge point and
    /// never reads below it.
    pub fn purge(&self, upto: u64) -> Result<()> {
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner).clone();
        // Oldest first, so that a crash midway leaves a log without gaps.
        let mut kept = Vec::with_capacity(segments.len());
        let mut removed_files = false;
        for segment in segments {
            if kept.is_empty() && segment.last_index().is_none_or(|last| last <= upto) {
                fs::remove_file(&segment.path)?;
                removed_files = true;
            } else {
                kept.push(segment);
            }
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        *self.segments.write().unwrap_or_else(PoisonError::into_inner) = kept;
        Ok(())
    }

    /// Returns the bytes of the segment files.
    pub fn size_on_disk(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.iter().map(|segment| segment.len).sum()
    }

    /// Returns the durable metadata last written by [`Wal::write_meta`].
    pub fn read_meta(&self) -> Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(META_FILE)) {
            Ok(bytes) => match parse_small(&bytes) {
                Some(payload) => Ok(Some(payload.to_vec())),
                None => Err(corrupt(format!("{} fails its checksum", META_FILE))),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces the durable metadata atomically; durable when it returns.
    pub fn write_meta(&self, payload: &[u8]) -> Result<()> {
        let tmp = self.dir.join(META_TMP_FILE);
        let file = File::create(&tmp)?;
        file.write_all_at(&frame_small(payload), 0)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(META_FILE))?;
        sync_dir(&self.dir)
    }

    /// Returns the hint last written, unless it was lost or torn.
    pub fn read_hint(&self) -> Option<Vec<u8>> {
        let bytes = fs::read(self.dir.join(HINT_FILE)).ok()?;
        parse_small(&bytes).map(<[u8]>::to_vec)
    }

    /// Overwrites the hint without fsync: it may read back older, or not at all.
    pub fn write_hint(&self, payload: &[u8]) -> Result<()> {
        let mut hint = self.hint.lock().unwrap_or_else(PoisonError::into_inner);
        let file = match &mut *hint {
            Some(file) => file,
            empty => empty.insert(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.dir.join(HINT_FILE))?,
            ),
        };
        file.write_all_at(&frame_small(payload), 0)?;
        Ok(())
    }

    fn create_segment(&self, first_index: u64) -> Result<Segment> {
        let path = self.dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"));
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        file.write_all_at(SEGMENT_MAGIC, 0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let segment = Segment {
            first_index,
            file: Arc::new(file),
            path,
            indexes: Vec::new(),
            offsets: Vec::new(),
            len: SEGMENT_MAGIC.len() as u64,
        };
        let mut segments = self.segments.write().unwrap_or_else(PoisonError::into_inner);
        // An empty last segment is replaced: it holds nothing.
        if segments.last().is_some_and(|last| last.indexes.is_empty()) {
            let empty = segments.pop().expect("checked above");
            if empty.path != segment.path {
                fs::remove_file(&empty.path)?;
                sync_dir(&self.dir)?;
            }
        }
        segments.push(segment.clone());
        Ok(segment)
    }
}

/// Reads one segment file whole, checking every record; cuts a torn tail off the last one.
fn read_segment(
    first_index: u64,
    path: PathBuf,
    is_last: bool,
    recovery: &mut Recovery,
) -> Result<Segment> {
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let bytes = fs::read(&path)?;
    let damaged = |reason: String| corrupt(format!("{}: {reason}", path.display()));
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        if is_last && SEGMENT_MAGIC.starts_with(&bytes) {
            // Created, then a crash before its header was durable: nothing is in it, and
            // `Wal::open` removes it like any segment without records.
            recovery.torn_bytes += bytes.len() as u64;
            let len = SEGMENT_MAGIC.len() as u64;
            let (indexes, offsets) = (Vec::new(), Vec::new());
            return Ok(Segment { first_index, file: Arc::new(file), path, indexes, offsets, len });
        }
        return Err(damaged("not a shoal log segment".to_string()));
    }
    let (mut indexes, mut offsets): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut at = SEGMENT_MAGIC.len();
    while at < bytes.len() {
        match parse_frame(&bytes[at..]) {
            Ok(Some((index, _, used))) => {
                let in_order = match indexes.last() {
                    Some(last) => index > *last,
                    None => index == first_index,
                };
                if !in_order {
                    return Err(damaged(format!("record {index} is out of order")));
                }
                indexes.push(index);
                offsets.push(at as u64);
                at += used;
            }
            Ok(None) | Err(_) if is_last => {
                // The end of the log: an append that never completed.
                tracing::warn!(
                    segment = %path.display(),
                    torn_bytes = bytes.len() - at,
                    "cutting off a torn record at the end of the raft log"
                );
                recovery.torn_bytes += (bytes.len() - at) as u64;
                file.set_len(at as u64)?;
                file.sync_all()?;
                break;
            }
            Ok(None) => return Err(damaged(format!("record at byte {at} is cut short"))),
            Err(error) => return Err(damaged(format!("record at byte {at}: {error}"))),
        }
    }
    Ok(Segment { first_index, file: Arc::new(file), path, indexes, offsets, len: at as u64 })
}

/// Parses the frame at the start of `bytes`: `None` when it is cut short, an error when
/// its checksum fails; else (index, payload, bytes used).
fn parse_frame(bytes: &[u8]) -> Result<Option<(u64, &[u8], usize)>> {
    if bytes.len() < FRAME_HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD_BYTES {
        return Err(corrupt(format!("record length {len}")));
    }
    let Some(payload) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else { return Ok(None) };
    if checksum(index, payload) != crc {
        return Err(corrupt(format!("record {index} fails its checksum")));
    }
    Ok(Some((index, payload, FRAME_HEADER + len)))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Frames a small file's payload: length, CRC-32, payload.
fn frame_small(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn parse_small(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn corrupt(reason: String) -> StorageError {
    StorageError::Corrupt { what: "raft log", reason }
}

fn invalid(reason: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, reason))
}

#[cfg(test)]
mod tests {
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
}
