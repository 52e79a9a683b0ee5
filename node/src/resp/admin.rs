//! Connection, server and pub/sub commands: `AUTH`, `HELLO`, `PING`, `ECHO`, `SELECT`,
//! `CLIENT`, `INFO`, `COMMAND`, `CONFIG GET`, `QUIT`, `RESET`, `PUBLISH`, the subscribe
//! commands and `PUBSUB`. Replies are Redis 7's, so that clients which look at them
//! (redis-py's handshake, Celery's version check, redis-cli's hints) are satisfied.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::client::{Connection, MAX_AUTH_FAILURES};
use super::commands::{arity_error, integer};
use super::pubsub::Delivery;
use super::reply::Reply;

/// The Redis version shoal answers as: the commands and replies it serves are Redis 7.2's.
pub const REDIS_VERSION: &str = "7.2.4";

/// Commands a connection may send before it authenticates.
const BEFORE_AUTH: [&str; 4] = ["AUTH", "HELLO", "QUIT", "RESET"];
/// Commands a RESP2 connection in subscriber mode may send.
const WHILE_SUBSCRIBED: [&str; 7] =
    ["SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "PING", "QUIT", "RESET"];

/// Returns the refusal of `name` in the connection's state, if it may not run now.
pub(super) fn gate(connection: &Connection, name: &str, _args: &[Bytes]) -> Option<Reply> {
    if !connection.authenticated && !BEFORE_AUTH.contains(&name) {
        return Some(Reply::error("NOAUTH Authentication required."));
    }
    if connection.subscribed() && !connection.resp3 && !WHILE_SUBSCRIBED.contains(&name) {
        return Some(Reply::error(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            name.to_lowercase()
        )));
    }
    None
}

/// The connection, server and pub/sub commands [`run`] answers.
const ADMIN: [&str; 20] = [
    "PING",
    "ECHO",
    "QUIT",
    "SELECT",
    "AUTH",
    "HELLO",
    "RESET",
    "CLIENT",
    "INFO",
    "COMMAND",
    "CONFIG",
    "PUBLISH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "PUBSUB",
    "READONLY",
    "READWRITE",
    "LOLWUT",
];

/// Returns whether `name` is a command [`run`] answers.
pub(super) fn is_admin(name: &str) -> bool {
    ADMIN.contains(&name)
}

/// Runs `name` if it is a connection, server or pub/sub command.
pub(super) async fn run(connection: &mut Connection, name: &str, args: &[Bytes]) -> Option<Reply> {
    Some(match name {
        "PING" => match args {
            [] if connection.subscribed() && !connection.resp3 => {
                Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
            }
            [] => Reply::Simple("PONG".into()),
            [message] => Reply::Bulk(message.clone()),
            _ => arity_error(name),
        },
        "ECHO" => match args {
            [message] => Reply::Bulk(message.clone()),
            _ => arity_error(name),
        },
        "QUIT" => {
            connection.closing = true;
            Reply::ok()
        }
        "SELECT" => match args {
            [db] => match integer(db) {
                Ok(0) => Reply::ok(),
                Ok(_) => Reply::error("ERR DB index is out of range"),
                Err(reply) => reply,
            },
            _ => arity_error(name),
        },
        "AUTH" => auth(connection, args),
        "HELLO" => hello(connection, args),
        "RESET" => {
            forget_subscriptions(connection);
            connection.channels.clear();
            connection.patterns.clear();
            connection.resp3 = false;
            connection.name = None;
            connection.authenticated = connection.resp.config.password.is_none();
            Reply::Simple("RESET".into())
        }
        "CLIENT" => client(connection, args),
        "INFO" => info(connection, args),
        "COMMAND" => command(args),
        "CONFIG" => config(connection, args),
        "PUBLISH" => match args {
            [channel, message] => {
                let pubsub = connection.resp.pubsub.clone();
                let received = pubsub.publish(channel.clone(), message.clone()).await;
                Reply::Integer(i64::try_from(received).unwrap_or(i64::MAX))
            }
            _ => arity_error(name),
        },
        "SUBSCRIBE" | "PSUBSCRIBE" if args.is_empty() => arity_error(name),
        "SUBSCRIBE" => subscribe(connection, args, false),
        "PSUBSCRIBE" => subscribe(connection, args, true),
        "UNSUBSCRIBE" => unsubscribe(connection, args, false),
        "PUNSUBSCRIBE" => unsubscribe(connection, args, true),
        "PUBSUB" => pubsub(connection, args),
        // Cluster clients send these; every node serves reads and writes.
        "READONLY" | "READWRITE" => Reply::ok(),
        "LOLWUT" => Reply::Verbatim {
            format: *b"txt",
            text: Bytes::from(format!(
                "shoal {} speaking Redis {REDIS_VERSION}\n",
                env!("CARGO_PKG_VERSION")
            )),
        },
        _ => return None,
    })
}

