//! [`Wal::open`]: reading and checking the log's files.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::format::{parse_frame, SEGMENT_MAGIC};
use super::{corrupt, sync_dir, Recovery, Segment, Wal, SEGMENT_SUFFIX};
use crate::Result;

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
