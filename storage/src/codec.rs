//! Record encoding: one format-level byte followed by the postcard encoding.
//!
//! Every record shoal writes to disk or sends between nodes goes through [`encode`]
//! and [`decode`]. The rule that lets formats grow without breaking what older builds
//! wrote, or what they can read during a rolling upgrade, is in `docs/formats.md`:
//!
//! - A build reads every level from 1 to [`READ_LEVEL`] and writes [`WRITE_LEVEL`].
//! - A struct gains a field only at its end, as [`Since<L, T>`] where `L` is the new
//!   level: the field is written at level `L` and above, and read as `T::default()` from
//!   bytes of a lower level. An enum gains a variant only at its end, and nothing
//!   produces that variant while the written level is below its level.
//! - A release raises `READ_LEVEL` first; only a later release raises `WRITE_LEVEL` to
//!   it, so every node of a cluster upgrading one release at a time reads what any
//!   other writes.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Result, StorageError};

/// The highest format level this build reads.
pub const READ_LEVEL: u8 = 2;

/// The format level this build writes: at most the `READ_LEVEL` of the release before,
/// so that a cluster in the middle of an upgrade reads everything its members write.
pub const WRITE_LEVEL: u8 = 1;

const _: () = assert!(WRITE_LEVEL <= READ_LEVEL);

thread_local! {
    /// The level of the bytes being encoded or decoded on this thread: what [`Since`]
    /// fields consult. Encoding and decoding never await, so a thread-local is exact.
    static LEVEL: Cell<u8> = const { Cell::new(WRITE_LEVEL) };
}

/// Sets [`LEVEL`] for the life of the guard, restoring the previous one after.
struct LevelGuard(u8);

impl LevelGuard {
    fn enter(level: u8) -> Self {
        LevelGuard(LEVEL.with(|current| current.replace(level)))
    }
}

impl Drop for LevelGuard {
    fn drop(&mut self) {
        LEVEL.with(|current| current.set(self.0));
    }
}

/// Encodes `value` at [`WRITE_LEVEL`]: the level byte followed by its postcard bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    encode_at(WRITE_LEVEL, value)
}

/// Encodes `value` at `level`, leaving out the [`Since`] fields of higher levels.
pub fn encode_at<T: Serialize + ?Sized>(level: u8, value: &T) -> Vec<u8> {
    let _level = LevelGuard::enter(level);
    let mut bytes = vec![level];
    // Serializing into a Vec only fails for types serde cannot describe to postcard
    // (such as maps without a known length), which is a programming error.
    postcard::to_io(value, &mut bytes).expect("record types are postcard-serializable");
    bytes
}

/// Decodes a record written by [`encode`] at any level this build reads; `what` names
/// the record in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    decode_up_to(READ_LEVEL, bytes, what)
}

/// Returns the level of encoded `bytes`.
pub fn level_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

fn decode_up_to<T: DeserializeOwned>(
    read_level: u8,
    bytes: &[u8],
    what: &'static str,
) -> Result<T> {
    let (&level, body) = bytes
        .split_first()
        .ok_or(StorageError::Corrupt { what, reason: "empty record".to_string() })?;
    if level == 0 || level > read_level {
        return Err(StorageError::UnsupportedVersion { found: level, supported: read_level });
    }
    let _level = LevelGuard::enter(level);
    postcard::from_bytes(body)
        .map_err(|error| StorageError::Corrupt { what, reason: error.to_string() })
}

/// A struct field added at format level `L`: encoded only at level `L` and above, and
/// `T::default()` when decoded from bytes of a lower level.
///
/// Only for postcard records (through [`encode`] and [`decode`]); JSON bodies gain
/// fields with `#[serde(default)]` instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Since<const L: u8, T>(pub T);

impl<const L: u8, T: Serialize> Serialize for Since<L, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if LEVEL.with(Cell::get) >= L {
            self.0.serialize(serializer)
        } else {
            // postcard writes nothing for a unit: the field is absent at this level.
            serializer.serialize_unit()
        }
    }
}

impl<'de, const L: u8, T: Deserialize<'de> + Default> Deserialize<'de> for Since<L, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        if LEVEL.with(Cell::get) >= L {
            T::deserialize(deserializer).map(Since)
        } else {
            // Bytes of a lower level hold nothing for this field: read none of them.
            drop(deserializer);
            Ok(Since(T::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_levels() {
        let bytes = encode(&("session", 42_u64));
        assert_eq!(bytes[0], WRITE_LEVEL);
        let decoded: (String, u64) = decode(&bytes, "test").unwrap();
        assert_eq!(decoded, ("session".to_string(), 42));

        let mut future = bytes.clone();
        future[0] = READ_LEVEL + 1;
        let error = decode::<(String, u64)>(&future, "test").unwrap_err();
        assert!(matches!(error, StorageError::UnsupportedVersion { .. }), "{error}");
        future[0] = 0;
        assert!(decode::<(String, u64)>(&future, "test").is_err());
        assert!(decode::<(String, u64)>(&[], "test").is_err());
        assert!(decode::<(String, u64)>(&bytes[..2], "test").is_err());
    }

    /// A record as level 1 knows it, and as a later level that added two fields.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct RecordV1 {
        name: String,
        count: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        name: String,
        count: u64,
        tags: Since<2, Vec<String>>,
        owner: Since<2, Option<u64>>,
    }

    /// A record nested in another, with a field after it: the nested `Since` fields must
    /// not swallow what follows.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        records: Vec<Record>,
        after: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OuterV1 {
        records: Vec<RecordV1>,
        after: u32,
    }

    fn record() -> Record {
        Record { name: "a".into(), count: 3, tags: Since(vec!["x".into()]), owner: Since(Some(2)) }
    }

    #[test]
    fn a_field_added_at_a_later_level_reads_old_bytes_as_its_default() {
        let old = encode_at(
            1,
            &OuterV1 { records: vec![RecordV1 { name: "a".into(), count: 3 }], after: 9 },
        );
        let read: Outer = decode_up_to(2, &old, "test").unwrap();
        let expected = Record { tags: Since(vec![]), owner: Since(None), ..record() };
        assert_eq!(read, Outer { records: vec![expected], after: 9 });
    }

    #[test]
    fn a_build_writing_the_old_level_leaves_the_new_fields_out() {
        // A build that reads level 2 but writes level 1 (the release that adds a field)
        // writes exactly what level-1 builds wrote, which they read.
        let written = encode_at(1, &Outer { records: vec![record()], after: 9 });
        let old: OuterV1 = decode_up_to(1, &written, "test").unwrap();
        assert_eq!(
            old,
            OuterV1 { records: vec![RecordV1 { name: "a".into(), count: 3 }], after: 9 }
        );

        // At level 2 the fields are written and read back.
        let written = encode_at(2, &Outer { records: vec![record()], after: 9 });
        assert_eq!(written[0], 2);
        let read: Outer = decode_up_to(2, &written, "test").unwrap();
        assert_eq!(read, Outer { records: vec![record()], after: 9 });
        // A level-1 build refuses level-2 bytes instead of misreading them.
        assert!(matches!(
            decode_up_to::<OuterV1>(1, &written, "test"),
            Err(StorageError::UnsupportedVersion { found: 2, supported: 1 })
        ));
    }
}
