//! Authentication between the nodes of a cluster, all under keys derived from the one
//! cluster secret (docs/threat-model.md says what it protects against):
//!
//! - **Requests** to `/internal/*` carry an HMAC-SHA256 of their *head*: method, path and
//!   query, the node they are meant for, a timestamp, a random nonce, the declared body
//!   length and the body's SHA-256. A receiver decides from the head alone (before
//!   reading a byte of the body) whether the request is genuine, fresh, meant for it,
//!   never seen before ([`ReplayGuard`]) and within the endpoint's size limit; then it
//!   checks the body against its digest.
//! - **Responses** carry an HMAC of the request's nonce, their status and their body's
//!   digest, so a caller accepts an answer only from a holder of the secret, and only for
//!   the request it sent. Streamed responses sign every line ([`LineSigner`]).
//! - **Gossip datagrams** carry a MAC under a key of their own (see `shoal-node`'s gossip
//!   transport), built from [`ClusterSecret::gossip_tag`].
//!
//! Each use has its own key, so a signature made for one can never pass for another.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::types::NodeId;

/// The header carrying the sender's clock, in Unix milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-shoal-timestamp";
/// The header carrying the request's random nonce (32 hex digits).
pub const NONCE_HEADER: &str = "x-shoal-nonce";
/// The header naming the node id a request is meant for.
pub const TARGET_HEADER: &str = "x-shoal-target";
/// The header carrying the SHA-256 of the body (64 hex digits).
pub const DIGEST_HEADER: &str = "x-shoal-content-sha256";
/// The header carrying the hex HMAC, on requests and on responses.
pub const SIGNATURE_HEADER: &str = "x-shoal-signature";
/// Requests signed further than this from the receiver's clock are refused as stale, and
/// a receiver remembers every nonce for this long.
pub const MAX_SKEW_MS: u64 = 30_000;

/// Bytes of a streamed line's tag, and of a gossip datagram's.
pub const TAG_BYTES: usize = 16;

/// A 128-bit random value that makes a signed request unique.
pub type Nonce = u128;

/// The secret every member of a cluster shares, and the keys derived from it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<Keys>);

struct Keys {
    secret: Vec<u8>,
    requests: [u8; 32],
    responses: [u8; 32],
    stream_lines: [u8; 32],
    gossip: [u8; 32],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why an internal request, response or datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not signed, or a signature header is malformed")]
    Unsigned,
    #[error("the timestamp is too far from this node's clock, or older than this node's start")]
    Stale,
    #[error("the signature does not match")]
    Forged,
    #[error("signed for another node")]
    WrongTarget,
    #[error("already seen: a replay")]
    Replayed,
    #[error("the body does not match its signed digest")]
    BodyMismatch,
}

impl AuthError {
    /// Returns the reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Unsigned => "unsigned",
            AuthError::Stale => "stale",
            AuthError::Forged => "forged",
            AuthError::WrongTarget => "wrong_target",
            AuthError::Replayed => "replayed",
            AuthError::BodyMismatch => "body_mismatch",
        }
    }
}

/// Returns `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses hex into bytes; `None` unless it is an even number of hex digits.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Returns the SHA-256 of `body`.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Returns a fresh nonce from the thread's CSPRNG.
pub fn new_nonce() -> Nonce {
    rand::random()
}

/// What the signature of an internal request covers: everything a receiver needs to
/// decide before reading the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path with its query, as sent.
    pub path_and_query: String,
    /// The node the request is meant for.
    pub target: NodeId,
    pub timestamp_ms: u64,
    pub nonce: Nonce,
    /// The body's length, as `Content-Length` declares it (0 without a body).
    pub content_length: u64,
    pub body_digest: [u8; 32],
}

impl RequestHead {
    /// Returns the head of a request to send now.
    pub fn new(method: &str, path_and_query: &str, target: NodeId, body: &[u8]) -> Self {
        Self {
            method: method.to_string(),
            path_and_query: path_and_query.to_string(),
            target,
            timestamp_ms: crate::unix_millis(),
            nonce: new_nonce(),
            content_length: body.len() as u64,
            body_digest: body_digest(body),
        }
    }

