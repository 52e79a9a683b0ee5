//! The wall clock, as the leader stamps commands with it (`Request::now_ms`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Returns the wall clock in Unix milliseconds.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
