//! Plain keys: the strings of the Redis protocol endpoint, with Redis's semantics for each
//! command, decided from the leader's clock (`now_ms`) so that every replica agrees.
//!
//! A key past its deadline counts as absent at once, whether or not `Expire` has removed
//! it yet; a write over it replaces it.

use shoal_storage::{codec, Tree, WriteBatch};

use crate::keys;
use crate::types::{
    ExpireCondition, KvCommand, KvRecord, KvReply, Rejection, Response, SetCondition, Ttl,
};

/// Reads plain key `key` as stored (its tree key is `stored`), expired or not.
pub(crate) fn read_stored(
    state: &dyn Tree,
    stored: &[u8],
) -> shoal_storage::Result<Option<KvRecord>> {
    state.get(stored)?.map(|bytes| codec::decode(&bytes, "kv record")).transpose()
}

/// Reads plain key `key` unless it is missing or expired at `now_ms`.
pub(crate) fn read_live(
    state: &dyn Tree,
    key: &[u8],
    now_ms: u64,
) -> shoal_storage::Result<Option<KvRecord>> {
    Ok(read_stored(state, &keys::kv(key))?.filter(|record| !record.is_expired(now_ms)))
}

/// Applies `command` at `now_ms` into `batch`, counting the keys it adds (negative:
/// removes) into `delta`. The batch applies against the state as it was before the
/// entry, so a command never reads what it wrote itself.
pub(crate) fn apply(
    state: &dyn Tree,
    now_ms: u64,
    command: KvCommand,
    batch: &mut WriteBatch,
    delta: &mut i64,
) -> shoal_storage::Result<Response> {
    let mut writer = Writer { state, now_ms, batch, delta };
    let reply = match command {
        KvCommand::Set { key, value, ttl, condition, get } => {
            writer.set(&key, value, ttl, condition, get)?
        }
        KvCommand::SetMany { pairs, only_new } => writer.set_many(pairs, only_new)?,
        KvCommand::Delete { keys } => writer.delete_all(keys)?,
        KvCommand::Take { key } => {
            let stored = keys::kv(&key);
            let existing = writer.live(&stored)?;
            if let Some(record) = &existing {
                writer.remove(&stored, record);
            }
            KvReply::Value(existing.map(|record| record.value))
        }
        KvCommand::Expire { key, ttl, condition, get } => {
            writer.expire(&key, ttl, condition, get)?
        }
        KvCommand::IncrBy { key, by } => match writer.incr_by(&key, by)? {
            Ok(reply) => reply,
            Err(rejection) => return Ok(Response::Rejected(rejection)),
        },
        KvCommand::Append { key, value } => writer.append(&key, &value)?,
    };
    Ok(Response::Kv(reply))
}

/// Returns the deadline `ttl` gives a key that had `current` at `now_ms`.
fn deadline(ttl: Ttl, current: Option<u64>, now_ms: u64) -> Option<u64> {
    match ttl {
        Ttl::Keep => current,
        Ttl::Clear => None,
        Ttl::In(ms) => Some(now_ms.saturating_add(ms)),
        Ttl::At(at_ms) => Some(at_ms),
    }
}

struct Writer<'a> {
    state: &'a dyn Tree,
    now_ms: u64,
    batch: &'a mut WriteBatch,
    delta: &'a mut i64,
}

