use std::io;
use std::path::PathBuf;

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
    /// A file of the Raft log is damaged, or missing: acknowledged writes may be lost, so
    /// the node must not start on it. The message names the file and what to do.
    #[error(
        "raft log damaged: {}: {reason}. This replica cannot be trusted: rebuild it from \
         the cluster with `shoal reset-replica` and start the node again (it rejoins by \
         snapshot); a single-node cluster has no other copy: restore the data dir from a \
         backup",
        path.display()
    )]
    Damaged {
        /// The damaged or missing file (or the log's directory, when no one file is).
        path: PathBuf,
        /// What is wrong, in the terms of the log's format.
        reason: String,
    },
    /// A record carries a format level this build does not read: written by a newer build
    /// (or damaged).
    #[error(
        "record format level {found} is not one this build reads (1 to {supported}): it was written by a newer shoal; upgrade this node"
    )]
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

impl StorageError {
    /// Returns whether the local replica is damaged and must be rebuilt or restored
    /// (retrying cannot help).
    pub fn is_damaged(&self) -> bool {
        matches!(self, StorageError::Damaged { .. })
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, StorageError>;
