//! Plain keys and their values: what the Redis protocol endpoint stores (strings with an
//! optional deadline), and the commands that change them (applied by `crate::kv`).
//!
//! Keys and values are bytes, as in Redis. Every deadline is decided by the state
//! machine from the leader's clock in the command's [`super::Request`]: a relative TTL
//! (`EX 10`) becomes a deadline only when the entry applies, the same on every replica.

use serde::{Deserialize, Serialize};

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRecord {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Unix milliseconds (leader's clock) from which the key no longer exists; `None`:
    /// it lives until deleted.
    pub expires_at_ms: Option<u64>,
}

impl KvRecord {
    /// Returns whether the key has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|deadline| deadline <= now_ms)
    }
}

/// What a write does to a key's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// Keeps the deadline the key has (`KEEPTTL`; a new key gets none).
    Keep,
    /// The key lives until deleted (`SET` without options, `PERSIST`).
    Clear,
    /// This many milliseconds after the leader's clock when the write applies.
    In(u64),
    /// At this Unix millisecond; one not in the future deletes the key.
    At(u64),
}

/// When a `Set` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// When an `Expire` applies (`EXPIRE … NX|XX|GT|LT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCondition {
    Always,
    /// Only if the key has no deadline.
    IfNone,
    /// Only if the key has a deadline.
    IfSome,
    /// Only if the new deadline is later (no deadline counts as infinitely late).
    IfLater,
    /// Only if the new deadline is earlier.
    IfEarlier,
}

/// A change to plain keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// `SET key value` with its options; `get` answers the value before (`SET … GET`).
    Set {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        ttl: Ttl,
        condition: SetCondition,
        get: bool,
    },
    /// `MSET`, or `MSETNX` when `only_new` (nothing is set unless no key exists). Every
    /// key loses its deadline.
    SetMany { pairs: Vec<(Vec<u8>, Vec<u8>)>, only_new: bool },
    /// `DEL`/`UNLINK`: answers how many existed.
    Delete { keys: Vec<Vec<u8>> },
    /// `GETDEL`: answers the value and deletes the key.
    Take {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// `EXPIRE` and kin, `PERSIST` ([`Ttl::Clear`]), `GETEX` with an option (`get`:
    /// answer the value rather than whether the deadline changed).
    Expire {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        ttl: Ttl,
        condition: ExpireCondition,
        get: bool,
    },
    /// `INCRBY` and kin: the value as a signed 64-bit decimal, plus `by`.
    IncrBy {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        by: i64,
    },
    /// `APPEND`: answers the new length.
    Append {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

impl KvCommand {
    /// Returns the one key the command changes, if it changes one only.
    pub fn single_key(&self) -> Option<&[u8]> {
        match self {
            KvCommand::Set { key, .. }
            | KvCommand::Take { key }
            | KvCommand::Expire { key, .. }
            | KvCommand::IncrBy { key, .. }
            | KvCommand::Append { key, .. } => Some(key),
            KvCommand::SetMany { .. } | KvCommand::Delete { .. } => None,
        }
    }
}

impl KvCommand {
    /// Returns the bytes of keys and values the command carries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            KvCommand::Set { key, value, .. } | KvCommand::Append { key, value } => {
                key.len() + value.len()
            }
            KvCommand::SetMany { pairs, .. } => {
                pairs.iter().map(|(key, value)| key.len() + value.len()).sum()
            }
            KvCommand::Delete { keys } => keys.iter().map(Vec::len).sum(),
            KvCommand::Take { key }
            | KvCommand::Expire { key, .. }
            | KvCommand::IncrBy { key, .. } => key.len(),
        }
    }
}

/// The state machine's answer to a [`KvCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// `Set` and `SetMany`: whether the write happened, and the value before when asked.
    Written {
        written: bool,
        #[serde(with = "serde_bytes")]
        previous: Option<Vec<u8>>,
    },
    /// `Delete`: how many keys went; `Expire` without `get`: 1 if the deadline changed.
    Count(u64),
    /// `Take`, and `Expire` with `get`: the value (before the change), if the key existed.
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    /// `IncrBy`: the new value; `Append`: the new length.
    Integer(i64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_storage::codec;

    /// The records as every build before `serde_bytes` described them: byte strings one
    /// element at a time.
    #[derive(Serialize, Deserialize)]
    struct RecordAsSequence {
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
    }

    #[derive(Serialize, Deserialize)]
    enum ReplyAsSequence {
        Written { written: bool, previous: Option<Vec<u8>> },
        Count(u64),
        Value(Option<Vec<u8>>),
    }

    #[derive(Serialize, Deserialize)]
    enum CommandAsSequence {
        Set { key: Vec<u8>, value: Vec<u8>, ttl: Ttl, condition: SetCondition, get: bool },
    }

    #[test]
    fn byte_strings_encode_as_they_always_did() {
        let value: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let record = KvRecord { value: value.clone(), expires_at_ms: Some(5) };
        let old = RecordAsSequence { value: value.clone(), expires_at_ms: Some(5) };
        assert_eq!(codec::encode(&record), codec::encode(&old));
        let back: KvRecord = codec::decode(&codec::encode(&old), "record").unwrap();
        assert_eq!(back, record);

        let key = b"session:1".to_vec();
        let set = KvCommand::Set {
            key: key.clone(),
            value: value.clone(),
            ttl: Ttl::Keep,
            condition: SetCondition::IfAbsent,
            get: true,
        };
        let old = CommandAsSequence::Set {
            key,
            value: value.clone(),
            ttl: Ttl::Keep,
            condition: SetCondition::IfAbsent,
            get: true,
        };
        assert_eq!(codec::encode(&set), codec::encode(&old));
        assert_eq!(codec::decode::<KvCommand>(&codec::encode(&old), "command").unwrap(), set);

        for (new, old) in [
            (KvReply::Value(Some(value.clone())), ReplyAsSequence::Value(Some(value.clone()))),
            (KvReply::Value(None), ReplyAsSequence::Value(None)),
            (
                KvReply::Written { written: true, previous: Some(b"v".to_vec()) },
                ReplyAsSequence::Written { written: true, previous: Some(b"v".to_vec()) },
            ),
        ] {
            assert_eq!(codec::encode(&new), codec::encode(&old));
            assert_eq!(codec::decode::<KvReply>(&codec::encode(&old), "reply").unwrap(), new);
        }
    }
}
