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

use self::format::{
    checksum, frame_small, parse_frame, parse_small, FRAME_HEADER, MAX_RECORD_BYTES, SEGMENT_MAGIC,
};
use crate::{Result, StorageError};

/// A new segment starts once the current one holds this much.
const SEGMENT_TARGET_BYTES: u64 = 4 * 1024 * 1024;
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";
const HINT_FILE: &str = "hint";
pub(super) const SEGMENT_SUFFIX: &str = ".seg";

mod format;
mod open;
#[cfg(test)]
mod tests;

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
