//! The command table of strings and the key space: each command's arguments, checked as
//! Redis checks them (same errors, same texts), become an [`Op`] that `exec.rs` runs.
//! Nothing here touches the state: a command with bad arguments is refused before it
//! reaches the cluster, and changes nothing.

use bytes::Bytes;
use shoal_raft::{ExpireCondition, KvCommand, SetCondition, Ttl};

use super::reply::Reply;

/// What a command does, once its arguments are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Answered at once (an error, or nothing to look up).
    Reply(Reply),
    /// A change through Raft, and how its answer reads.
    Write(KvCommand, Render),
    /// A linearizable read.
    Read(Read),
}

/// How the state machine's answer to a write becomes a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// `SET`: `OK`, or nil when the condition failed; with `GET`, the old value.
    Set { get: bool },
    /// `SETNX`, `MSETNX`: 1 if written, else 0.
    WrittenFlag,
    /// `MSET`, `SETEX`, `PSETEX`: `OK`.
    Ok,
    /// An integer: `DEL`'s count, `EXPIRE`'s 0/1, `INCR`'s value, `APPEND`'s length.
    Integer,
    /// A value or nil: `GETDEL`, `GETEX`.
    Value,
}

/// A read of the key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Get(Bytes),
    MGet(Vec<Bytes>),
    Exists(Vec<Bytes>),
    StrLen(Bytes),
    Type(Bytes),
    /// `TTL`/`PTTL`/`EXPIRETIME`/`PEXPIRETIME`.
    Ttl(Bytes, TtlUnit),
    Keys(Bytes),
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        strings_only: Option<bool>,
    },
    DbSize,
}

/// How a deadline reads: remaining or absolute, in seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlUnit {
    Seconds,
    Millis,
    AtSeconds,
    AtMillis,
}

/// Returns the op of `name` (upper case) with `args` (after the name), or `None` for a
/// command this table does not know.
pub fn parse(name: &str, args: &[Bytes]) -> Option<Op> {
    let op = match name {
        "GET" => one_key(name, args, |key| Op::Read(Read::Get(key))),
        "SET" => set(args),
        "SETNX" => exactly(name, args, 2, |args| {
            let (key, value) = (args[0].to_vec(), args[1].to_vec());
            let command = KvCommand::Set {
                key,
                value,
                ttl: Ttl::Clear,
                condition: SetCondition::IfAbsent,
                get: false,
            };
            Op::Write(command, Render::WrittenFlag)
        }),
        "SETEX" | "PSETEX" => exactly(name, args, 3, |args| setex(name, args)),
        "GETDEL" => one_key(name, args, |key| {
            Op::Write(KvCommand::Take { key: key.to_vec() }, Render::Value)
        }),
        "GETEX" => getex(args),
        "MGET" => at_least(name, args, 1, |args| Op::Read(Read::MGet(args.to_vec()))),
        "MSET" | "MSETNX" => mset(name, args),
        "DEL" | "UNLINK" => at_least(name, args, 1, |args| {
            let keys = args.iter().map(|key| key.to_vec()).collect();
            Op::Write(KvCommand::Delete { keys }, Render::Integer)
        }),
        "EXISTS" => at_least(name, args, 1, |args| Op::Read(Read::Exists(args.to_vec()))),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => expire(name, args),
        "PERSIST" => one_key(name, args, |key| {
            let command = KvCommand::Expire {
                key: key.to_vec(),
                ttl: Ttl::Clear,
                condition: ExpireCondition::Always,
                get: false,
            };
            Op::Write(command, Render::Integer)
        }),
        "TTL" => one_key(name, args, |key| Op::Read(Read::Ttl(key, TtlUnit::Seconds))),
        "PTTL" => one_key(name, args, |key| Op::Read(Read::Ttl(key, TtlUnit::Millis))),
        "EXPIRETIME" => one_key(name, args, |key| Op::Read(Read::Ttl(key, TtlUnit::AtSeconds))),
        "PEXPIRETIME" => one_key(name, args, |key| Op::Read(Read::Ttl(key, TtlUnit::AtMillis))),
        "TYPE" => one_key(name, args, |key| Op::Read(Read::Type(key))),
        "STRLEN" => one_key(name, args, |key| Op::Read(Read::StrLen(key))),
        "INCR" => one_key(name, args, |key| incr(key, 1)),
        "DECR" => one_key(name, args, |key| incr(key, -1)),
        "INCRBY" | "DECRBY" => exactly(name, args, 2, |args| match integer(&args[1]) {
            Err(reply) => Op::Reply(reply),
            Ok(by) if name == "INCRBY" => incr(args[0].clone(), by),
            Ok(by) => match by.checked_neg() {
                Some(by) => incr(args[0].clone(), by),
                None => Op::Reply(Reply::error("ERR decrement would overflow")),
            },
        }),
        "APPEND" => exactly(name, args, 2, |args| {
            let command = KvCommand::Append { key: args[0].to_vec(), value: args[1].to_vec() };
            Op::Write(command, Render::Integer)
        }),
        "KEYS" => exactly(name, args, 1, |args| Op::Read(Read::Keys(args[0].clone()))),
        "SCAN" => at_least(name, args, 1, scan),
        "DBSIZE" => exactly(name, args, 0, |_| Op::Read(Read::DbSize)),
        _ => return None,
    };
    Some(op)
}

