//! The bytes of the log's files: segment headers, record frames, end-of-append markers
//! and the manifest (the layout and the rule for changing it are in the `wal` module docs).

use std::fmt;

/// The first bytes of a segment written by builds before end-of-append markers.
pub(super) const SEGMENT_MAGIC_V1: &[u8; 8] = b"shoalwl1";
/// The first bytes of a segment of the current format.
pub(super) const SEGMENT_MAGIC_V2: &[u8; 8] = b"shoalwl2";
/// What every segment format's magic starts with; its last byte is the version digit.
const SEGMENT_MAGIC_STEM: &[u8; 7] = b"shoalwl";
/// A v2 header: magic, first index, previous end, CRC-32 of the bytes before it.
pub(super) const V2_HEADER_LEN: usize = 28;
/// Bytes of a record's frame before its payload: length, CRC, index.
pub(super) const FRAME_HEADER: usize = 16;
/// Bounds one record, so that a damaged length cannot ask for gigabytes.
pub(super) const MAX_RECORD_BYTES: usize = 1 << 30;
/// The first bytes of an end-of-append marker. Read as a record's length they exceed
/// [`MAX_RECORD_BYTES`], so a marker is never taken for a record.
pub(super) const MARKER_MAGIC: [u8; 8] = *b"\xff\xffAPPEND";
/// A marker: magic, last index of the append, offset where the append starts, CRC-32.
pub(super) const MARKER_LEN: usize = 28;
/// The version of the manifest's payload this build writes and reads.
const MANIFEST_VERSION: u8 = 1;

const _: () = assert!(
    u32::from_le_bytes([MARKER_MAGIC[0], MARKER_MAGIC[1], MARKER_MAGIC[2], MARKER_MAGIC[3]])
        as usize
        > MAX_RECORD_BYTES
);

/// The format of one segment file, told by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// No end-of-append markers, no previous end (builds before markers).
    V1,
    /// End-of-append markers; the header records the previous segment's end.
    V2,
}

impl Version {
    /// Returns the bytes of the segment header, where the first record starts.
    pub(super) fn header_len(self) -> usize {
        match self {
            Version::V1 => SEGMENT_MAGIC_V1.len(),
            Version::V2 => V2_HEADER_LEN,
        }
    }
}

/// A segment's header, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) version: Version,
    /// The last index held before this segment, plus one; 0 when the log held nothing
    /// (v2). `None` for v1, which does not record it.
    pub(super) previous_end: Option<u64>,
}

/// Why a segment's header cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// The file holds a first part of a magic, or nothing: created, then a crash before
    /// its header was durable.
    Torn,
    /// The file does not start as a segment does, or its header fails its check.
    Damaged(String),
    /// A segment format this build does not know (written by a newer build).
    Unsupported(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Torn => f.write_str("the segment header is cut short"),
            HeaderError::Damaged(reason) => f.write_str(reason),
            HeaderError::Unsupported(digit) => write!(
                f,
                "segment format `shoalwl{}` was written by a newer build (this one reads 1 and 2)",
                char::from(*digit)
            ),
        }
    }
}

/// Returns the v2 header of the segment whose first record is `first_index`.
pub(super) fn encode_header(first_index: u64, previous_end: u64) -> [u8; V2_HEADER_LEN] {
    let mut header = [0; V2_HEADER_LEN];
    header[0..8].copy_from_slice(SEGMENT_MAGIC_V2);
    header[8..16].copy_from_slice(&first_index.to_le_bytes());
    header[16..24].copy_from_slice(&previous_end.to_le_bytes());
    let crc = crc32fast::hash(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Reads the header at the start of `bytes`, the file of segment `first_index`.
pub(super) fn parse_header(bytes: &[u8], first_index: u64) -> Result<Header, HeaderError> {
    if bytes.len() < SEGMENT_MAGIC_V1.len() {
        return match SEGMENT_MAGIC_STEM.starts_with(bytes) {
            true => Err(HeaderError::Torn),
            false => Err(HeaderError::Damaged("not a shoal log segment".to_string())),
        };
    }
    if &bytes[..8] == SEGMENT_MAGIC_V1 {
        return Ok(Header { version: Version::V1, previous_end: None });
    }
    if &bytes[..8] != SEGMENT_MAGIC_V2 {
        return match bytes[..7] == *SEGMENT_MAGIC_STEM && bytes[7].is_ascii_digit() {
            true => Err(HeaderError::Unsupported(bytes[7])),
            false => Err(HeaderError::Damaged("not a shoal log segment".to_string())),
        };
    }
    let Some(header) = bytes.get(..V2_HEADER_LEN) else {
        return Err(HeaderError::Damaged("the segment header is cut short".to_string()));
    };
    if crc32fast::hash(&header[0..24]) != read_u32(header, 24) {
        return Err(HeaderError::Damaged("the segment header fails its checksum".to_string()));
    }
    let named = read_u64(header, 8);
    if named != first_index {
        return Err(HeaderError::Damaged(format!(
            "the segment header says its first record is {named}, its name says {first_index}"
        )));
    }
    Ok(Header { version: Version::V2, previous_end: Some(read_u64(header, 16)) })
}

/// Appends the frame of record `index` to `frames`.
pub(super) fn encode_frame(frames: &mut Vec<u8>, index: u64, payload: &[u8]) {
    frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frames.extend_from_slice(&checksum(index, payload).to_le_bytes());
    frames.extend_from_slice(&index.to_le_bytes());
    frames.extend_from_slice(payload);
}

/// Why the bytes at some offset are not a whole, intact record frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The file ends inside the frame.
    CutShort,
    /// The length field is beyond any record's.
    TooLong(usize),
    /// The frame is whole but its CRC does not match: record `index`, if the index is
    /// itself intact.
    Checksum(u64),
}

impl FrameError {
    /// Describes the frame at byte `at` of a segment.
    pub(super) fn describe(self, at: usize) -> String {
        match self {
            FrameError::CutShort => format!("the record at byte {at} is cut short"),
            FrameError::TooLong(len) => {
                format!("the record at byte {at} claims a length of {len} bytes")
            }
            FrameError::Checksum(index) => {
                format!("record {index} (at byte {at}) fails its checksum")
            }
        }
    }
}

/// Parses the record frame at the start of `bytes`: (index, payload, bytes used).
pub(super) fn parse_frame(bytes: &[u8]) -> Result<(u64, &[u8], usize), FrameError> {
    if bytes.len() < FRAME_HEADER {
        return Err(FrameError::CutShort);
    }
    let len = read_u32(bytes, 0) as usize;
    let crc = read_u32(bytes, 4);
    let index = read_u64(bytes, 8);
    if len > MAX_RECORD_BYTES {
        return Err(FrameError::TooLong(len));
    }
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len).ok_or(FrameError::CutShort)?;
    if checksum(index, payload) != crc {
        return Err(FrameError::Checksum(index));
    }
    Ok((index, payload, FRAME_HEADER + len))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Returns the marker that ends an append whose records, `frames`, start at byte
/// `start` of the segment and end with record `last_index`.
pub(super) fn encode_marker(frames: &[u8], last_index: u64, start: u64) -> [u8; MARKER_LEN] {
    let mut marker = [0; MARKER_LEN];
    marker[0..8].copy_from_slice(&MARKER_MAGIC);
    marker[8..16].copy_from_slice(&last_index.to_le_bytes());
    marker[16..24].copy_from_slice(&start.to_le_bytes());
    let crc = marker_checksum(frames, &marker[0..24]);
    marker[24..28].copy_from_slice(&crc.to_le_bytes());
    marker
}

/// The CRC-32 of an append's record frames followed by its marker's first 24 bytes: a
/// marker checks out only if every byte of its append reached the disk.
fn marker_checksum(frames: &[u8], marker_head: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(frames);
    hasher.update(marker_head);
    hasher.finalize()
}

/// An end-of-append marker that checks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Marker {
    /// The index of the append's last record.
    pub(super) last_index: u64,
    /// Where the append's first record starts in the segment.
    pub(super) start: usize,
}

