//! [`Wal`]: an append-only log of numbered records in segment files, the storage of the
//! Raft log.
//!
//! A log on an ordered key-value engine pays for a B-tree update and a transaction commit
//! on every append, for data that is only appended, read back in order and dropped from
//! the front. Here an append is one `pwrite` and one `fdatasync`, and dropping the front
//! deletes whole files (docs/decisions.md has the profile that asked for it).
//!
//! # Files
//!
//! - `<first index, 20 digits>.seg`: a segment, holding records in index order.
//! - `manifest`: the first index of the newest segment ever created and not truncated
//!   or purged away (or none), replaced atomically like `meta`. It is what tells a
//!   deleted last segment from a log that never had it.
//! - `meta`: the caller's durable metadata, replaced atomically (written to `meta.tmp`,
//!   fsynced, renamed, the directory fsynced).
//! - `hint`: metadata that may be lost or stale (openraft's committed index), overwritten
//!   in place without fsync and CRC-checked: a torn copy reads as none.
//! - `<first index>.seg.rewrite`: a segment being rewritten by `truncate`, until it is
//!   renamed over the segment.
//!
//! # Format 2 (all integers little-endian)
//!
//! - Segment header, 28 bytes: `shoalwl2`; the first index (u64, the same as the file
//!   name); the previous end (u64): the last index held when the segment was created,
//!   plus one, 0 when the log held nothing; CRC-32 of those 24 bytes (u32).
//! - Record frame, 16 bytes and the payload: payload length (u32, at most 2^30);
//!   CRC-32 of the index (8 bytes) and the payload (u32); index (u64); payload.
//! - End-of-append marker, 28 bytes, after the records of every append: the magic
//!   `ff ff 41 50 50 45 4e 44` (`\xff\xffAPPEND`; read as a record length it is beyond
//!   2^30, so a marker is never taken for a record); the append's last index (u64); the
//!   byte offset in the segment where the append's first record starts (u64); CRC-32 of
//!   the append's frames followed by the marker's first 24 bytes (u32). The CRC covers
//!   every byte of the append, so a marker checks out only if all of its append landed.
//! - Manifest: payload length (u32), CRC-32 of the payload (u32), payload of 10 bytes:
//!   version 1 (u8), 1 if a segment is named else 0 (u8), its first index (u64).
//!
//! Rule for changing the format: a segment format gets a new magic (`shoalwl3`, ...)
//! and is written only into new segments; a build keeps reading every older segment
//! format beside it and refuses one it does not know (a newer build's), never guesses.
//! The manifest's payload starts with its version, under the same rule. A checked-in
//! fixture of each format (`storage/tests/fixtures/`) is opened by a test. Builds before
//! format 2 refuse a data dir that holds a format 2 segment ("not a shoal log segment"):
//! a node cannot go back to them once it has appended.
//!
//! # Durability
//!
//! An append writes its frames and its marker with one `pwrite` and makes them durable
//! with one `fdatasync`: it is acknowledged when `append` returns. A new segment's header
//! is fsynced and its directory entry made durable before the manifest names it, and the
//! manifest names it before any record goes in. `truncate` and `purge` update the
//! manifest before they remove the segment it names. A `truncate` that cuts an append
//! in two gives the part it keeps a marker of its own by rewriting the segment beside
//! itself and renaming it over (a marker written in place would leave, if torn, neither
//! the old marker nor the new one valid, and the kept records with it).
//!
//! # Opening never loses data silently
//!
//! [`Wal::check`] reads and checks every file and changes none; [`CheckedWal::open`]
//! then repairs what a crash leaves, and nothing else. Any other damage is refused with
//! [`StorageError::Damaged`], naming the file; nothing is cut or removed.
//!
//! - The log is the segments up to the one the manifest names, which must exist
//!   (else "segment … is missing"). Segments above it are leftovers of a segment
//!   creation, a truncate or a purge of the whole log that a crash interrupted: they
//!   hold no record of the log (records go into a segment only once the manifest names
//!   it, and `truncate` and `purge` lower the manifest before they remove segments),
//!   and are removed.
//! - A segment's records belong to the log up to its last marker that checks out.
//!   Bytes after it that do not parse are a torn append (the crash came before its
//!   `fdatasync` returned, so it was never acknowledged) only if no marker that checks
//!   out, for an append starting at or after that last good marker, can be found at any
//!   offset after the first bad byte; then, and only in the newest segment, they are cut.
//!   A marker found there means a later append completed, so this one had been
//!   acknowledged: damage. So does a marker magic after the first bad byte that is not
//!   the file's last bytes, or whose start says its append began after another ended: a
//!   torn append is the last thing in its file, since the next append starts only once
//!   it is acknowledged. A torn write can land some pages of an append and not others
//!   (a later page durable, an earlier one not): its marker then fails its CRC, which
//!   covers the whole append, so the append is still seen as torn, and cut.
//! - Each format 2 segment's previous end must be one past the last index of the
//!   segment before it: a deleted middle segment is found even though indexes may skip
//!   (openraft's storage suite appends with gaps).
//! - Damage inside the last append cannot be told from a torn one, nor a newest
//!   segment cut at an append's end from one that ended there: only the caller's record
//!   of what was acknowledged can show them (the log store compares openraft's commit
//!   hint with the log before it lets the log be repaired, see `log_store`).
//! - Segments that hold no record and are not the newest are removed.
//!
//! # Format 1
//!
//! Builds before end-of-append markers wrote segments headed `shoalwl1` (8 bytes), then
//! the same record frames without markers, and no manifest. Such a data dir opens:
//! with no manifest and only format 1 segments (or none) the manifest is created,
//! naming the newest; every new segment is format 2, and format 1 segments are never
//! appended to (they go as they are purged). A format 1 segment has no markers to tell
//! a torn append from damage, so the old rule holds with a stricter reading: a bad
//! frame is cut off (with a warning) only in the newest segment, only when it is the
//! very last frame (its header is cut short, or its length reaches the end of the
//! file), and only when no intact record with a later index parses at any offset after
//! it. The newest segment, if its header is incomplete (created just before a crash),
//! is removed as before. A format 1 log cannot show a deleted middle segment, only
//! segments out of order, nor a deleted last segment before this build's first open
//! (the manifest covers it from then on).
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
    encode_frame, encode_header, encode_manifest, encode_marker, frame_small, parse_frame,
    parse_small, Version, FRAME_HEADER, MARKER_LEN, MAX_RECORD_BYTES, V2_HEADER_LEN,
};
use self::segment::Segment;
use crate::{Result, StorageError};

