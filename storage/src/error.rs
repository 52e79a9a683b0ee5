use std::io;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed to read or write.
    #[error("storage engine i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The engine reported an error of its own.
    #[error("storage engine failed: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A record carries a format version this build does not know.
    #[error("record format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
}

impl From<sled::Error> for StorageError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io_error) => StorageError::Io(io_error),
            other => StorageError::Engine(other.to_string()),
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, StorageError>;
