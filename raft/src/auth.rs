//! Authentication of `/internal/*` requests: an HMAC-SHA256 under the cluster secret over
//! the method, path, timestamp and body.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header carrying the sender's clock, in Unix milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-shoal-timestamp";
/// The header carrying the hex HMAC.
pub const SIGNATURE_HEADER: &str = "x-shoal-signature";
/// Requests signed further than this from the receiver's clock are refused as stale.
pub const MAX_SKEW_MS: u64 = 30_000;

/// The secret every member of a cluster shares.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why an internal request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is not signed")]
    Unsigned,
    #[error("the request's timestamp is too far from this node's clock")]
    Stale,
    #[error("the request's signature does not match")]
    Forged,
}

/// Returns `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Parses hex into bytes; `None` unless it is an even number of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl ClusterSecret {
    /// Returns the secret made of `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into().into())
    }

    /// Returns a random secret: a node alone, whose internal endpoints nobody may call.
    pub fn random() -> Self {
        Self::new(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(&self, method: &str, path: &str, timestamp_ms: u64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(format!("{method}\n{path}\n{timestamp_ms}\n").as_bytes());
        mac.update(body);
        mac
    }

    /// Returns the hex signature of a request.
    pub fn sign(&self, method: &str, path: &str, timestamp_ms: u64, body: &[u8]) -> String {
        hex(&self.mac(method, path, timestamp_ms, body).finalize().into_bytes())
    }

    /// Checks a request's headers against its method, path and body at `now_ms`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), AuthError> {
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(AuthError::Unsigned);
        };
        let timestamp_ms: u64 = timestamp.parse().map_err(|_| AuthError::Unsigned)?;
        if timestamp_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(AuthError::Stale);
        }
        let signature = unhex(signature).ok_or(AuthError::Forged)?;
        self.mac(method, path, timestamp_ms, body)
            .verify_slice(&signature)
            .map_err(|_| AuthError::Forged)
    }

    /// Derives a 32-byte key for `purpose` (e.g. signing download links), so that every
    /// node of the cluster derives the same one.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(b"shoal key derivation\n");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_unsigned_stale_and_forged() {
        let secret = ClusterSecret::new(b"s3cret".to_vec());
        let signature = secret.sign("POST", "/internal/raft/vote", 1_000_000, b"body");
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            secret.verify("POST", "/internal/raft/vote", ts, sig, body, now)
        };
        assert_eq!(check(Some("1000000"), Some(&signature), b"body", 1_010_000), Ok(()));
        assert_eq!(check(None, Some(&signature), b"body", 1_000_000), Err(AuthError::Unsigned));
        assert_eq!(check(Some("1000000"), None, b"body", 1_000_000), Err(AuthError::Unsigned));
        assert_eq!(
            check(Some("1000000"), Some(&signature), b"body", 1_040_001),
            Err(AuthError::Stale)
        );
        assert_eq!(
            check(Some("1000000"), Some(&signature), b"bodY", 1_000_000),
            Err(AuthError::Forged)
        );
        assert_eq!(
            check(Some("1000001"), Some(&signature), b"body", 1_000_000),
            Err(AuthError::Forged)
        );
        let other = ClusterSecret::new(b"other".to_vec());
        assert_eq!(
            other.verify(
                "POST",
                "/internal/raft/vote",
                Some("1000000"),
                Some(&signature),
                b"body",
                1_000_000
            ),
            Err(AuthError::Forged)
        );
        assert_ne!(secret.derive("downloads"), other.derive("downloads"));
        assert_ne!(secret.derive("downloads"), secret.derive("other"));
    }
}
