//! Signed download links: HMAC-SHA256 over the report id and expiry, so that any node
//! holding the key can check a link without asking anyone.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shoal_raft::auth::{hex, unhex};

/// Signs and checks download links with one key.
#[derive(Clone)]
pub struct DownloadSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for DownloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadSigner { key: <redacted> }")
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match: a tampered or foreign link.
    BadSignature,
    /// The link was genuine but its time is up.
    Expired,
}

impl DownloadSigner {
    /// Returns a signer with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, id: &str, expires_unix: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(format!("download:{id}:{expires_unix}").as_bytes());
        mac
    }

    /// Returns the path and query of the link to report `id`, valid until `expires_unix`.
    pub fn link(&self, id: &str, expires_unix: u64) -> String {
        let signature = hex(&self.mac(id, expires_unix).finalize().into_bytes());
        format!("/api/downloads/{id}?expires={expires_unix}&sig={signature}")
    }

    /// Checks a link's signature (in constant time), then its expiry against `now_unix`.
    pub fn check(
        &self,
        id: &str,
        expires_unix: u64,
        signature: &str,
        now_unix: u64,
    ) -> Result<(), LinkError> {
        let signature = unhex(signature).ok_or(LinkError::BadSignature)?;
        self.mac(id, expires_unix).verify_slice(&signature).map_err(|_| LinkError::BadSignature)?;
        if expires_unix <= now_unix {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(link: &str) -> (String, u64, String) {
        let (path, query) = link.split_once('?').unwrap();
        let id = path.rsplit('/').next().unwrap().to_string();
        let mut expires = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", value) => expires = value.parse().unwrap(),
                ("sig", value) => sig = value.to_string(),
                _ => {}
            }
        }
        (id, expires, sig)
    }

    #[test]
    fn genuine_tampered_expired_and_foreign_links() {
        let signer = DownloadSigner::new([7; 32]);
        let (id, expires, sig) = parts(&signer.link("r1", 1_000));
        assert_eq!(signer.check(&id, expires, &sig, 999), Ok(()));
        assert_eq!(signer.check(&id, expires, &sig, 1_000), Err(LinkError::Expired));
        assert_eq!(signer.check("r2", expires, &sig, 999), Err(LinkError::BadSignature));
        assert_eq!(signer.check(&id, expires + 1, &sig, 999), Err(LinkError::BadSignature));
        assert_eq!(signer.check(&id, expires, "zz", 999), Err(LinkError::BadSignature));
        let foreign = DownloadSigner::new([8; 32]);
        assert_eq!(foreign.check(&id, expires, &sig, 999), Err(LinkError::BadSignature));
    }
}
