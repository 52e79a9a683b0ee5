//! [`Segment`]: what the log knows of one segment file, and how its end is cut.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{encode_marker, Version};
use super::sync_dir;
use crate::Result;

/// One segment file: its records' indexes and offsets, read at open or appended since.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    /// The index of the segment's first record (also its file name).
    pub(super) first_index: u64,
    pub(super) version: Version,
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    /// The index of each record, in order.
    pub(super) indexes: Vec<u64>,
    /// Where each record's frame starts.
    pub(super) offsets: Vec<u64>,
    /// Where each append ends: the byte after its end-of-append marker (v2 only).
    pub(super) append_ends: Vec<u64>,
    /// The end of the log's bytes in the file: after the last append.
    pub(super) len: u64,
}

impl Segment {
    pub(super) fn last_index(&self) -> Option<u64> {
        self.indexes.last().copied()
    }

    /// Returns the positions of the records with indexes in `from..to`.
    pub(super) fn positions(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let start = self.indexes.partition_point(|index| *index < from);
        let end = self.indexes.partition_point(|index| *index < to);
        start..end.max(start)
    }

    /// Returns where the frame of the record at `position` ends at the latest (the next
    /// record's start, or the end of the log's bytes).
    pub(super) fn frame_end(&self, position: usize) -> u64 {
        self.offsets.get(position + 1).copied().unwrap_or(self.len)
    }

    /// Returns where the append holding the byte at `at` starts.
    fn append_start(&self, at: u64) -> u64 {
        let appends_before = self.append_ends.partition_point(|end| *end <= at);
        match appends_before {
            0 => self.version.header_len() as u64,
            appends => self.append_ends[appends - 1],
        }
    }

    /// Removes the records from position `keep` on, durably. A v2 segment cut inside an
    /// append gets a marker after the records it keeps of that append; without one, they
    /// would read back as a torn append. That marker cannot be written in place (a crash
    /// halfway would leave neither the old marker nor the new one whole), so the segment
    /// is rewritten beside itself and renamed over (rare: only a conflicting follower
    /// truncates, and a segment is 4 MiB at most).
    pub(super) fn cut(&mut self, keep: usize, dir: &Path) -> Result<()> {
        let cut_at = self.offsets[keep];
        let append_start = self.append_start(cut_at);
        let len = if self.version == Version::V1 || append_start == cut_at {
            self.file.set_len(cut_at)?;
            self.file.sync_all()?;
            cut_at
        } else {
            let mut bytes = vec![0; cut_at as usize];
            self.file.read_exact_at(&mut bytes, 0)?;
            let kept_frames = &bytes[append_start as usize..];
            let marker = encode_marker(kept_frames, self.indexes[keep - 1], append_start);
            bytes.extend_from_slice(&marker);
            let rewrite = rewrite_path(&self.path);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&rewrite)?;
            file.write_all_at(&bytes, 0)?;
            file.sync_all()?;
            fs::rename(&rewrite, &self.path)?;
            sync_dir(dir)?;
            self.file = Arc::new(file);
            bytes.len() as u64
        };
        self.indexes.truncate(keep);
        self.offsets.truncate(keep);
        self.append_ends.retain(|end| *end <= append_start);
        if len > cut_at {
            self.append_ends.push(len);
        }
        self.len = len;
        Ok(())
    }
}

/// The name a segment's rewrite has until it is renamed over the segment.
pub(super) const REWRITE_SUFFIX: &str = ".seg.rewrite";

/// Returns where a rewrite of the segment at `path` is written before it replaces it.
pub(super) fn rewrite_path(path: &Path) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(REWRITE_SUFFIX);
    path.with_file_name(name)
}
