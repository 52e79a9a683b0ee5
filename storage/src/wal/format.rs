//! The bytes of the log's files.

use crate::Result;

use super::corrupt;

/// The first bytes of every segment: the format and its version.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"shoalwl1";
/// Bytes of a record's frame before its payload: length, CRC, index.
pub(super) const FRAME_HEADER: usize = 16;
/// Bounds one record, so that a damaged length cannot ask for gigabytes.
pub(super) const MAX_RECORD_BYTES: usize = 1 << 30;

/// Parses the frame at the start of `bytes`: `None` when it is cut short, an error when
/// its checksum fails; else (index, payload, bytes used).
pub(super) fn parse_frame(bytes: &[u8]) -> Result<Option<(u64, &[u8], usize)>> {
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

pub(super) fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Frames a small file's payload: length, CRC-32, payload.
pub(super) fn frame_small(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(super) fn parse_small(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}
