//! Entry points for the fuzz targets (`fuzz/`) and their regression tests: each takes
//! the fuzzer's bytes and panics when a property fails.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use shoal_storage::{codec, KeyValue};

use crate::auth::{ClusterSecret, LineSigner, ReplayGuard, RequestHead, MAX_SKEW_MS};
use crate::state_machine::StoredSnapshot;
use crate::types::{Command, Entry, Response, SessionChange, SessionRecord};
use crate::{rules, BlobRecord, ProgressRecord};

/// Decodes `data` (after a byte that picks the type) as one of the records shoal keeps
/// on disk or sends between nodes: decoding never panics, and what decodes encodes to
/// bytes that decode to the same value.
pub fn stored_records(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 9 {
        0 => round_trip::<Entry>(bytes),
        1 => round_trip::<StoredSnapshot>(bytes),
        2 => round_trip::<Vec<KeyValue>>(bytes),
        3 => round_trip::<SessionRecord>(bytes),
        4 => round_trip::<ProgressRecord>(bytes),
        5 => round_trip::<BlobRecord>(bytes),
        6 => round_trip::<Command>(bytes),
        7 => round_trip::<Response>(bytes),
        _ => round_trip::<crate::once::Remembered>(bytes),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = codec::decode::<T>(bytes, "fuzzed record") else { return };
    let encoded = codec::encode(&value);
    let again: T = codec::decode(&encoded, "re-encoded record").expect("what decoded re-decodes");
    assert_eq!(codec::encode(&again), encoded, "a record changed in a round trip");
}

/// Reads `data` as a session's data and a merge patch (JSON texts split at a 0xff
/// byte, which UTF-8 never holds) and checks the patch as sessions apply it: as RFC 7396
/// defines it, idempotent, with data that reads back as written, and through
/// [`rules::update_session`] a new version exactly when the data changed.
pub fn merge_patch(data: &[u8]) {
    let mut parts = data.splitn(2, |byte| *byte == 0xff);
    let (Some(target), Some(patch)) = (parts.next(), parts.next()) else { return };
    let (Ok(target_text), Ok(patch_text)) =
        (std::str::from_utf8(target), std::str::from_utf8(patch))
    else {
        return;
    };
    let (Ok(target), Ok(patch)) =
        (serde_json::from_str::<Value>(target_text), serde_json::from_str::<Value>(patch_text))
    else {
        return;
    };
    let mut applied = target.clone();
    crate::merge_patch::apply(&mut applied, &patch);
    assert_eq!(applied, reference_merge(&target, &patch), "not RFC 7396's result");
    let mut twice = applied.clone();
    crate::merge_patch::apply(&mut twice, &patch);
    assert_eq!(twice, applied, "a merge patch applied twice changed more");
    let written = applied.to_string();
    let read_back: Value = serde_json::from_str(&written).expect("written data parses");
    assert_eq!(read_back, applied, "data changed between writing and reading it: {written}");

    if !target.is_object() {
        return;
    }
    let record = SessionRecord {
        data: target_text.to_string(),
        version: 7,
        ttl_ms: 1_000,
        created_at_ms: 0,
        expires_at_ms: 1_000,
    };
    let change = SessionChange::MergePatch(patch_text.to_string());
    let updated = rules::update_session(Some(record), 10, change, None, u64::MAX);
    match updated {
        Ok(updated) => {
            assert!(applied.is_object());
            assert_eq!(serde_json::from_str::<Value>(&updated.data).unwrap(), applied);
            let version = if updated.data == target_text { 7 } else { 8 };
            assert_eq!(updated.version, version);
            assert_eq!(updated.expires_at_ms, 1_010);
        }
        Err(rejection) => assert!(!applied.is_object(), "refused: {rejection:?}"),
    }
}

/// RFC 7396's `MergePatch(Target, Patch)` as its section 2 writes it, without mutation.
fn reference_merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else { return patch.clone() };
    let mut result = match target {
        Value::Object(target) => target.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            result.remove(name);
        } else {
            let merged = reference_merge(result.get(name).unwrap_or(&Value::Null), value);
            result.insert(name.clone(), merged);
        }
    }
    Value::Object(result)
}