mod format;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod open;
mod scan;
mod segment;
#[cfg(test)]
mod tests;

pub use self::open::CheckedWal;

/// A new segment starts once the current one holds this much.
const SEGMENT_TARGET_BYTES: u64 = 4 * 1024 * 1024;
const MANIFEST_FILE: &str = "manifest";
const MANIFEST_TMP_FILE: &str = "manifest.tmp";
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";
const HINT_FILE: &str = "hint";
const SEGMENT_SUFFIX: &str = ".seg";

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records read back.
    pub records: u64,
    /// Bytes of a torn append cut off the end of the newest segment.
    pub torn_bytes: u64,
    /// Segment files removed: leftovers of an interrupted segment creation, truncate or
    /// purge, and segments that held no record.
    pub removed_segments: u64,
}

/// The append-only log of one directory.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Held by `append`, `truncate` and `purge` for their whole run.
    writer: Mutex<()>,
    /// Held for reading while a read finds its records' bytes and reads them, and for
    /// writing while `truncate` shortens the log: a read racing a truncate of the same
    /// records sees them as they were or as gone, never a file cut under it (a short
    /// read) or rewritten by the next append (another record where it looks). Appends
    /// write past every listed record, so they need not wait for reads.
    truncating: RwLock<()>,
    /// In index order. The last one is the one the manifest names.
    segments: RwLock<Vec<Segment>>,
    /// The hint file, opened at its first write.
    hint: Mutex<Option<File>>,
}