/// Redis's error for a command given the wrong number of arguments.
pub fn arity_error(name: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{}' command", name.to_lowercase()))
}

fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

fn invalid_expire(name: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{}' command", name.to_lowercase()))
}

fn exactly(name: &str, args: &[Bytes], count: usize, op: impl FnOnce(&[Bytes]) -> Op) -> Op {
    if args.len() == count {
        op(args)
    } else {
        Op::Reply(arity_error(name))
    }
}

fn at_least(name: &str, args: &[Bytes], count: usize, op: impl FnOnce(&[Bytes]) -> Op) -> Op {
    if args.len() >= count {
        op(args)
    } else {
        Op::Reply(arity_error(name))
    }
}

fn one_key(name: &str, args: &[Bytes], op: impl FnOnce(Bytes) -> Op) -> Op {
    exactly(name, args, 1, |args| op(args[0].clone()))
}

/// Parses a signed 64-bit decimal argument as Redis does.
pub fn integer(arg: &[u8]) -> Result<i64, Reply> {
    shoal_raft::parse_integer(arg).ok_or_else(not_an_integer)
}

/// Returns the [`Ttl`] of an expiry option: `EX`/`PX` relative, `EXAT`/`PXAT` absolute;
/// Redis refuses zero, negative and overflowing times with `invalid expire time`.
fn expiry_option(option: &str, arg: &[u8], name: &str) -> Result<Ttl, Reply> {
    let value = integer(arg)?;
    if value <= 0 {
        return Err(invalid_expire(name));
    }
    let millis = |value: i64| -> Result<u64, Reply> {
        let ms = value.checked_mul(1000).ok_or_else(|| invalid_expire(name))?;
        Ok(ms as u64)
    };
    Ok(match option {
        "EX" => Ttl::In(millis(value)?),
        "PX" => Ttl::In(value as u64),
        "EXAT" => Ttl::At(millis(value)?),
        _ => Ttl::At(value as u64),
    })
}