/// Feeds `data` to what checks internal traffic, as a stranger without the secret
/// would: request heads from arbitrary headers, streamed lines, and nonces and clocks in
/// any order. Nothing panics, nothing forged verifies, a genuine head verifies and stops
/// verifying when any field it covers changes, and no nonce is admitted twice.
pub fn auth(data: &[u8]) {
    let secret = ClusterSecret::new(b"the cluster's secret".to_vec());
    let fields: Vec<&str> = data
        .split(|byte| *byte == 0xff)
        .map(|part| std::str::from_utf8(part).unwrap_or(""))
        .collect();
    let field = |at: usize| fields.get(at).copied().unwrap_or("");

    // A head made of the stranger's headers never verifies.
    let names = ["x-shoal-timestamp", "x-shoal-target", "x-shoal-nonce", "x-shoal-content-sha256"];
    let header = |name: &str| match names.iter().position(|known| *known == name) {
        Some(at) => Some(field(2 + at)),
        None => (name == "x-shoal-signature").then(|| field(6)),
    };
    let length = field(1).parse().ok();
    if let Ok((head, signature)) = RequestHead::parse("POST", field(0), length, header) {
        assert!(secret.verify_request(&head, signature).is_err(), "a forged head verified");
    }

    // A genuine head round-trips through its headers; changing one field breaks it.
    let body = field(7).as_bytes();
    let mut head = RequestHead::new("POST", "/internal/raft/append", 2, body);
    head.nonce = u128::from_le_bytes(digest16(data));
    let headers: HashMap<&str, String> = head.headers(&secret).into_iter().collect();
    let (parsed, signature) =
        RequestHead::parse(&head.method, &head.path_and_query, Some(head.content_length), |name| {
            headers.get(name).map(String::as_str)
        })
        .expect("a signed head parses");
    assert_eq!(parsed, head);
    secret.verify_request(&parsed, signature).expect("a genuine head verifies");
    let mut changed = parsed.clone();
    match data.first().map_or(0, |byte| byte % 6) {
        0 => changed.path_and_query.push_str(field(8).get(..1).unwrap_or("x")),
        1 => changed.target ^= 1,
        2 => changed.timestamp_ms ^= 1,
        3 => changed.nonce ^= 1,
        4 => changed.content_length ^= 1,
        _ => changed.body_digest[0] ^= 1,
    }
    assert!(secret.verify_request(&changed, signature).is_err(), "a changed head verified");

    // Streamed lines: the stranger's never verify; signed ones do, in order only.
    let mut verifier = secret.line_verifier(head.nonce);
    assert!(verifier.verify(field(9).as_bytes()).is_err(), "a forged line verified");
    let mut signer: LineSigner = secret.line_signer(head.nonce);
    let payload = field(10).replace('\n', "");
    let first = signer.sign(payload.as_bytes());
    let second = signer.sign(b"");
    assert!(verifier.verify(&second).is_err(), "a line verified out of order");
    assert_eq!(verifier.verify(&first).unwrap(), payload.as_bytes());

    replays(data);
}

/// Admits nonces from `data` at clocks from `data` (which may go back, as wall clocks
/// do): a nonce signed at one time is never admitted twice.
fn replays(data: &[u8]) {
    let guard = ReplayGuard::new(1_000_000);
    let mut admitted = HashMap::new();
    let mut now = 1_000_000_u64;
    for op in data.chunks_exact(4) {
        let nonce = u128::from(op[0] % 8);
        let offset = i64::from(i16::from_le_bytes([op[1], op[2]])) * 500;
        let timestamp = now.saturating_add_signed(offset);
        now = now.saturating_add_signed(i64::from(op[3] as i8) * 1_000);
        if guard.admit(nonce, timestamp, now).is_ok() {
            assert!(timestamp.abs_diff(now) <= MAX_SKEW_MS);
            let before = admitted.insert((nonce, timestamp), now);
            assert_eq!(before, None, "nonce {nonce} at {timestamp} admitted twice (now {now})");
        }
    }
}

fn digest16(data: &[u8]) -> [u8; 16] {
    let digest = crate::auth::body_digest(data);
    digest[..16].try_into().expect("16 bytes")
}