/// Redis's answer to a command it does not know; the connection stays usable.
pub(super) fn unknown_command(args: &[Bytes]) -> Reply {
    let mut text =
        format!("ERR unknown command '{}', with args beginning with: ", printable(&args[0]));
    for arg in &args[1..] {
        text.push_str(&format!("'{}' ", printable(arg)));
    }
    Reply::error(text)
}

fn unknown_subcommand(command: &str, sub: &[u8]) -> Reply {
    Reply::error(format!("ERR unknown subcommand '{}'. Try {command} HELP.", printable(sub)))
}

/// At most 128 bytes of an argument, as Redis quotes them in errors.
fn printable(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)]).replace(['\r', '\n'], " ")
}

/// Compares a given password with the configured one in time independent of where they
/// differ.
fn password_matches(given: &[u8], expected: &str) -> bool {
    Sha256::digest(given) == Sha256::digest(expected.as_bytes())
}

fn check_password(connection: &mut Connection, user: &[u8], password: &[u8]) -> Result<(), Reply> {
    let Some(expected) = connection.resp.config.password.clone() else {
        return Err(Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    };
    if user.eq_ignore_ascii_case(b"default") && password_matches(password, &expected) {
        connection.authenticated = true;
        return Ok(());
    }
    connection.auth_failures += 1;
    tracing::warn!(client = connection.id, peer = %connection.peer, "a Redis client gave a wrong password");
    if connection.auth_failures >= MAX_AUTH_FAILURES {
        connection.closing = true;
    }
    Err(Reply::error("WRONGPASS invalid username-password pair or user is disabled."))
}

fn auth(connection: &mut Connection, args: &[Bytes]) -> Reply {
    let outcome = match args {
        [password] => check_password(connection, b"default", password),
        [user, password] => check_password(connection, user, password),
        _ => return arity_error("AUTH"),
    };
    outcome.map_or_else(|reply| reply, |()| Reply::ok())
}

fn hello(connection: &mut Connection, args: &[Bytes]) -> Reply {
    let mut protocol = if connection.resp3 { 3 } else { 2 };
    let mut rest = args;
    if let Some(version) = args.first() {
        match integer(version) {
            Ok(version @ (2 | 3)) => protocol = version,
            Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range")
            }
        }
        rest = &args[1..];
    }
    let mut name = None;
    while let Some(option) = rest.first() {
        match (option.to_ascii_uppercase().as_slice(), rest) {
            (b"AUTH", [_, user, password, ..]) => {
                if let Err(reply) = check_password(connection, user, password) {
                    return reply;
                }
                rest = &rest[3..];
            }
            (b"SETNAME", [_, client_name, ..]) => {
                if let Err(reply) = valid_name(client_name) {
                    return reply;
                }
                name = Some(client_name.clone());
                rest = &rest[2..];
            }
            _ => {
                return Reply::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    printable(option)
                ))
            }
        }
    }
    if !connection.authenticated {
        return Reply::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if name.is_some() {
        connection.name = name;
    }
    connection.resp3 = protocol == 3;
    let text = |text: &str| Reply::bulk(text.to_string());
    Reply::Map(vec![
        (text("server"), text("redis")),
        (text("version"), text(REDIS_VERSION)),
        (text("proto"), Reply::Integer(protocol)),
        (text("id"), Reply::Integer(connection.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Reply::Array(Vec::new())),
    ])
}

fn valid_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().all(|byte| (b'!'..=b'~').contains(byte)) {
        Ok(())
    } else {
        Err(Reply::error("ERR Client names cannot contain spaces, newlines or special characters."))
    }
}

