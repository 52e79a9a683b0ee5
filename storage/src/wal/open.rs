//! [`Wal::check`] and [`CheckedWal::open`]: every file is read and checked before any is
//! changed; then only what a crash leaves behind is repaired (the rules are in the `wal`
//! module docs).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::format::{parse_header, parse_manifest, HeaderError, Version};
use super::scan::{scan_v1, scan_v2, Verdict};
use super::segment::{Segment, REWRITE_SUFFIX};
use super::{
    damaged, segment_path, sync_dir, write_manifest, Recovery, Wal, MANIFEST_FILE, SEGMENT_SUFFIX,
};
use crate::{Result, StorageError};

/// A log read and checked at open, before anything on disk changed. Its caller may
/// check it against what it knows (the log store: the commit hint) and then
/// [`open`](CheckedWal::open) it, which repairs what a crash left.
#[derive(Debug)]
pub struct CheckedWal {
    /// The log as it will be once repaired.
    wal: Wal,
    /// The directory does not exist yet.
    create_dir: bool,
    /// The manifest to create, naming this segment (or none): the directory has none.
    create_manifest: Option<Option<u64>>,
    /// Files to remove, and why.
    removals: Vec<(PathBuf, &'static str)>,
    /// The torn append to cut off the newest segment.
    cut: Option<Cut>,
    recovery: Recovery,
}

#[derive(Debug)]
struct Cut {
    file: Arc<File>,
    path: PathBuf,
    /// Where the torn append starts: the segment's new length.
    at: u64,
}

impl Wal {
    /// Reads and checks every file of the log in `dir`, changing none. Damage, or a
    /// missing file, is a [`StorageError::Damaged`] naming the file.
    pub fn check(dir: &Path) -> Result<CheckedWal> {
        let Some(listing) = list_dir(dir)? else {
            return Ok(CheckedWal {
                wal: wal_of(dir, Vec::new()),
                create_dir: true,
                create_manifest: Some(None),
                removals: Vec::new(),
                cut: None,
                recovery: Recovery::default(),
            });
        };
        let manifest = read_manifest(dir)?;
        let mut removals: Vec<(PathBuf, &'static str)> = listing
            .rewrites
            .into_iter()
            .map(|path| (path, "a segment rewrite a crash interrupted (the segment is whole)"))
            .collect();
        let live = match manifest {
            Some(newest_segment) => {
                let (live, leftovers) = split_leftovers(dir, listing.segments, newest_segment)?;
                removals.extend(leftovers.into_iter().map(|path| {
                    (path, "a leftover of a segment creation or truncate a crash interrupted")
                }));
                live
            }
            None => listing.segments,
        };

        let mut segments: Vec<Segment> = Vec::with_capacity(live.len());
        let mut cut = None;
        let mut torn_bytes = 0;
        let num_live = live.len();
        for (position, (first_index, path)) in live.into_iter().enumerate() {
            let is_newest = position + 1 == num_live;
            let previous = segments.iter().rev().find(|segment| segment.last_index().is_some());
            let read = read_segment(first_index, path, is_newest, manifest.is_some(), previous)?;
            let (segment, torn) = match read {
                ReadSegment::Unfinished(path) => {
                    removals.push((path, "created just before a crash, before its header"));
                    continue;
                }
                ReadSegment::Read { segment, torn_bytes } => (segment, torn_bytes),
            };
            if torn > 0 {
                torn_bytes = torn;
                let (file, path) = (segment.file.clone(), segment.path.clone());
                cut = Some(Cut { file, path, at: segment.len });
            }
            if segment.indexes.is_empty() && !is_newest {
                removals.push((segment.path, "holds no record"));
                continue;
            }
            segments.push(segment);
        }

        let recovery = Recovery {
            records: segments.iter().map(|segment| segment.indexes.len() as u64).sum(),
            torn_bytes,
            removed_segments: removals
                .iter()
                .filter(|(path, _)| path.extension().is_some_and(|ext| ext == "seg"))
                .count() as u64,
        };
        // Format 1 (or a new log): the manifest names the newest segment from now on.
        let create_manifest =
            manifest.is_none().then(|| segments.last().map(|segment| segment.first_index));
        Ok(CheckedWal {
            wal: wal_of(dir, segments),
            create_dir: false,
            create_manifest,
            removals,
            cut,
            recovery,
        })
    }
}

impl CheckedWal {
    /// Returns the indexes the log will hold: first and last, or `None` for none.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        self.wal.bounds()
    }