impl Wal {
    /// Opens the log in `dir` (created if missing): [`Wal::check`], then
    /// [`CheckedWal::open`].
    pub fn open(dir: &Path) -> Result<(Self, Recovery)> {
        Self::check(dir)?.open()
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
        let last_new = records[records.len() - 1].0;
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let held_last = self.bounds().map(|(_, last)| last);
        if let Some(last) = held_last.filter(|last| *last >= first_new) {
            return Err(invalid(format!("append at {first_new}, not after {last}")));
        }
        let mut frames = Vec::with_capacity(
            records.iter().map(|(_, payload)| FRAME_HEADER + payload.len()).sum::<usize>()
                + MARKER_LEN,
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
            encode_frame(&mut frames, *index, payload);
        }

        // The segment to append to, and where its end is: the last one unless it is full
        // or format 1 (an empty last segment must start where this append starts).
        let active = {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            segments
                .last()
                .filter(|segment| segment.version == Version::V2)
                .filter(|segment| segment.len < SEGMENT_TARGET_BYTES)
                .filter(|segment| !segment.indexes.is_empty() || segment.first_index == first_new)
                .map(|segment| (segment.file.clone(), segment.len))
        };
        let (file, end) = match active {
            Some(active) => active,
            None => {
                let previous_end = held_last.map_or(0, |last| last + 1);
                let segment = self.create_segment(first_new, previous_end)?;
                (segment.file, segment.len)
            }
        };
        let marker = encode_marker(&frames, last_new, end);
        frames.extend_from_slice(&marker);
        file.write_all_at(&frames, end)?;
        file.sync_data()?;

        let mut segments = self.segments.write().unwrap_or_else(PoisonError::into_inner);
        let segment = segments.last_mut().expect("the active segment is listed");
        segment.indexes.extend(records.iter().map(|(index, _)| *index));
        segment.offsets.extend(relative_offsets.into_iter().map(|offset| end + offset));
        segment.len = end + frames.len() as u64;
        segment.append_ends.push(segment.len);
        Ok(())
    }