    /// Returns the signed head of a received request from its method, path and headers
    /// (`header(name)` returns a header's value), with the signature it carries.
    /// `content_length` is what the request declares (`None`: no `Content-Length`).
    pub fn parse<'h>(
        method: &str,
        path_and_query: &str,
        content_length: Option<u64>,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<(Self, &'h str), AuthError> {
        let field = |name: &str| header(name).ok_or(AuthError::Unsigned);
        let timestamp_ms = field(TIMESTAMP_HEADER)?.parse().map_err(|_| AuthError::Unsigned)?;
        let target = field(TARGET_HEADER)?.parse().map_err(|_| AuthError::Unsigned)?;
        let nonce = parse_nonce(field(NONCE_HEADER)?).ok_or(AuthError::Unsigned)?;
        let body_digest = unhex(field(DIGEST_HEADER)?)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(AuthError::Unsigned)?;
        let signature = field(SIGNATURE_HEADER)?;
        let head = Self {
            method: method.to_string(),
            path_and_query: path_and_query.to_string(),
            target,
            timestamp_ms,
            nonce,
            content_length: content_length.unwrap_or(0),
            body_digest,
        };
        Ok((head, signature))
    }

    /// Returns the headers that carry this head and its signature.
    pub fn headers(&self, secret: &ClusterSecret) -> [(&'static str, String); 5] {
        [
            (TIMESTAMP_HEADER, self.timestamp_ms.to_string()),
            (TARGET_HEADER, self.target.to_string()),
            (NONCE_HEADER, format!("{:032x}", self.nonce)),
            (DIGEST_HEADER, hex(&self.body_digest)),
            (SIGNATURE_HEADER, secret.sign_request(self)),
        ]
    }
}

fn parse_nonce(text: &str) -> Option<Nonce> {
    (text.len() == 32).then(|| Nonce::from_str_radix(text, 16).ok()).flatten()
}

fn check_hex_signature(mac: Hmac<Sha256>, signature: &str) -> Result<(), AuthError> {
    let signature = unhex(signature).ok_or(AuthError::Forged)?;
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).map_err(|_| AuthError::Forged)
}

impl ClusterSecret {
    /// Returns the secret made of `bytes`, with its derived keys.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let secret = bytes.into();
        let key = |purpose: &str| derive_key(&secret, purpose);
        let keys = Keys {
            requests: key("internal requests"),
            responses: key("internal responses"),
            stream_lines: key("internal stream lines"),
            gossip: key("gossip datagrams"),
            secret,
        };
        Self(Arc::new(keys))
    }

    /// Returns a random secret: a node alone, whose internal endpoints nobody may call.
    pub fn random() -> Self {
        Self::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// Derives a 32-byte key for `purpose` (e.g. signing download links), so that every
    /// node of the cluster derives the same one.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        derive_key(&self.0.secret, purpose)
    }

    fn request_mac(&self, head: &RequestHead) -> Hmac<Sha256> {
        let mut mac = hmac_of(&self.0.requests);
        mac.update(
            format!(
                "shoal request v2\n{}\n{}\n{}\n{}\n{:032x}\n{}\n",
                head.method,
                head.path_and_query,
                head.target,
                head.timestamp_ms,
                head.nonce,
                head.content_length
            )
            .as_bytes(),
        );
        mac.update(&head.body_digest);
        mac
    }

    /// Returns the hex signature of a request head.
    pub fn sign_request(&self, head: &RequestHead) -> String {
        hex(&self.request_mac(head).finalize().into_bytes())
    }

    /// Checks a request head's signature. Freshness, target and replays are the
    /// receiver's to check ([`ReplayGuard::admit`]); the body, against the digest.
    pub fn verify_request(&self, head: &RequestHead, signature: &str) -> Result<(), AuthError> {
        check_hex_signature(self.request_mac(head), signature)
    }

    fn response_mac(&self, nonce: Nonce, status: u16, body_digest: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac = hmac_of(&self.0.responses);
        mac.update(format!("shoal response v2\n{nonce:032x}\n{status}\n").as_bytes());
        mac.update(body_digest);
        mac
    }

    /// Returns the hex signature of the answer to the request with `nonce`.
    pub fn sign_response(&self, nonce: Nonce, status: u16, body_digest: &[u8; 32]) -> String {
        hex(&self.response_mac(nonce, status, body_digest).finalize().into_bytes())
    }

    /// Checks that an answer (status, body digest, signature header) was made by a
    /// holder of the secret for the request with `nonce`.
    pub fn verify_response(
        &self,
        nonce: Nonce,
        status: u16,
        body_digest: &[u8; 32],
        signature: Option<&str>,
    ) -> Result<(), AuthError> {
        let signature = signature.ok_or(AuthError::Unsigned)?;
        check_hex_signature(self.response_mac(nonce, status, body_digest), signature)
    }

    /// Returns the signer of the lines of a streamed answer to the request with `nonce`.
    pub fn line_signer(&self, nonce: Nonce) -> LineSigner {
        LineSigner { secret: self.clone(), nonce, next_line: 0 }
    }

    /// Returns the checker of the lines of a streamed answer to the request with `nonce`.
    pub fn line_verifier(&self, nonce: Nonce) -> LineVerifier {
        LineVerifier { secret: self.clone(), nonce, next_line: 0 }
    }

    fn line_tag(&self, nonce: Nonce, line_number: u64, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = hmac_of(&self.0.stream_lines);
        mac.update(format!("shoal stream line v2\n{nonce:032x}\n{line_number}\n").as_bytes());
        mac.update(payload);
        truncated(mac)
    }

    /// Returns the tag of a gossip datagram's `bytes` (everything but the tag).
    pub fn gossip_tag(&self, bytes: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = hmac_of(&self.0.gossip);
        mac.update(bytes);
        truncated(mac)
    }
}