    /// Returns what opening will repair.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Returns the log's directory.
    pub fn dir(&self) -> &Path {
        &self.wal.dir
    }

    /// Returns the file of the first segment that holds a record.
    pub fn first_segment_path(&self) -> Option<PathBuf> {
        let segments = self.wal.segments.read().unwrap_or_else(PoisonError::into_inner);
        let first = segments.iter().find(|segment| !segment.indexes.is_empty())?;
        Some(first.path.clone())
    }

    /// Returns the file of the newest segment, if any.
    pub fn newest_segment_path(&self) -> Option<PathBuf> {
        let segments = self.wal.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.last().map(|segment| segment.path.clone())
    }

    /// See [`Wal::meta_path`].
    pub fn meta_path(&self) -> PathBuf {
        self.wal.meta_path()
    }

    /// See [`Wal::read_meta`].
    pub fn read_meta(&self) -> Result<Option<Vec<u8>>> {
        self.wal.read_meta()
    }

    /// See [`Wal::read_hint`].
    pub fn read_hint(&self) -> Option<Vec<u8>> {
        self.wal.read_hint()
    }

    /// Repairs what a crash left (creates a missing manifest, removes leftover and empty
    /// segments, cuts a torn append off the newest segment) and returns the log.
    pub fn open(self) -> Result<(Wal, Recovery)> {
        let dir = self.wal.dir.clone();
        if self.create_dir {
            fs::create_dir_all(&dir)?;
            // The new directory's own entry must survive a crash too: the vote goes here.
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        // Before the removals: a format 1 directory's empty segments are then either
        // above the manifest or below its newest, and removed again if a crash
        // interrupts.
        if let Some(newest_segment) = self.create_manifest {
            write_manifest(&dir, newest_segment)?;
        }
        for (path, why) in &self.removals {
            tracing::warn!(file = %path.display(), why, "removing a file of the raft log");
            fs::remove_file(path)?;
        }
        if !self.removals.is_empty() {
            sync_dir(&dir)?;
        }
        if let Some(cut) = &self.cut {
            tracing::warn!(
                segment = %cut.path.display(),
                at = cut.at,
                torn_bytes = self.recovery.torn_bytes,
                "cutting off a torn append (never acknowledged) at the end of the raft log"
            );
            cut.file.set_len(cut.at)?;
            cut.file.sync_all()?;
        }
        Ok((self.wal, self.recovery))
    }
}

fn wal_of(dir: &Path, segments: Vec<Segment>) -> Wal {
    Wal {
        dir: dir.to_path_buf(),
        writer: Mutex::new(()),
        truncating: RwLock::new(()),
        segments: RwLock::new(segments),
        hint: Mutex::new(None),
    }
}

/// A segment file: its first index (from its name) and its path.
type SegmentFile = (u64, PathBuf);

/// The files of a log's directory that open looks at.
struct Listing {
    /// The segment files, in index order.
    segments: Vec<SegmentFile>,
    /// Rewrites of a segment that a crash left before they replaced it.
    rewrites: Vec<PathBuf>,
}

/// Lists `dir`, or returns `None` if it does not exist.
fn list_dir(dir: &Path) -> Result<Option<Listing>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut listing = Listing { segments: Vec::new(), rewrites: Vec::new() };
    for dir_entry in entries {
        let path = dir_entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        if name.ends_with(REWRITE_SUFFIX) {
            listing.rewrites.push(path);
        } else if let Some(first) = name.strip_suffix(SEGMENT_SUFFIX) {
            let first_index = first
                .parse()
                .map_err(|_| damaged(&path, "not a segment name (20 digits and `.seg`)"))?;
            listing.segments.push((first_index, path));
        }
    }
    listing.segments.sort();
    Ok(Some(listing))
}

/// Splits `segments` into those of the log, up to `newest_segment` (the one the
/// manifest names, which must be there), and leftovers above it.
///
/// Removing the leftovers is safe: a segment is named by the manifest before any record
/// goes into it, `truncate` names an older one before it removes newer ones, and `purge`
/// names none before it removes the newest; so a segment above the one named holds no
/// record (a creation interrupted), or only records a truncate or purge was removing.
fn split_leftovers(
    dir: &Path,
    segments: Vec<SegmentFile>,
    newest_segment: Option<u64>,
) -> Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    if let Some(newest) = newest_segment {
        if !segments.iter().any(|(first_index, _)| *first_index == newest) {
            return Err(damaged(
                &segment_path(dir, newest),
                "segment is missing: the manifest names it as the newest segment, so it held \
                 the latest records",
            ));
        }
    }
    let (live, leftovers): (Vec<_>, Vec<_>) = segments
        .into_iter()
        .partition(|(first_index, _)| newest_segment.is_some_and(|newest| *first_index <= newest));
    Ok((live, leftovers.into_iter().map(|(_, path)| path).collect()))
}