    /// Returns the records held with indexes in `from..to`, in order.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let _not_truncated = self.truncating.read().unwrap_or_else(PoisonError::into_inner);
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
                let records: Vec<(u64, u64)> = segment.indexes[positions.clone()]
                    .iter()
                    .copied()
                    .zip(segment.offsets[positions].iter().map(|offset| offset - begin_at))
                    .collect();
                spans.push((segment.file.clone(), segment.path.clone(), begin_at, end_at, records));
            }
        }
        let mut records = Vec::new();
        for (file, path, begin_at, end_at, expected) in spans {
            let mut bytes = vec![0; (end_at - begin_at) as usize];
            file.read_exact_at(&mut bytes, begin_at)?;
            // Markers sit between appends: each record is parsed where it starts.
            for (expected, offset) in expected {
                let at = (begin_at + offset) as usize;
                let (index, payload, _) = parse_frame(&bytes[offset as usize..])
                    .map_err(|error| damaged(&path, error.describe(at)))?;
                if index != expected {
                    let reason = format!("found record {index} where {expected} belongs");
                    return Err(damaged(&path, reason));
                }
                records.push((index, payload.to_vec()));
            }
        }
        Ok(records)
    }

    /// Removes the records with indexes `from` and above, durably.
    pub fn truncate(&self, from: u64) -> Result<()> {
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _no_reads = self.truncating.write().unwrap_or_else(PoisonError::into_inner);
        let mut segments = self.segments.read().unwrap_or_else(PoisonError::into_inner).clone();
        let num_kept = segments.partition_point(|segment| segment.first_index < from);
        if num_kept < segments.len() {
            // The manifest first: once it names an older segment, the newer ones are
            // leftovers that the next open removes, whatever a crash leaves of them; so
            // they are gone from here on, even if removing them fails.
            write_manifest(&self.dir, segments[..num_kept].last().map(|kept| kept.first_index))?;
            let removed = segments.split_off(num_kept);
            *self.segments.write().unwrap_or_else(PoisonError::into_inner) = segments.clone();
            for segment in removed.iter().rev() {
                fs::remove_file(&segment.path)?;
            }
            sync_dir(&self.dir)?;
        }
        if let Some(segment) = segments.last_mut() {
            let keep = segment.indexes.partition_point(|index| *index < from);
            if keep < segment.indexes.len() {
                segment.cut(keep, &self.dir)?;
                *self.segments.write().unwrap_or_else(PoisonError::into_inner) = segments;
            }
        }
        Ok(())
    }

    /// Deletes the segments that hold only records with indexes `upto` and below. Records
    /// of a segment that also holds later ones stay: the caller keeps its purge point and
    /// never reads below it.
    pub fn purge(&self, upto: u64) -> Result<()> {
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut segments = self.segments.read().unwrap_or_else(PoisonError::into_inner).clone();
        let num_purged = segments
            .iter()
            .take_while(|segment| segment.last_index().is_none_or(|last| last <= upto))
            .count();
        if num_purged == 0 {
            return Ok(());
        }
        if num_purged == segments.len() {
            // The newest segment goes too: the manifest must not name it any more (and
            // once it does not, the segments are gone, even if removing them fails).
            write_manifest(&self.dir, None)?;
        }
        let purged: Vec<Segment> = segments.drain(..num_purged).collect();
        *self.segments.write().unwrap_or_else(PoisonError::into_inner) = segments;
        // Oldest first, so that a crash midway leaves a log without gaps.
        for segment in purged {
            fs::remove_file(&segment.path)?;
        }
        sync_dir(&self.dir)
    }

    /// Returns the bytes of the segment files.
    pub fn size_on_disk(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.iter().map(|segment| segment.len).sum()
    }

    /// Returns the path of the file [`Wal::write_meta`] replaces.
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(META_FILE)
    }

    /// Returns the durable metadata last written by [`Wal::write_meta`].
    pub fn read_meta(&self) -> Result<Option<Vec<u8>>> {
        match fs::read(self.meta_path()) {
            Ok(bytes) => match parse_small(&bytes) {
                Some(payload) => Ok(Some(payload.to_vec())),
                // Replaced by a rename, so never torn.
                None => Err(damaged(&self.meta_path(), "fails its checksum")),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces the durable metadata atomically; durable when it returns.
    pub fn write_meta(&self, payload: &[u8]) -> Result<()> {
        replace_file(&self.dir, META_TMP_FILE, META_FILE, &frame_small(payload))
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

    /// Creates the segment whose first record will be `first_index`, names it in the
    /// manifest, and makes it the last one; `previous_end` is the last index held plus
    /// one (0 for none).
    fn create_segment(&self, first_index: u64, previous_end: u64) -> Result<Segment> {
        let path = segment_path(&self.dir, first_index);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        file.write_all_at(&encode_header(first_index, previous_end), 0)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        // Named only once its header is durable (a named segment with a torn header would
        // read as damage), and before any record goes in (a crash before this leaves a
        // leftover that holds nothing).
        write_manifest(&self.dir, Some(first_index))?;
        let segment = Segment {
            first_index,
            version: Version::V2,
            file: Arc::new(file),
            path,
            indexes: Vec::new(),
            offsets: Vec::new(),
            append_ends: Vec::new(),
            len: V2_HEADER_LEN as u64,
        };
        let mut segments = self.segments.write().unwrap_or_else(PoisonError::into_inner);
        // An empty last segment is replaced: it holds nothing, and the manifest no longer
        // names it (if its removal is lost, the next open removes it).
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

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"))
}

/// Makes `newest_segment` the one the manifest names, durably.
fn write_manifest(dir: &Path, newest_segment: Option<u64>) -> Result<()> {
    replace_file(dir, MANIFEST_TMP_FILE, MANIFEST_FILE, &encode_manifest(newest_segment))
}

/// Replaces `dir/name` with `bytes` atomically: written to `dir/tmp_name`, fsynced,
/// renamed over, the directory fsynced.
fn replace_file(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(tmp_name);
    let file = File::create(&tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Returns the error for a damaged or missing file of the log.
fn damaged(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Damaged { path: path.to_path_buf(), reason: reason.into() }
}

fn invalid(reason: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, reason))
}