/// Returns whether `segment` holds a marker magic at byte `at`.
pub(super) fn is_marker_at(segment: &[u8], at: usize) -> bool {
    segment.get(at..at + MARKER_MAGIC.len()) == Some(&MARKER_MAGIC[..])
}

/// Parses the marker at byte `at` of `segment`: `None` unless it is whole, its start
/// lies before it, and its CRC (over the append it ends) matches.
pub(super) fn parse_marker(segment: &[u8], at: usize) -> Option<Marker> {
    let marker = segment.get(at..at + MARKER_LEN)?;
    if marker[0..8] != MARKER_MAGIC {
        return None;
    }
    let last_index = read_u64(marker, 8);
    let start = usize::try_from(read_u64(marker, 16)).ok().filter(|start| *start < at)?;
    (marker_checksum(&segment[start..at], &marker[0..24]) == read_u32(marker, 24))
        .then_some(Marker { last_index, start })
}

/// Returns the offset of the first marker at or after byte `from` that checks out and
/// ends an append starting at or after `trusted_end` (the end of the last append known
/// whole), looking at every offset: evidence that an append completed after `from`.
pub(super) fn find_marker(segment: &[u8], from: usize, trusted_end: usize) -> Option<usize> {
    marker_magics(segment, from).find(|candidate| {
        parse_marker(segment, *candidate).is_some_and(|marker| marker.start >= trusted_end)
    })
}

/// Returns the offsets at or after `from` where `segment` holds a marker magic, whether or
/// not a marker that checks out follows it.
pub(super) fn marker_magics(segment: &[u8], from: usize) -> impl Iterator<Item = usize> + '_ {
    let tail = segment.get(from..).unwrap_or_default();
    tail.windows(MARKER_MAGIC.len())
        .enumerate()
        .filter(|(_, window)| *window == MARKER_MAGIC)
        .map(move |(offset, _)| from + offset)
}

/// Returns the manifest's bytes: the newest segment's first index, or none.
pub(super) fn encode_manifest(newest_segment: Option<u64>) -> Vec<u8> {
    let mut payload = vec![MANIFEST_VERSION, u8::from(newest_segment.is_some())];
    payload.extend_from_slice(&newest_segment.unwrap_or(0).to_le_bytes());
    frame_small(&payload)
}

/// Reads the manifest's bytes back: the newest segment's first index, or none.
pub(super) fn parse_manifest(bytes: &[u8]) -> Result<Option<u64>, String> {
    let payload = parse_small(bytes).ok_or("the manifest fails its checksum")?;
    match payload {
        [MANIFEST_VERSION, 0, ..] if payload.len() == 10 => Ok(None),
        [MANIFEST_VERSION, 1, ..] if payload.len() == 10 => Ok(Some(read_u64(payload, 2))),
        [MANIFEST_VERSION, ..] => Err("the manifest holds an unknown value".to_string()),
        [version, ..] => Err(format!(
            "manifest version {version} was written by a newer build (this one reads \
             {MANIFEST_VERSION})"
        )),
        [] => Err("the manifest is empty".to_string()),
    }
}

/// Frames a small file's payload: length, CRC-32, payload.
pub(super) fn frame_small(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads a small file framed by [`frame_small`]: `None` when torn or damaged.
pub(super) fn parse_small(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
