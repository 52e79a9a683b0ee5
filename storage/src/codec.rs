//! Record encoding: one format-version byte followed by the postcard encoding.
//!
//! Every record shoal writes to disk or sends between nodes goes through [`encode`]
//! and [`decode`], so a future format change can be detected instead of misread.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Result, StorageError};

/// The record format this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` as the version byte followed by its postcard bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    // Serializing into a Vec only fails for types serde cannot describe to postcard
    // (such as maps without a known length), which is a programming error.
    postcard::to_io(value, &mut bytes).expect("record types are postcard-serializable");
    bytes
}

/// Decodes a record written by [`encode`]; `what` names the record in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let (&version, body) = bytes
        .split_first()
        .ok_or(StorageError::Corrupt { what, reason: "empty record".to_string() })?;
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    postcard::from_bytes(body)
        .map_err(|error| StorageError::Corrupt { what, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let bytes = encode(&("session", 42_u64));
        assert_eq!(bytes[0], FORMAT_VERSION);
        let decoded: (String, u64) = decode(&bytes, "test").unwrap();
        assert_eq!(decoded, ("session".to_string(), 42));

        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        let error = decode::<(String, u64)>(&future, "test").unwrap_err();
        assert!(matches!(error, StorageError::UnsupportedVersion { .. }), "{error}");
        assert!(decode::<(String, u64)>(&[], "test").is_err());
        assert!(decode::<(String, u64)>(&bytes[..2], "test").is_err());
    }
}