fn client(connection: &mut Connection, args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else { return arity_error("CLIENT") };
    match (sub.to_ascii_uppercase().as_slice(), &args[1..]) {
        (b"SETNAME", [name]) => match valid_name(name) {
            Ok(()) => {
                connection.name = (!name.is_empty()).then(|| name.clone());
                Reply::ok()
            }
            Err(reply) => reply,
        },
        (b"GETNAME", []) => connection.name.clone().map_or(Reply::Null, Reply::Bulk),
        (b"ID", []) => Reply::Integer(connection.id as i64),
        (b"SETINFO", [attribute, value]) => match attribute.to_ascii_uppercase().as_slice() {
            b"LIB-NAME" => {
                connection.lib_name = Some(value.clone());
                Reply::ok()
            }
            b"LIB-VER" => {
                connection.lib_version = Some(value.clone());
                Reply::ok()
            }
            _ => Reply::error(format!("ERR Unrecognized option '{}'", printable(attribute))),
        },
        (b"INFO", []) => {
            Reply::Verbatim { format: *b"txt", text: Bytes::from(client_line(connection)) }
        }
        (b"LIST", _) => {
            Reply::Verbatim { format: *b"txt", text: Bytes::from(client_line(connection)) }
        }
        (b"NO-EVICT" | b"NO-TOUCH", [_]) => Reply::ok(),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO", _) => {
            arity_error(&format!("client|{}", String::from_utf8_lossy(sub).to_lowercase()))
        }
        _ => unknown_subcommand("CLIENT", sub),
    }
}

/// The connection as `CLIENT INFO` describes it: Redis 7's fields, all of them, since
/// clients parse them (redis-py turns each numeric one into an integer). Memory and
/// buffer fields are 0: shoal does not account them per client.
fn client_line(connection: &Connection) -> String {
    let text = |value: &Option<Bytes>| {
        value.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned()
    };
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle=0 flags={} db=0 sub={} psub={} ssub=0 \
         multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        connection.id,
        connection.peer,
        connection.local,
        text(&connection.name),
        connection.connected.elapsed().as_secs(),
        if connection.subscribed() { "P" } else { "N" },
        connection.channels.len(),
        connection.patterns.len(),
        if connection.resp3 { 3 } else { 2 },
        text(&connection.lib_name),
        text(&connection.lib_version),
    )
}

fn info(connection: &Connection, args: &[Bytes]) -> Reply {
    let resp = &connection.resp;
    let wanted: Vec<String> =
        args.iter().map(|arg| String::from_utf8_lossy(arg).to_lowercase()).collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|section| section == "all" || section == "everything" || section == "default");
    let show = |section: &str| all || wanted.iter().any(|w| w == section);
    let stats = resp.stats();
    let reader = resp.keyspace.cluster.reader();
    let status = resp.keyspace.cluster.status();
    let mut text = String::new();
    if show("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\n\
             process_id:{}\r\nrun_id:{:040x}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\
             shoal_version:{}\r\nshoal_node_id:{}\r\nshoal_instance_id:{}\r\n\r\n",
            std::env::consts::OS,
            std::process::id(),
            resp.node_id,
            resp.tcp_port,
            resp.started.elapsed().as_secs(),
            resp.started.elapsed().as_secs() / 86_400,
            env!("CARGO_PKG_VERSION"),
            resp.node_id,
            resp.instance_id,
        ));
    }
    if show("clients") {
        text.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            stats.connected_clients, resp.config.max_clients
        ));
    }
    if show("memory") {
        text.push_str(
            "# Memory\r\nused_memory:0\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
        );
    }
    if show("persistence") {
        text.push_str(
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nrdb_changes_since_last_save:0\r\n\r\n",
        );
    }
    if show("stats") {
        text.push_str(&format!(
            "# Stats\r\ntotal_commands_processed:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\n\r\n",
            stats.commands_processed,
            resp.pubsub.local.channels(None).len(),
            resp.pubsub.local.num_patterns()
        ));
    }
    if show("replication") {
        let role = if status.leader_id == Some(resp.node_id) { "leader" } else { "follower" };
        text.push_str(&format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nshoal_raft_role:{role}\r\nshoal_raft_term:{}\r\n\r\n",
            status.term
        ));
    }
    if show("keyspace") {
        text.push_str(&format!(
            "# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
            reader.num_kv() + reader.num_sessions()
        ));
    }
    Reply::Verbatim { format: *b"txt", text: Bytes::from(text) }
}