impl Writer<'_> {
    /// The record under tree key `stored`, if it exists and is live.
    fn live(&self, stored: &[u8]) -> shoal_storage::Result<Option<KvRecord>> {
        Ok(read_stored(self.state, stored)?.filter(|record| !record.is_expired(self.now_ms)))
    }

    /// Stores `record` over `before` (what the tree holds, live or not); a record whose
    /// deadline has come deletes the key instead.
    fn put(&mut self, stored: &[u8], before: Option<&KvRecord>, record: KvRecord) {
        if let Some(before) = before {
            if let Some(old_deadline) = before.expires_at_ms {
                self.batch.delete(keys::kv_expiry(old_deadline, stored));
            }
        }
        if record.is_expired(self.now_ms) {
            if before.is_some() {
                self.batch.delete(stored.to_vec());
                *self.delta -= 1;
            }
            return;
        }
        if let Some(deadline) = record.expires_at_ms {
            self.batch.put(keys::kv_expiry(deadline, stored), Vec::new());
        }
        self.batch.put(stored.to_vec(), codec::encode(&record));
        if before.is_none() {
            *self.delta += 1;
        }
    }

    fn remove(&mut self, stored: &[u8], record: &KvRecord) {
        if let Some(deadline) = record.expires_at_ms {
            self.batch.delete(keys::kv_expiry(deadline, stored));
        }
        self.batch.delete(stored.to_vec());
        *self.delta -= 1;
    }

    fn set(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Ttl,
        condition: SetCondition,
        get: bool,
    ) -> shoal_storage::Result<KvReply> {
        let stored = keys::kv(key);
        let before = read_stored(self.state, &stored)?;
        let live = before.as_ref().filter(|record| !record.is_expired(self.now_ms));
        let allowed = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => live.is_none(),
            SetCondition::IfPresent => live.is_some(),
        };
        let previous = if get { live.map(|record| record.value.clone()) } else { None };
        if allowed {
            let expires_at_ms =
                deadline(ttl, live.and_then(|record| record.expires_at_ms), self.now_ms);
            self.put(&stored, before.as_ref(), KvRecord { value, expires_at_ms });
        }
        Ok(KvReply::Written { written: allowed, previous })
    }

    fn set_many(
        &mut self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        only_new: bool,
    ) -> shoal_storage::Result<KvReply> {
        let mut stored_pairs = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let stored = keys::kv(&key);
            let before = read_stored(self.state, &stored)?;
            if only_new && before.as_ref().is_some_and(|record| !record.is_expired(self.now_ms)) {
                return Ok(KvReply::Written { written: false, previous: None });
            }
            stored_pairs.push((stored, before, value));
        }
        // A key named twice: the last value wins, as in Redis, and it counts once.
        let mut seen = std::collections::HashSet::new();
        for (stored, before, value) in stored_pairs.into_iter().rev() {
            if seen.insert(stored.clone()) {
                self.put(&stored, before.as_ref(), KvRecord { value, expires_at_ms: None });
            }
        }
        Ok(KvReply::Written { written: true, previous: None })
    }

    fn delete_all(&mut self, names: Vec<Vec<u8>>) -> shoal_storage::Result<KvReply> {
        let mut deleted = 0;
        let mut seen = std::collections::HashSet::new();
        for key in names {
            let stored = keys::kv(&key);
            if !seen.insert(stored.clone()) {
                continue;
            }
            if let Some(record) = read_stored(self.state, &stored)? {
                if !record.is_expired(self.now_ms) {
                    deleted += 1;
                }
                self.remove(&stored, &record);
            }
        }
        Ok(KvReply::Count(deleted))
    }

    fn expire(
        &mut self,
        key: &[u8],
        ttl: Ttl,
        condition: ExpireCondition,
        get: bool,
    ) -> shoal_storage::Result<KvReply> {
        let stored = keys::kv(key);
        let Some(record) = self.live(&stored)? else {
            return Ok(if get { KvReply::Value(None) } else { KvReply::Count(0) });
        };
        let current = record.expires_at_ms;
        let new = deadline(ttl, current, self.now_ms);
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNone => current.is_none(),
            ExpireCondition::IfSome => current.is_some(),
            // No deadline is later than any.
            ExpireCondition::IfLater => {
                current.is_some() && new.unwrap_or(u64::MAX) > current.unwrap_or(u64::MAX)
            }
            ExpireCondition::IfEarlier => new.unwrap_or(u64::MAX) < current.unwrap_or(u64::MAX),
        };
        // PERSIST answers 0 for a key without a deadline, and changes nothing.
        let changes = allowed && !(ttl == Ttl::Clear && current.is_none());
        let value = get.then(|| record.value.clone());
        if changes {
            let updated = KvRecord { value: record.value.clone(), expires_at_ms: new };
            self.put(&stored, Some(&record), updated);
        }
        Ok(match value {
            Some(value) => KvReply::Value(Some(value)),
            None => KvReply::Count(u64::from(changes)),
        })
    }

    fn incr_by(
        &mut self,
        key: &[u8],
        by: i64,
    ) -> shoal_storage::Result<Result<KvReply, Rejection>> {
        let stored = keys::kv(key);
        let before = read_stored(self.state, &stored)?;
        let live = before.as_ref().filter(|record| !record.is_expired(self.now_ms));
        let current = match live {
            None => 0,
            Some(record) => match parse_integer(&record.value) {
                Some(value) => value,
                None => return Ok(Err(Rejection::NotAnInteger)),
            },
        };
        let Some(next) = current.checked_add(by) else { return Ok(Err(Rejection::Overflow)) };
        let expires_at_ms = live.and_then(|record| record.expires_at_ms);
        let record = KvRecord { value: next.to_string().into_bytes(), expires_at_ms };
        self.put(&stored, before.as_ref(), record);
        Ok(Ok(KvReply::Integer(next)))
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> shoal_storage::Result<KvReply> {
        let stored = keys::kv(key);
        let before = read_stored(self.state, &stored)?;
        let live = before.as_ref().filter(|record| !record.is_expired(self.now_ms));
        let (mut joined, expires_at_ms) = match live {
            Some(record) => (record.value.clone(), record.expires_at_ms),
            None => (Vec::new(), None),
        };
        joined.extend_from_slice(value);
        let length = i64::try_from(joined.len()).unwrap_or(i64::MAX);
        self.put(&stored, before.as_ref(), KvRecord { value: joined, expires_at_ms });
        Ok(KvReply::Integer(length))
    }
}

/// Parses a value as Redis does for `INCR`: a signed 64-bit decimal without spaces, a
/// plus sign or leading zeros.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_reads_them() {
        assert_eq!(parse_integer(b"42"), Some(42));
        assert_eq!(parse_integer(b"-7"), Some(-7));
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        for refused in [&b""[..], b" 1", b"+1", b"01", b"-0", b"1.5", b"9223372036854775808", b"-"]
        {
            assert_eq!(parse_integer(refused), None, "{:?}", String::from_utf8_lossy(refused));
        }
    }
}