fn set(args: &[Bytes]) -> Op {
    if args.len() < 2 {
        return Op::Reply(arity_error("SET"));
    }
    let (mut ttl, mut condition, mut get) = (None, SetCondition::Always, false);
    let mut keep_ttl = false;
    let mut options = args[2..].iter();
    while let Some(option) = options.next() {
        let option = String::from_utf8_lossy(option).to_uppercase();
        match option.as_str() {
            "NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            "XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            "GET" => get = true,
            "KEEPTTL" if ttl.is_none() => keep_ttl = true,
            "EX" | "PX" | "EXAT" | "PXAT" if ttl.is_none() && !keep_ttl => {
                let Some(arg) = options.next() else { return Op::Reply(syntax_error()) };
                match expiry_option(&option, arg, "set") {
                    Ok(parsed) => ttl = Some(parsed),
                    Err(reply) => return Op::Reply(reply),
                }
            }
            _ => return Op::Reply(syntax_error()),
        }
    }
    let ttl = ttl.unwrap_or(if keep_ttl { Ttl::Keep } else { Ttl::Clear });
    let command =
        KvCommand::Set { key: args[0].to_vec(), value: args[1].to_vec(), ttl, condition, get };
    Op::Write(command, Render::Set { get })
}

fn setex(name: &str, args: &[Bytes]) -> Op {
    let option = if name == "SETEX" { "EX" } else { "PX" };
    match expiry_option(option, &args[1], name) {
        Err(reply) => Op::Reply(reply),
        Ok(ttl) => {
            let command = KvCommand::Set {
                key: args[0].to_vec(),
                value: args[2].to_vec(),
                ttl,
                condition: SetCondition::Always,
                get: false,
            };
            Op::Write(command, Render::Ok)
        }
    }
}

fn getex(args: &[Bytes]) -> Op {
    let Some(key) = args.first() else { return Op::Reply(arity_error("GETEX")) };
    let mut ttl = None;
    let mut options = args[1..].iter();
    while let Some(option) = options.next() {
        let option = String::from_utf8_lossy(option).to_uppercase();
        match option.as_str() {
            "PERSIST" if ttl.is_none() => ttl = Some(Ttl::Clear),
            "EX" | "PX" | "EXAT" | "PXAT" if ttl.is_none() => {
                let Some(arg) = options.next() else { return Op::Reply(syntax_error()) };
                match expiry_option(&option, arg, "getex") {
                    Ok(parsed) => ttl = Some(parsed),
                    Err(reply) => return Op::Reply(reply),
                }
            }
            _ => return Op::Reply(syntax_error()),
        }
    }
    match ttl {
        None => Op::Read(Read::Get(key.clone())),
        Some(ttl) => {
            let condition = ExpireCondition::Always;
            let command = KvCommand::Expire { key: key.to_vec(), ttl, condition, get: true };
            Op::Write(command, Render::Value)
        }
    }
}

fn mset(name: &str, args: &[Bytes]) -> Op {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Op::Reply(arity_error(name));
    }
    let pairs = args.chunks(2).map(|pair| (pair[0].to_vec(), pair[1].to_vec())).collect();
    let only_new = name == "MSETNX";
    let render = if only_new { Render::WrittenFlag } else { Render::Ok };
    Op::Write(KvCommand::SetMany { pairs, only_new }, render)
}

fn expire(name: &str, args: &[Bytes]) -> Op {
    if args.len() < 2 {
        return Op::Reply(arity_error(name));
    }
    let value = match integer(&args[1]) {
        Ok(value) => value,
        Err(reply) => return Op::Reply(reply),
    };
    let mut condition = ExpireCondition::Always;
    for option in &args[2..] {
        let option = String::from_utf8_lossy(option).to_uppercase();
        let wanted = match option.as_str() {
            "NX" => ExpireCondition::IfNone,
            "XX" => ExpireCondition::IfSome,
            "GT" => ExpireCondition::IfLater,
            "LT" => ExpireCondition::IfEarlier,
            _ => return Op::Reply(Reply::error(format!("ERR Unsupported option {option}"))),
        };
        if condition != ExpireCondition::Always && condition != wanted {
            let both_order = matches!(
                (condition, wanted),
                (ExpireCondition::IfLater, ExpireCondition::IfEarlier)
                    | (ExpireCondition::IfEarlier, ExpireCondition::IfLater)
            );
            let text = if both_order {
                "ERR GT and LT options at the same time are not compatible"
            } else {
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            };
            return Op::Reply(Reply::error(text));
        }
        condition = wanted;
    }
    let scale: i64 = if name == "EXPIRE" || name == "EXPIREAT" { 1000 } else { 1 };
    let Some(ms) = value.checked_mul(scale) else { return Op::Reply(invalid_expire(name)) };
    let ttl = if name.ends_with("AT") {
        Ttl::At(ms.max(0) as u64)
    } else if ms <= 0 {
        // A time not in the future deletes the key.
        Ttl::At(0)
    } else {
        Ttl::In(ms as u64)
    };
    Op::Write(
        KvCommand::Expire { key: args[0].to_vec(), ttl, condition, get: false },
        Render::Integer,
    )
}