/// A segment of the log, read at open.
enum ReadSegment {
    /// Created just before a crash under format 1, its header incomplete: holds nothing.
    Unfinished(PathBuf),
    /// Read and checked: its records, and the bytes of a torn append to cut off it.
    Read { segment: Segment, torn_bytes: u64 },
}

/// Reads the segment file at `path` whole and checks it: its header, its records, how
/// it follows `previous` (the last segment before it that holds records), and what comes
/// after its last whole append (a torn append only in the newest segment).
fn read_segment(
    first_index: u64,
    path: PathBuf,
    is_newest: bool,
    has_manifest: bool,
    previous: Option<&Segment>,
) -> Result<ReadSegment> {
    let bytes = fs::read(&path)?;
    let header = match parse_header(&bytes, first_index) {
        Ok(header) => header,
        // Without a manifest (format 1), segments were created without one.
        Err(HeaderError::Torn) if is_newest && !has_manifest => {
            return Ok(ReadSegment::Unfinished(path))
        }
        Err(HeaderError::Unsupported(digit)) => {
            tracing::error!(segment = %path.display(), "segment of a newer format");
            let found = digit.wrapping_sub(b'0');
            return Err(StorageError::UnsupportedVersion { found, supported: 2 });
        }
        Err(error) => return Err(damaged(&path, error.to_string())),
    };
    if header.version == Version::V2 && !has_manifest {
        let manifest = path.with_file_name(MANIFEST_FILE);
        let reason = format!(
            "is missing, yet {} is a format 2 segment (one is only created once the manifest \
             exists)",
            path.display()
        );
        return Err(damaged(&manifest, reason));
    }
    let scanned = match header.version {
        Version::V1 => scan_v1(&bytes, first_index),
        Version::V2 => scan_v2(&bytes, first_index),
    };
    if let Some(tail) = &scanned.tail {
        if let Verdict::Damaged(why) = &tail.verdict {
            return Err(damaged(&path, format!("{} ({why})", tail.reason)));
        }
        if !is_newest {
            let reason = format!(
                "{} (an unfinished append, yet newer segments follow, so it had been \
                 acknowledged)",
                tail.reason
            );
            return Err(damaged(&path, reason));
        }
    }
    if let Some(previous) = previous {
        check_follows(previous, first_index, header.previous_end, &path)?;
    }
    let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
    let torn_bytes = (bytes.len() - scanned.end) as u64;
    let segment = Segment {
        first_index,
        version: header.version,
        file,
        path,
        indexes: scanned.indexes,
        offsets: scanned.offsets,
        append_ends: scanned.append_ends,
        len: scanned.end as u64,
    };
    Ok(ReadSegment::Read { segment, torn_bytes })
}

/// Returns the newest segment the manifest names, or `None` if there is no manifest.
fn read_manifest(dir: &Path) -> Result<Option<Option<u64>>> {
    let path = dir.join(MANIFEST_FILE);
    match fs::read(&path) {
        // Replaced by a rename, so never torn.
        Ok(bytes) => parse_manifest(&bytes).map(Some).map_err(|reason| damaged(&path, reason)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Checks that the segment at `path` follows `previous`, the segment before it holding
/// records: its indexes come after, and (format 2) its header's previous end is right
/// after `previous` ends, so no segment was lost between them.
fn check_follows(
    previous: &Segment,
    first_index: u64,
    previous_end: Option<u64>,
    path: &Path,
) -> Result<()> {
    let previous_last = previous.last_index().expect("a segment holding records");
    if first_index <= previous_last {
        let reason = format!(
            "starts at index {first_index}, but {} holds records up to {previous_last}",
            previous.path.display()
        );
        return Err(damaged(path, reason));
    }
    match previous_end {
        Some(previous_end) if previous_end != previous_last + 1 => {
            let followed = match previous_end {
                0 => "an empty log".to_string(),
                end => format!("index {}", end - 1),
            };
            let reason = format!(
                "its header says it follows {followed}, but the segment before it, {}, ends at \
                 index {previous_last}: a segment between them is missing",
                previous.path.display()
            );
            Err(damaged(path, reason))
        }
        _ => Ok(()),
    }
}