/// `(name, arity, flags, first key, last key, step)` of every command served: what
/// `COMMAND` and `COMMAND INFO` tell clients that route or hint by it.
type CommandEntry = (&'static str, i64, &'static [&'static str], i64, i64, i64);
const COMMANDS: &[CommandEntry] = &[
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("setnx", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("setex", 4, &["write", "denyoom"], 1, 1, 1),
    ("psetex", 4, &["write", "denyoom"], 1, 1, 1),
    ("getdel", 2, &["write", "fast"], 1, 1, 1),
    ("getex", -2, &["write", "fast"], 1, 1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("msetnx", -3, &["write", "denyoom"], 1, -1, 2),
    ("del", -2, &["write"], 1, -1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("expireat", -3, &["write", "fast"], 1, 1, 1),
    ("pexpireat", -3, &["write", "fast"], 1, 1, 1),
    ("expiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("pexpiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("persist", 2, &["write", "fast"], 1, 1, 1),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("append", 3, &["write", "denyoom"], 1, 1, 1),
    ("strlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("publish", 3, &["pubsub", "loading", "stale", "fast"], 0, 0, 0),
    ("subscribe", -2, &["pubsub", "noscript", "loading", "stale"], 0, 0, 0),
    ("psubscribe", -2, &["pubsub", "noscript", "loading", "stale"], 0, 0, 0),
    ("unsubscribe", -1, &["pubsub", "noscript", "loading", "stale"], 0, 0, 0),
    ("punsubscribe", -1, &["pubsub", "noscript", "loading", "stale"], 0, 0, 0),
    ("pubsub", -2, &[], 0, 0, 0),
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("auth", -2, &["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0),
    ("hello", -1, &["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0),
    ("client", -2, &[], 0, 0, 0),
    ("info", -1, &["loading", "stale"], 0, 0, 0),
    ("command", -1, &["loading", "stale"], 0, 0, 0),
    ("config", -2, &[], 0, 0, 0),
    ("quit", -1, &["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0),
    ("reset", 1, &["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0),
];

fn command_entry(entry: &CommandEntry) -> Reply {
    let (name, arity, flags, first, last, step) = *entry;
    Reply::Array(vec![
        Reply::bulk(name.to_string()),
        Reply::Integer(arity),
        Reply::Set(flags.iter().map(|flag| Reply::Simple((*flag).into())).collect()),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else {
        return Reply::Array(COMMANDS.iter().map(command_entry).collect());
    };
    let find = |name: &[u8]| {
        let name = String::from_utf8_lossy(name).to_lowercase();
        COMMANDS.iter().find(|entry| entry.0 == name)
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => Reply::Integer(COMMANDS.len() as i64),
        b"INFO" => Reply::Array(
            args[1..].iter().map(|name| find(name).map_or(Reply::Null, command_entry)).collect(),
        ),
        // Docs are optional: clients that hint from them (redis-cli) do without.
        b"DOCS" => Reply::Map(Vec::new()),
        b"LIST" => {
            Reply::Array(COMMANDS.iter().map(|entry| Reply::bulk(entry.0.to_string())).collect())
        }
        _ => unknown_subcommand("COMMAND", sub),
    }
}

fn config(connection: &Connection, args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else { return arity_error("CONFIG") };
    match sub.to_ascii_uppercase().as_slice() {
        b"GET" if args.len() >= 2 => {
            let config = &connection.resp.config;
            let timeout = config.idle_timeout.map_or(0, |limit| limit.as_secs()).to_string();
            let known = [
                ("appendonly", "yes".to_string()),
                ("appendfsync", "always".to_string()),
                ("save", String::new()),
                ("databases", "1".to_string()),
                ("maxclients", config.max_clients.to_string()),
                ("maxmemory", "0".to_string()),
                ("proto-max-bulk-len", config.max_bulk_bytes.to_string()),
                ("timeout", timeout),
            ];
            let mut pairs = Vec::new();
            for pattern in &args[1..] {
                for (name, value) in &known {
                    if super::glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()) {
                        pairs.push((Reply::bulk(name.to_string()), Reply::bulk(value.clone())));
                    }
                }
            }
            Reply::Map(pairs)
        }
        b"RESETSTAT" => Reply::ok(),
        b"SET" => Reply::error("ERR shoal is configured with flags and environment variables (shoal serve --help), not CONFIG SET"),
        b"GET" => arity_error("config|get"),
        _ => unknown_subcommand("CONFIG", sub),
    }
}

fn subscribe(connection: &mut Connection, channels: &[Bytes], pattern: bool) -> Reply {
    let kind = if pattern { "psubscribe" } else { "subscribe" };
    let mut confirmations = Vec::new();
    for channel in channels {
        let set = if pattern { &mut connection.patterns } else { &mut connection.channels };
        if set.insert(channel.clone()) {
            connection.resp.pubsub.local.subscribe(
                &connection.subscriber,
                channel.clone(),
                pattern,
            );
        }
        let count = (connection.channels.len() + connection.patterns.len()) as i64;
        confirmations.push(push(vec![
            Reply::bulk(kind),
            Reply::Bulk(channel.clone()),
            Reply::Integer(count),
        ]));
    }
    Reply::Sequence(confirmations)
}

fn unsubscribe(connection: &mut Connection, channels: &[Bytes], pattern: bool) -> Reply {
    let kind = if pattern { "punsubscribe" } else { "unsubscribe" };
    let named: Vec<Bytes> = if channels.is_empty() {
        let set = if pattern { &connection.patterns } else { &connection.channels };
        set.iter().cloned().collect()
    } else {
        channels.to_vec()
    };
    if named.is_empty() {
        let count = (connection.channels.len() + connection.patterns.len()) as i64;
        return Reply::Sequence(vec![push(vec![
            Reply::bulk(kind),
            Reply::Null,
            Reply::Integer(count),
        ])]);
    }
    let mut confirmations = Vec::new();
    for channel in named {
        let set = if pattern { &mut connection.patterns } else { &mut connection.channels };
        if set.remove(&channel) {
            connection.resp.pubsub.local.unsubscribe(connection.id, &channel, pattern);
        }
        let count = (connection.channels.len() + connection.patterns.len()) as i64;
        confirmations.push(push(vec![
            Reply::bulk(kind),
            Reply::Bulk(channel),
            Reply::Integer(count),
        ]));
    }
    Reply::Sequence(confirmations)
}

fn pubsub(connection: &Connection, args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else { return arity_error("PUBSUB") };
    let local = &connection.resp.pubsub.local;
    match sub.to_ascii_uppercase().as_slice() {
        b"CHANNELS" => {
            let pattern = args.get(1).map(|pattern| &pattern[..]);
            Reply::Array(local.channels(pattern).into_iter().map(Reply::Bulk).collect())
        }
        b"NUMSUB" => Reply::Array(
            args[1..]
                .iter()
                .flat_map(|channel| {
                    [
                        Reply::Bulk(channel.clone()),
                        Reply::Integer(local.num_subscribers(channel) as i64),
                    ]
                })
                .collect(),
        ),
        b"NUMPAT" => Reply::Integer(local.num_patterns() as i64),
        _ => unknown_subcommand("PUBSUB", sub),
    }
}

/// A pub/sub frame: a push in RESP3, an array in RESP2 (the encoder decides).
fn push(items: Vec<Reply>) -> Reply {
    Reply::Push(items)
}

/// The frame of a delivered message.
pub(super) fn message_reply(delivery: Delivery) -> Reply {
    match delivery.pattern {
        None => push(vec![
            Reply::bulk("message"),
            Reply::Bulk(delivery.channel),
            Reply::Bulk(delivery.payload),
        ]),
        Some(pattern) => push(vec![
            Reply::bulk("pmessage"),
            Reply::Bulk(pattern),
            Reply::Bulk(delivery.channel),
            Reply::Bulk(delivery.payload),
        ]),
    }
}

/// Removes the connection's subscriptions from the bus.
pub(super) fn forget_subscriptions(connection: &Connection) {
    let local = &connection.resp.pubsub.local;
    for channel in &connection.channels {
        local.unsubscribe(connection.id, channel, false);
    }
    for pattern in &connection.patterns {
        local.unsubscribe(connection.id, pattern, true);
    }
}