fn incr(key: Bytes, by: i64) -> Op {
    Op::Write(KvCommand::IncrBy { key: key.to_vec(), by }, Render::Integer)
}

fn scan(args: &[Bytes]) -> Op {
    let Some(cursor) = std::str::from_utf8(&args[0]).ok().and_then(|text| text.parse().ok()) else {
        return Op::Reply(Reply::error("ERR invalid cursor"));
    };
    let (mut pattern, mut count, mut strings_only) = (None, 10, None);
    let mut options = args[1..].iter();
    while let Some(option) = options.next() {
        let option = String::from_utf8_lossy(option).to_uppercase();
        let Some(value) = options.next() else { return Op::Reply(syntax_error()) };
        match option.as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => match integer(value) {
                Ok(n) if n >= 1 => count = usize::try_from(n).unwrap_or(usize::MAX).min(100_000),
                Ok(_) => return Op::Reply(syntax_error()),
                Err(reply) => return Op::Reply(reply),
            },
            "TYPE" => strings_only = Some(value.eq_ignore_ascii_case(b"string")),
            _ => return Op::Reply(syntax_error()),
        }
    }
    Op::Read(Read::Scan { cursor, pattern, count, strings_only })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|word| Bytes::copy_from_slice(word.as_bytes())).collect()
    }

    fn refused(name: &str, words: &[&str]) -> String {
        match parse(name, &args(words)) {
            Some(Op::Reply(Reply::Error(text))) => text,
            other => panic!("{name} {words:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn set_options_parse_and_conflicts_are_syntax_errors() {
        let Some(Op::Write(KvCommand::Set { ttl, condition, get, .. }, _)) =
            parse("SET", &args(&["k", "v", "nx", "px", "1500", "get"]))
        else {
            panic!("SET did not parse")
        };
        assert_eq!((ttl, condition, get), (Ttl::In(1500), SetCondition::IfAbsent, true));
        assert_eq!(refused("SET", &["k", "v", "NX", "XX"]), "ERR syntax error");
        assert_eq!(refused("SET", &["k", "v", "EX", "1", "KEEPTTL"]), "ERR syntax error");
        assert_eq!(refused("SET", &["k", "v", "EX"]), "ERR syntax error");
        assert_eq!(
            refused("SET", &["k", "v", "EX", "0"]),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            refused("SET", &["k", "v", "EX", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(refused("SET", &["k"]), "ERR wrong number of arguments for 'set' command");
    }

    #[test]
    fn expire_conditions_conflict_as_in_redis() {
        assert_eq!(
            refused("EXPIRE", &["k", "10", "NX", "XX"]),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            refused("EXPIRE", &["k", "10", "GT", "LT"]),
            "ERR GT and LT options at the same time are not compatible"
        );
        let Some(Op::Write(KvCommand::Expire { ttl, .. }, _)) =
            parse("EXPIRE", &args(&["k", "-5"]))
        else {
            panic!("EXPIRE did not parse")
        };
        assert_eq!(ttl, Ttl::At(0));
    }

    #[test]
    fn unknown_commands_are_left_to_the_caller() {
        assert_eq!(parse("LPUSH", &args(&["k", "v"])), None);
    }
}