fn hmac_of(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size")
}

fn derive_key(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut mac = hmac_of(secret);
    mac.update(b"shoal key derivation\n");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn truncated(mac: Hmac<Sha256>) -> [u8; TAG_BYTES] {
    let full = mac.finalize().into_bytes();
    full[..TAG_BYTES].try_into().expect("SHA-256 has 32 bytes")
}

/// Compares two tags in constant time.
pub fn tags_match(a: &[u8; TAG_BYTES], b: &[u8]) -> bool {
    b.len() == TAG_BYTES && a.iter().zip(b).fold(0_u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Signs the lines of a streamed answer, numbering them, so that a caller notices a line
/// forged, dropped, repeated or moved.
///
/// Wire form of a line: 32 hex digits of tag, a space, the payload, `\n`. The payload
/// must not contain `\n`; an empty payload is a heartbeat.
#[derive(Debug, Clone)]
pub struct LineSigner {
    secret: ClusterSecret,
    nonce: Nonce,
    next_line: u64,
}

impl LineSigner {
    /// Returns `payload` as the next signed line, `\n` included.
    pub fn sign(&mut self, payload: &[u8]) -> Vec<u8> {
        debug_assert!(!payload.contains(&b'\n'), "a streamed line holds no newline");
        let tag = self.secret.line_tag(self.nonce, self.next_line, payload);
        self.next_line += 1;
        let mut line = Vec::with_capacity(TAG_BYTES * 2 + 2 + payload.len());
        line.extend_from_slice(hex(&tag).as_bytes());
        line.push(b' ');
        line.extend_from_slice(payload);
        line.push(b'\n');
        line
    }
}

/// Checks the lines a [`LineSigner`] made, in order.
#[derive(Debug, Clone)]
pub struct LineVerifier {
    secret: ClusterSecret,
    nonce: Nonce,
    next_line: u64,
}

impl LineVerifier {
    /// Returns the payload of the next line (without its `\n`), or why it is refused;
    /// after a refusal the stream must be dropped.
    pub fn verify<'a>(&mut self, line: &'a [u8]) -> Result<&'a [u8], AuthError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let (tag, rest) = line.split_at_checked(TAG_BYTES * 2).ok_or(AuthError::Unsigned)?;
        let payload = rest.strip_prefix(b" ").ok_or(AuthError::Unsigned)?;
        let tag = std::str::from_utf8(tag).ok().and_then(unhex).ok_or(AuthError::Unsigned)?;
        let expected = self.secret.line_tag(self.nonce, self.next_line, payload);
        if !tags_match(&expected, &tag) {
            return Err(AuthError::Forged);
        }
        self.next_line += 1;
        Ok(payload)
    }
}

/// Refuses what is stale or seen before: remembers every admitted nonce for
/// [`MAX_SKEW_MS`], past which its timestamp would be stale anyway.
///
/// A restarted node remembers nothing, so it also refuses whatever was signed before it
/// started: a request recorded before the restart cannot be played to it again.
#[derive(Debug)]
pub struct ReplayGuard {
    started_ms: u64,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    nonces: HashSet<Nonce>,
    /// Admission order, for forgetting: (timestamp, nonce).
    order: VecDeque<(u64, Nonce)>,
    /// The latest clock reading admission was asked at.
    latest_ms: u64,
}

impl ReplayGuard {
    /// Returns a guard for a node that started at `started_ms`.
    pub fn new(started_ms: u64) -> Self {
        Self { started_ms, seen: Mutex::default() }
    }

    /// Admits `nonce` signed at `timestamp_ms` if it is fresh at `now_ms` and new; call it
    /// only once the signature has been checked, so that only members fill the memory.
    pub fn admit(&self, nonce: Nonce, timestamp_ms: u64, now_ms: u64) -> Result<(), AuthError> {
        if timestamp_ms.abs_diff(now_ms) > MAX_SKEW_MS || timestamp_ms < self.started_ms {
            return Err(AuthError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // A nonce is forgotten once stale by the latest clock reading, and what is stale
        // by it stays refused: after the clock steps back, a forgotten nonce must not
        // read as fresh again (found by fuzzing, fuzz/regressions/auth/).
        seen.latest_ms = seen.latest_ms.max(now_ms);
        let latest_ms = seen.latest_ms;
        if timestamp_ms.saturating_add(MAX_SKEW_MS) < latest_ms {
            return Err(AuthError::Stale);
        }
        // Forget what is stale by now: a replay of it is refused as stale. (Admission
        // order follows timestamps within the skew, so the front is the oldest enough.)
        while let Some(&(timestamp, old)) = seen.order.front() {
            if timestamp.saturating_add(MAX_SKEW_MS) >= latest_ms {
                break;
            }
            seen.order.pop_front();
            seen.nonces.remove(&old);
        }
        if !seen.nonces.insert(nonce) {
            return Err(AuthError::Replayed);
        }
        seen.order.push_back((timestamp_ms, nonce));
        Ok(())
    }

    /// Returns how many nonces are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).nonces.len()
    }

    /// Returns whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(body: &[u8]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path_and_query: "/internal/raft/vote".into(),
            target: 2,
            timestamp_ms: 1_000_000,
            nonce: 7,
            content_length: body.len() as u64,
            body_digest: body_digest(body),
        }
    }

    #[test]
    fn a_request_head_verifies_only_as_signed() {
        let secret = ClusterSecret::new(b"s3cret".to_vec());
        let signed = head(b"body");
        let signature = secret.sign_request(&signed);
        assert_eq!(secret.verify_request(&signed, &signature), Ok(()));
        let changed: [fn(&mut RequestHead); 7] = [
            |h| h.method = "GET".into(),
            |h| h.path_and_query.push_str("?x=1"),
            |h| h.target = 3,
            |h| h.timestamp_ms += 1,
            |h| h.nonce += 1,
            |h| h.content_length += 1,
            |h| h.body_digest = body_digest(b"bodY"),
        ];
        for change in changed {
            let mut other = signed.clone();
            change(&mut other);
            assert_eq!(secret.verify_request(&other, &signature), Err(AuthError::Forged));
        }
        let stranger = ClusterSecret::new(b"other".to_vec());
        assert_eq!(stranger.verify_request(&signed, &signature), Err(AuthError::Forged));
        assert_eq!(secret.verify_request(&signed, "zz"), Err(AuthError::Forged));
        assert_ne!(secret.derive("downloads"), stranger.derive("downloads"));
        assert_ne!(secret.derive("downloads"), secret.derive("other"));
    }

    #[test]
    fn heads_round_trip_through_their_headers() {
        let secret = ClusterSecret::new(b"s3cret".to_vec());
        let sent = RequestHead::new("POST", "/internal/raft/append", 4, b"entries");
        let headers = sent.headers(&secret);
        let header = |name: &str| {
            headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
        };
        let (received, signature) =
            RequestHead::parse("POST", "/internal/raft/append", Some(7), header).unwrap();
        assert_eq!(received, sent);
        assert_eq!(secret.verify_request(&received, signature), Ok(()));
        // A declared length other than the signed one fails the signature.
        let (lying, signature) =
            RequestHead::parse("POST", "/internal/raft/append", Some(8), header).unwrap();
        assert_eq!(secret.verify_request(&lying, signature), Err(AuthError::Forged));
        let missing = RequestHead::parse("POST", "/x", None, |name| {
            (name != NONCE_HEADER).then(|| header(name)).flatten()
        });
        assert_eq!(missing.unwrap_err(), AuthError::Unsigned);
    }

    #[test]
    fn responses_are_bound_to_their_request() {
        let secret = ClusterSecret::new(b"s3cret".to_vec());
        let digest = body_digest(b"answer");
        let signature = secret.sign_response(9, 200, &digest);
        assert_eq!(secret.verify_response(9, 200, &digest, Some(&signature)), Ok(()));
        assert_eq!(
            secret.verify_response(10, 200, &digest, Some(&signature)),
            Err(AuthError::Forged)
        );
        assert_eq!(
            secret.verify_response(9, 503, &digest, Some(&signature)),
            Err(AuthError::Forged)
        );
        let other = body_digest(b"answeR");
        assert_eq!(
            secret.verify_response(9, 200, &other, Some(&signature)),
            Err(AuthError::Forged)
        );
        assert_eq!(secret.verify_response(9, 200, &digest, None), Err(AuthError::Unsigned));
        // A request signature never passes for a response, nor the other way round.
        let request = head(b"answer");
        let request_signature = secret.sign_request(&request);
        assert!(secret.verify_response(7, 200, &digest, Some(&request_signature)).is_err());
    }

    #[test]
    fn streamed_lines_verify_in_order_only() {
        let secret = ClusterSecret::new(b"s3cret".to_vec());
        let mut signer = secret.line_signer(5);
        let lines: Vec<Vec<u8>> =
            [&b"{\"seq\":1}"[..], b"", b"{\"seq\":2}"].iter().map(|p| signer.sign(p)).collect();
        let mut verifier = secret.line_verifier(5);
        assert_eq!(verifier.verify(&lines[0]), Ok(&b"{\"seq\":1}"[..]));
        assert_eq!(verifier.verify(&lines[1]), Ok(&b""[..]));
        assert_eq!(verifier.verify(&lines[2]), Ok(&b"{\"seq\":2}"[..]));
        // Skipping, repeating or re-using a line of another request's stream fails.
        let mut skipping = secret.line_verifier(5);
        assert_eq!(skipping.verify(&lines[1]), Err(AuthError::Forged));
        let mut other_request = secret.line_verifier(6);
        assert_eq!(other_request.verify(&lines[0]), Err(AuthError::Forged));
        let mut tampered = lines[0].clone();
        let last = tampered.len() - 2;
        tampered[last] = b'9';
        assert_eq!(secret.line_verifier(5).verify(&tampered), Err(AuthError::Forged));
        assert_eq!(secret.line_verifier(5).verify(b"{\"seq\":1}\n"), Err(AuthError::Unsigned));
    }

    #[test]
    fn the_replay_guard_admits_a_nonce_once_and_refuses_stale_ones() {
        let guard = ReplayGuard::new(1_000_000);
        assert_eq!(guard.admit(1, 1_000_000, 1_000_010), Ok(()));
        assert_eq!(guard.admit(1, 1_000_000, 1_020_000), Err(AuthError::Replayed));
        assert_eq!(guard.admit(2, 1_000_000, 1_040_001), Err(AuthError::Stale), "too old");
        assert_eq!(guard.admit(3, 1_050_001, 1_000_000), Err(AuthError::Stale), "too new");
        assert_eq!(guard.admit(4, 999_999, 1_000_000), Err(AuthError::Stale), "before start");
        // Nonces are forgotten once stale: the memory stays bounded.
        for nonce in 10..20 {
            guard.admit(nonce, 1_000_100, 1_000_100).unwrap();
        }
        assert_eq!(guard.len(), 11);
        guard.admit(99, 1_040_000, 1_040_000).unwrap();
        assert_eq!(guard.len(), 1);
    }

    /// Found by fuzzing (fuzz/regressions/auth/): nonce 10 was forgotten at 1,040,000,
    /// stale by then; with the clock stepped back to 1,010,000 its replay read as fresh
    /// and new, and was admitted again.
    #[test]
    fn a_forgotten_nonce_stays_refused_after_the_clock_steps_back() {
        let guard = ReplayGuard::new(1_000_000);
        guard.admit(10, 1_000_100, 1_000_100).unwrap();
        guard.admit(11, 1_040_000, 1_040_000).unwrap();
        assert_eq!(guard.len(), 1, "nonce 10 is forgotten");
        assert_eq!(guard.admit(10, 1_000_100, 1_010_000), Err(AuthError::Stale));
        // Requests signed by the stepped-back clock itself are still admitted.
        assert_eq!(guard.admit(12, 1_010_000, 1_010_000), Ok(()));
    }
}
