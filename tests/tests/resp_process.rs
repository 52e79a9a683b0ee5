//! The Redis protocol endpoint against the real thing: every command is sent to a shoal
//! node and to a `redis-server` side by side and must get the same reply; the protocol's
//! edges (inline commands, pipelines, limits, RESP3, AUTH, timeouts) are checked on raw
//! sockets; a 3-node cluster serves linearizable reads and pub/sub on every node, says
//! `TRYAGAIN` without a quorum rather than a stale value, and shows sessions and
//! searches made over HTTP under the classic key names.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::{json, Value};
use shoal_tests::resp::{client, raw, read_quiet, redis_cli, resp_port, Redis, RESP_ARGS};
use shoal_tests::{wait_until, TestCluster, TestNode, FAST_RAFT_ARGS};

const READY: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(300);

/// One command's reply as redis-rs reads it, as text: values and errors alike.
async fn reply(connection: &mut redis::aio::MultiplexedConnection, words: &[&str]) -> String {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    match command.query_async::<redis::Value>(connection).await {
        Ok(value) => format!("{value:?}"),
        Err(error) => format!("error: {error}"),
    }
}

/// Whether two `TTL`/`PTTL` replies differ only by the time between the two calls.
fn same_time_left(command: &str, expected: &str, got: &str) -> bool {
    let number = |reply: &str| reply.strip_prefix("int(")?.strip_suffix(')')?.parse::<i64>().ok();
    let slack = match command {
        "TTL" => 1,
        "PTTL" => 100,
        _ => return false,
    };
    matches!((number(expected), number(got)), (Some(a), Some(b)) if a >= 0 && (a - b).abs() <= slack)
}

/// A reply for an assertion message: text, and not too much of it.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(400).collect()
}

/// Sends `bytes` to both servers and requires the same answer.
async fn same_answer(ours: u16, theirs: u16, bytes: &[u8], quiet: Duration) -> anyhow::Result<()> {
    let (got, expected) = (raw(ours, bytes, quiet).await?, raw(theirs, bytes, quiet).await?);
    assert!(
        got == expected,
        "for {}\n shoal: {}\n redis: {}",
        shown(bytes),
        shown(&got),
        shown(&expected)
    );
    Ok(())
}

/// Starts one node serving RESP and waits until it takes writes.
async fn single_node(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<(TestNode, u16)> {
    let (node, port) = start_resp_node(dir, extra).await?;
    // Writes wait until gossip says every member reads their format level.
    let mut connection = client(port)?.get_multiplexed_async_connection().await?;
    wait_until("the first RESP write", READY, || {
        let mut connection = connection.clone();
        async move {
            Ok(redis::cmd("SET")
                .arg("ready")
                .arg("1")
                .query_async::<()>(&mut connection)
                .await
                .is_ok())
        }
    })
    .await?;
    let _: () = connection.del("ready").await?;
    Ok((node, port))
}

/// The script both servers run: strings with every option, TTLs, counters, the key space
/// and the connection commands, errors included.
const SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["PING", "hello"],
    &["ECHO", "binary\r\nsafe"],
    &["SELECT", "0"],
    &["GET", "s:missing"],
    &["SET", "s:a", "1"],
    &["GET", "s:a"],
    &["SET", "s:a", "2", "NX"],
    &["SET", "s:a", "3", "XX", "GET"],
    &["SET", "s:new", "x", "XX"],
    &["SET", "s:new", "x", "NX", "GET"],
    &["SET", "s:a", "4", "NX", "XX"],
    &["SET", "s:a", "4", "EX", "0"],
    &["SET", "s:a", "4", "EX", "-3"],
    &["SET", "s:a", "4", "EX", "ten"],
    &["SET", "s:a", "4", "EX", "100", "PX", "100"],
    &["SET", "s:a", "4", "KEEPTTL", "EX", "10"],
    &["SET", "s:t", "v", "EX", "100"],
    &["TTL", "s:t"],
    &["SET", "s:t", "w", "KEEPTTL"],
    &["TTL", "s:t"],
    &["SET", "s:t", "w"],
    &["TTL", "s:t"],
    &["SET", "s:at", "v", "EXAT", "4102444800"],
    &["EXPIRETIME", "s:at"],
    &["SET", "s:pat", "v", "PXAT", "4102444800123"],
    &["PEXPIRETIME", "s:pat"],
    &["SET", "s:past", "v", "PXAT", "1000"],
    &["GET", "s:past"],
    &["SETEX", "s:ex", "100", "v"],
    &["TTL", "s:ex"],
    &["SETEX", "s:ex", "0", "v"],
    &["PSETEX", "s:px", "100000", "v"],
    &["PSETEX", "s:px", "-1", "v"],
    &["SETNX", "s:nx", "1"],
    &["SETNX", "s:nx", "2"],
    &["GET", "s:nx"],
    &["GETDEL", "s:nx"],
    &["GETDEL", "s:nx"],
    &["SET", "s:gx", "v"],
    &["GETEX", "s:gx", "EX", "100"],
    &["TTL", "s:gx"],
    &["GETEX", "s:gx", "PERSIST"],
    &["TTL", "s:gx"],
    &["GETEX", "s:gx", "EX", "0"],
    &["GETEX", "s:gx", "BOGUS"],
    &["GETEX", "s:none", "EX", "10"],
    &["MSET", "s:m1", "a", "s:m2", "b", "s:m1", "c"],
    &["MGET", "s:m1", "s:m2", "s:missing"],
    &["MSET", "s:m1"],
    &["MSETNX", "s:m3", "x", "s:m1", "y"],
    &["MSETNX", "s:m3", "x", "s:m4", "y"],
    &["EXISTS", "s:m1", "s:m1", "s:missing", "s:m3"],
    &["DEL", "s:m1", "s:m1", "s:missing", "s:m2"],
    &["UNLINK", "s:m3", "s:m4"],
    &["EXISTS", "s:m1"],
    &["SET", "s:e", "v"],
    &["TTL", "s:e"],
    &["PTTL", "s:missing"],
    &["EXPIRE", "s:e", "100", "XX"],
    &["EXPIRE", "s:e", "100", "NX"],
    &["TTL", "s:e"],
    &["EXPIRE", "s:e", "200", "NX"],
    &["EXPIRE", "s:e", "50", "GT"],
    &["EXPIRE", "s:e", "300", "GT"],
    &["TTL", "s:e"],
    &["EXPIRE", "s:e", "400", "LT"],
    &["EXPIRE", "s:e", "30", "LT"],
    &["TTL", "s:e"],
    &["EXPIRE", "s:e", "30", "NX", "XX"],
    &["EXPIRE", "s:e", "30", "GT", "LT"],
    &["EXPIRE", "s:e", "30", "BOGUS"],
    &["EXPIRE", "s:e", "thirty"],
    &["PERSIST", "s:e"],
    &["PERSIST", "s:e"],
    &["TTL", "s:e"],
    &["EXPIRE", "s:e", "10", "GT"],
    &["EXPIRE", "s:e", "10", "LT"],
    &["PEXPIRE", "s:e", "100000"],
    &["PTTL", "s:e"],
    &["EXPIREAT", "s:e", "4102444800"],
    &["EXPIRETIME", "s:e"],
    &["PEXPIREAT", "s:e", "4102444800000"],
    &["PEXPIRETIME", "s:e"],
    &["EXPIRE", "s:e", "-1"],
    &["EXISTS", "s:e"],
    &["EXPIRE", "s:missing", "10"],
    &["TYPE", "s:a"],
    &["TYPE", "s:missing"],
    &["INCR", "s:n"],
    &["INCRBY", "s:n", "41"],
    &["DECR", "s:n"],
    &["DECRBY", "s:n", "-10"],
    &["GET", "s:n"],
    &["INCRBY", "s:n", "x"],
    &["SET", "s:n", "9223372036854775806"],
    &["INCR", "s:n"],
    &["INCR", "s:n"],
    &["SET", "s:n", "-9223372036854775808"],
    &["DECRBY", "s:n", "1"],
    &["DECRBY", "s:n", "-9223372036854775808"],
    &["SET", "s:n", " 1"],
    &["INCR", "s:n"],
    &["SET", "s:n", "01"],
    &["INCR", "s:n"],
    &["INCR", "s:a"],
    &["SET", "s:cnt", "5", "EX", "100"],
    &["INCR", "s:cnt"],
    &["TTL", "s:cnt"],
    &["APPEND", "s:ap", "Hello"],
    &["APPEND", "s:ap", " World"],
    &["GET", "s:ap"],
    &["STRLEN", "s:ap"],
    &["STRLEN", "s:missing"],
    &["GET"],
    &["GET", "a", "b"],
    &["INCRBY", "s:n"],
    &["PING"],
];

/// What shoal does not serve (docs/migration.md says why): each gets an error, and the
/// connection stays usable.
const NOT_SERVED: &[&[&str]] = &[
    &["SELECT", "1"],
    &["LPUSH", "s:list", "a"],
    &["BLPOP", "s:list", "1"],
    &["EVAL", "return 1", "0"],
    &["FLUSHALL"],
    &["MULTI"],
];

#[tokio::test]
#[ignore = "needs redis-server; scripts/test installs it and runs this"]
async fn every_command_answers_as_redis_server_does() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let redis = Redis::start(&dir.path().join("redis"), "always").await?;
    let (_node, port) = single_node(dir.path(), &[]).await?;
    let mut theirs = client(redis.port)?.get_multiplexed_async_connection().await?;
    let mut ours = client(port)?.get_multiplexed_async_connection().await?;
    let mut differences = Vec::new();
    for words in SCRIPT {
        let (expected, got) = (reply(&mut theirs, words).await, reply(&mut ours, words).await);
        if expected != got && !same_time_left(words[0], &expected, &got) {
            differences
                .push(format!("{words:?}\n  redis-server: {expected}\n  shoal:        {got}"));
        }
    }
    assert!(differences.is_empty(), "replies differ:\n{}", differences.join("\n"));
    let before = reply(&mut ours, &["GET", "s:ap"]).await;
    for words in NOT_SERVED {
        let refused = reply(&mut ours, words).await;
        assert!(refused.starts_with("error: ResponseError"), "{words:?}: {refused}");
        assert_eq!(reply(&mut ours, &["GET", "s:ap"]).await, before);
    }

    // The key space: the same keys, whichever way they are listed.
    for connection in [&mut theirs, &mut ours] {
        for n in 0..250 {
            let _: () = connection.set(format!("scan:{n}"), n).await?;
        }
    }
    let keys = |mut connection: redis::aio::MultiplexedConnection, pattern: &'static str| async move {
        let listed: Vec<String> =
            redis::cmd("KEYS").arg(pattern).query_async(&mut connection).await?;
        let mut scanned = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(7)
                .query_async(&mut connection)
                .await?;
            scanned.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut connection).await?;
        anyhow::Ok((
            listed.into_iter().collect::<BTreeSet<_>>(),
            scanned.into_iter().collect::<BTreeSet<_>>(),
            dbsize,
        ))
    };
    let (their_keys, their_scan, their_size) = keys(theirs.clone(), "scan:1*").await?;
    let (our_keys, our_scan, our_size) = keys(ours.clone(), "scan:1*").await?;
    assert_eq!(their_keys.len(), 111);
    assert_eq!(our_keys, their_keys);
    assert_eq!(our_scan, their_scan);
    assert_eq!(our_size, their_size, "DBSIZE");
    let typed: (u64, Vec<String>) =
        redis::cmd("SCAN").arg(0).arg("TYPE").arg("list").query_async(&mut ours).await?;
    assert_eq!(typed, (0, Vec::new()), "SCAN TYPE list finds no strings");

    // Expiry by the leader's clock: gone soon after the deadline, on both.
    for connection in [&mut theirs, &mut ours] {
        let _: () = redis::cmd("SET")
            .arg("soon")
            .arg("v")
            .arg("PX")
            .arg(150)
            .query_async(connection)
            .await?;
        let present: Option<String> = connection.get("soon").await?;
        assert_eq!(present.as_deref(), Some("v"));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for connection in [&mut theirs, &mut ours] {
        let gone: Option<String> = connection.get("soon").await?;
        assert_eq!(gone, None);
        let ttl: i64 = connection.ttl("soon").await?;
        assert_eq!(ttl, -2);
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-server; scripts/test installs it and runs this"]
async fn the_protocol_edges_behave_as_redis_server_does() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let redis = Redis::start(&dir.path().join("redis"), "everysec").await?;
    let (_node, port) = single_node(dir.path(), &[]).await?;
    // Inline commands with quotes, and a pipeline of many commands in one write.
    let inline = b"SET inline \"two words\\n\"\r\nGET inline\r\nSTRLEN inline\r\n\r\nPING\n";
    same_answer(port, redis.port, inline, QUIET).await?;
    let mut pipeline = Vec::new();
    for n in 0..500 {
        pipeline
            .extend(format!("*3\r\n$3\r\nSET\r\n$4\r\np{n:03}\r\n$1\r\n{}\r\n", n % 10).as_bytes());
        pipeline.extend(format!("*2\r\n$3\r\nGET\r\n$4\r\np{n:03}\r\n").as_bytes());
        pipeline.extend(b"*2\r\n$4\r\nINCR\r\n$4\r\np000\r\n");
    }
    same_answer(port, redis.port, &pipeline, Duration::from_secs(3)).await?;
    // Protocol errors close the connection with Redis's text; the limit is decided from
    // the header, before the body arrives.
    for broken in
        [&b"*3\r\n$3\r\nSET\r\n:1\r\n"[..], b"*1\r\n$-5\r\n", b"*x\r\n", b"SET \"unbalanced\r\n"]
    {
        same_answer(port, redis.port, broken, QUIET).await?;
    }
    let huge_bulk = raw(port, b"*2\r\n$3\r\nGET\r\n$999999999\r\n", QUIET).await?;
    assert_eq!(huge_bulk, b"-ERR Protocol error: invalid bulk length\r\n");
    let huge_array = raw(port, b"*99999999\r\n", QUIET).await?;
    assert_eq!(huge_array, b"-ERR Protocol error: invalid multibulk length\r\n");
    // A value over the endpoint's limit is refused and changes nothing.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let mut mconn = client(port)?.get_multiplexed_async_connection().await?;
    let refused = redis::cmd("SET").arg("big").arg(&big).query_async::<()>(&mut mconn).await;
    assert!(refused.is_err(), "a 1 MiB + 1 value was taken");
    let mut fresh = client(port)?.get_multiplexed_async_connection().await?;
    let exists: u64 = fresh.exists("big").await?;
    assert_eq!(exists, 0);

    // RESP3 after HELLO 3: maps, nulls and push frames.
    let hello = raw(port, b"HELLO 3\r\nGET nothing\r\nSUBSCRIBE ch\r\nPING\r\n", QUIET).await?;
    let text = String::from_utf8_lossy(&hello);
    assert!(text.starts_with("%7\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.contains("_\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+PONG\r\n"), "{text}");
    same_answer(port, redis.port, b"HELLO 4\r\n", QUIET).await?;
    // RESP2 subscriber mode refuses other commands, as Redis does.
    let subscribed = b"SUBSCRIBE ch\r\nGET x\r\nPING\r\n";
    same_answer(port, redis.port, subscribed, QUIET).await?;
    Ok(())
}

#[tokio::test]
async fn a_password_is_required_and_slow_or_idle_clients_are_cut_off() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = [
        "--resp-password",
        "s3cret-pass",
        "--resp-idle-timeout",
        "2",
        "--resp-request-timeout-ms",
        "1000",
    ];
    let (_node, port) = start_resp_node(dir.path(), &args).await?;
    // The attack first: without the password, nothing reads or writes.
    let refused = raw(port, b"SET k stolen\r\nGET k\r\nKEYS *\r\n", QUIET).await?;
    assert_eq!(String::from_utf8_lossy(&refused), "-NOAUTH Authentication required.\r\n".repeat(3));
    let wrong = raw(port, b"AUTH wrong\r\nAUTH default wrong\r\nGET k\r\n", QUIET).await?;
    assert_eq!(
        String::from_utf8_lossy(&wrong),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n".repeat(2)
            + "-NOAUTH Authentication required.\r\n"
    );
    // Nor may a stranger make the node buffer much: a command begun before AUTH is cut
    // off at 64 KiB (each bulk's own limit is 1 MiB), at once rather than at the request
    // timeout (1 s here). The error may be lost to the reset of a socket closed with
    // unread input; the prompt close is what shows it.
    let mut flood = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut bytes = b"*2\r\n$3\r\nSET\r\n$1000000\r\n".to_vec();
    bytes.extend(vec![b'x'; 200 * 1024]);
    let started = std::time::Instant::now();
    let _ = tokio::io::AsyncWriteExt::write_all(&mut flood, &bytes).await;
    let mut answer = Vec::new();
    let mut buffer = vec![0_u8; 4096];
    while started.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut flood, &mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(read)) => answer.extend_from_slice(&buffer[..read]),
        }
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_millis(700),
        "a stranger's flood was held for {closed_after:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.contains("more than 65536 bytes"), "{answer}");
    // Five wrong passwords close the connection.
    let guesses = b"AUTH a\r\nAUTH b\r\nAUTH c\r\nAUTH d\r\nAUTH e\r\nAUTH s3cret-pass\r\n";
    let guessed = raw(port, guesses, QUIET).await?;
    assert_eq!(String::from_utf8_lossy(&guessed).matches("WRONGPASS").count(), 5);
    assert!(!String::from_utf8_lossy(&guessed).contains("+OK"));
    // With it, by AUTH or HELLO … AUTH, everything works; the stranger's write did not land.
    let authed = raw(port, b"AUTH s3cret-pass\r\nGET k\r\nHELLO 2 AUTH default s3cret-pass SETNAME app\r\nCLIENT GETNAME\r\n", QUIET).await?;
    let text = String::from_utf8_lossy(&authed);
    assert!(text.starts_with("+OK\r\n$-1\r\n*14\r\n"), "{text}");
    assert!(text.ends_with("$3\r\napp\r\n"), "{text}");
    let url = format!("redis://:s3cret-pass@127.0.0.1:{port}");
    let mut connection = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let _: () = connection.set("k", "v").await?;
    // A client that never finishes its command, or never authenticates, is cut off after
    // the request timeout; an idle one after the idle timeout.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"*2\r\n$3\r\nGET\r\n$1").await?;
    let started = std::time::Instant::now();
    let _ = read_quiet(&mut slow, Duration::from_secs(5)).await?;
    assert!(started.elapsed() < Duration::from_secs(4), "a half-sent command kept its connection");
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio::io::AsyncWriteExt::write_all(&mut idle, b"AUTH s3cret-pass\r\n").await?;
    let started = std::time::Instant::now();
    let answer = read_quiet(&mut idle, Duration::from_secs(6)).await?;
    assert_eq!(answer, b"+OK\r\n");
    let idled = started.elapsed();
    assert!(
        idled >= Duration::from_secs(1) && idled < Duration::from_secs(5),
        "idle for {idled:?}"
    );
    Ok(())
}

/// Starts one node serving RESP; returns it and its RESP port.
async fn start_resp_node(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<(TestNode, u16)> {
    let mut args: Vec<&str> = FAST_RAFT_ARGS.to_vec();
    args.extend(RESP_ARGS);
    args.extend(extra);
    let mut node = TestNode::start(&dir.join("shoal"), &args)?;
    node.wait_ready(READY).await?;
    let port = resp_port(&node, READY).await?;
    Ok((node, port))
}

#[tokio::test]
async fn a_cluster_serves_linearizable_keys_and_pubsub_on_every_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, RESP_ARGS)?;
    cluster.wait_converged(&[0, 1, 2], 3, READY).await?;
    let mut ports = Vec::new();
    for node in &cluster.nodes {
        ports.push(resp_port(node, READY).await?);
    }
    let mut connections = Vec::new();
    for port in &ports {
        connections.push(client(*port)?.get_multiplexed_async_connection().await?);
    }
    wait_until("writes on every node", READY, || {
        let mut connections = connections.clone();
        async move {
            for connection in &mut connections {
                if redis::cmd("SET")
                    .arg("probe")
                    .arg("1")
                    .query_async::<()>(connection)
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await?;
    // A write acknowledged on one node is read on every other, at once.
    for n in 0..60_u64 {
        let writer = &mut connections[(n % 3) as usize].clone();
        let _: () = writer.set(format!("lin:{}", n % 5), n).await?;
        for reader in &mut connections {
            let read: u64 = reader.get(format!("lin:{}", n % 5)).await?;
            assert_eq!(read, n, "a read missed an acknowledged write");
        }
    }
    // Pub/sub: subscribers on two other nodes, by channel and by pattern.
    let mut by_channel = client(ports[1])?.get_async_pubsub().await?;
    by_channel.subscribe("news").await?;
    let mut by_pattern = client(ports[2])?.get_async_pubsub().await?;
    by_pattern.psubscribe("ne*").await?;
    let received: u64 = connections[0].publish("news", "hello").await?;
    assert_eq!(received, 2, "PUBLISH counts the subscribers of every node");
    let message =
        tokio::time::timeout(READY, by_channel.on_message().next()).await?.expect("a message");
    assert_eq!(message.get_payload::<String>()?, "hello");
    let message =
        tokio::time::timeout(READY, by_pattern.on_message().next()).await?.expect("a pmessage");
    assert_eq!(
        (message.get_channel_name(), message.get_pattern::<String>()?),
        ("news", "ne*".to_string())
    );
    // Messages from one publisher arrive in order.
    for n in 0..100 {
        let _: u64 = connections[0].publish("news", n).await?;
    }
    let mut stream = by_channel.on_message();
    for n in 0..100 {
        let message = tokio::time::timeout(READY, stream.next()).await?.expect("a message");
        assert_eq!(message.get_payload::<u64>()?, n);
    }
    drop(stream);

    // Without a quorum the answer is TRYAGAIN, never a stale value; the acknowledged
    // writes are all there once the quorum is back.
    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    // A command waits a few seconds for a leader before it answers TRYAGAIN: a client
    // that waits longer than redis-rs's default half second sees the answer.
    let patient = redis::AsyncConnectionConfig::new().set_response_timeout(Some(READY));
    let mut alone =
        client(ports[0])?.get_multiplexed_async_connection_with_config(&patient).await?;
    // Within the leader's lease a read may still be served (no other leader can exist
    // until it runs out): it must be the latest value, and soon no read is served.
    let started = std::time::Instant::now();
    loop {
        match redis::cmd("GET").arg("lin:0").query_async::<Option<String>>(&mut alone).await {
            Ok(value) => assert_eq!(value.as_deref(), Some("55"), "a stale read"),
            Err(error) => {
                assert_eq!(
                    error.kind(),
                    redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
                    "{error}"
                );
                break;
            }
        }
        assert!(started.elapsed() < READY, "a node without a quorum kept serving reads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let write = redis::cmd("SET").arg("lin:0").arg("lost").query_async::<()>(&mut alone).await;
    let refused = write.expect_err("a write without quorum was acknowledged");
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
        "{refused}"
    );
    cluster.nodes[1].restart()?;
    cluster.nodes[2].restart()?;
    wait_until("the quorum back", READY, || {
        let mut alone = alone.clone();
        async move { Ok(alone.get::<_, Option<u64>>("lin:4").await.is_ok()) }
    })
    .await?;
    // The refused write's outcome was unknown (the lone node may have logged it): lin:0
    // holds the last acknowledged value or that one, nothing else.
    let first: String = alone.get("lin:0").await?;
    assert!(first == "55" || first == "lost", "lin:0 is {first}");
    for k in 1..5_u64 {
        let value: u64 = alone.get(format!("lin:{k}")).await?;
        assert_eq!(value, 55 + k, "lin:{k}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-cli; scripts/test installs it and runs this"]
async fn sessions_and_searches_show_under_the_classic_key_names() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut args = RESP_ARGS.to_vec();
    args.extend(["--sample-page-delay-ms", "100"]);
    let cluster = TestCluster::start(dir.path(), 3, &args)?;
    cluster.wait_converged(&[0, 1, 2], 3, READY).await?;
    let mut ports = Vec::new();
    for node in &cluster.nodes {
        ports.push(resp_port(node, READY).await?);
    }
    let http = reqwest::Client::new();
    let created: Value = http
        .post(cluster.nodes[0].url("/api/sessions"))
        .json(&json!({"data": {"user": "ana"}}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().expect("a session id").to_string();
    let key = format!("session:{id}");
    // The guide's verification commands, with the real redis-cli, on another node.
    let listed = redis_cli(ports[1], &["KEYS", "session:*"])?;
    assert!(listed.lines().any(|line| line == key), "{listed}");
    let stored: Value = serde_json::from_str(redis_cli(ports[2], &["GET", &key])?.trim())?;
    assert_eq!(stored["data"], json!({"user": "ana"}));
    assert_eq!(stored["version"], 1);
    assert_eq!(redis_cli(ports[2], &["TYPE", &key])?.trim(), "string");
    let ttl: i64 = redis_cli(ports[2], &["TTL", &key])?.trim().parse()?;
    assert!(ttl > 0, "TTL {ttl}");
    // A Redis write over a session made over HTTP is refused; DEL logs it out.
    let refused = redis_cli(ports[1], &["SET", &key, "forged"])?;
    assert!(refused.contains("HTTP API"), "{refused}");
    assert_eq!(
        http.get(cluster.nodes[2].url(&format!("/api/sessions/{id}"))).send().await?.status(),
        200
    );

    // Live events of a search run by node 0, seen by a pattern subscriber on node 2.
    let mut events = client(ports[2])?.get_async_pubsub().await?;
    events.psubscribe("bidiq:progress:*:events").await?;
    let search: Value = http
        .post(cluster.nodes[0].url("/api/searches"))
        .json(&json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-01-03", "source": "sample"}))
        .send()
        .await?
        .json()
        .await?;
    let search_id = search["id"].as_str().expect("a search id").to_string();
    let channel = format!("bidiq:progress:{search_id}:events");
    let mut seen = Vec::new();
    let mut stream = events.on_message();
    while !seen.iter().any(|kind| kind == "completed") {
        let message = tokio::time::timeout(READY, stream.next()).await?.expect("an event");
        assert_eq!(message.get_channel_name(), channel);
        let event: Value = serde_json::from_str(&message.get_payload::<String>()?)?;
        assert_eq!(event["id"], search_id.as_str());
        seen.push(event["event"].as_str().unwrap_or_default().to_string());
    }
    assert!(seen.iter().any(|kind| kind == "part_completed"), "{seen:?}");
    let record: Value = serde_json::from_str(
        redis_cli(ports[1], &["GET", &format!("bidiq:progress:{search_id}")])?.trim(),
    )?;
    // As Redis mode stores it (the record's own serde form).
    assert_eq!(record["status"], "Completed");
    let del = redis_cli(ports[1], &["DEL", &key])?;
    assert_eq!(del.trim(), "1");
    assert_eq!(
        http.get(cluster.nodes[0].url(&format!("/api/sessions/{id}"))).send().await?.status(),
        404
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-cli and redis-benchmark; scripts/test installs them and runs this"]
async fn redis_cli_and_redis_benchmark_work_unmodified() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_node, port) = single_node(dir.path(), &[]).await?;
    assert_eq!(redis_cli(port, &["SET", "cli", "value", "EX", "100"])?.trim(), "OK");
    assert_eq!(redis_cli(port, &["GET", "cli"])?.trim(), "value");
    let scanned = redis_cli(port, &["--scan", "--pattern", "cl*"])?;
    assert_eq!(scanned.trim(), "cli");
    let info = redis_cli(port, &["INFO", "server"])?;
    assert!(info.contains("redis_version:"), "{info}");
    let binary = shoal_tests::binary_on_path("redis-benchmark").expect("redis-benchmark installed");
    let output = std::process::Command::new(binary)
        .args(["-p", &port.to_string(), "-t", "set,get,incr", "-n", "2000", "-c", "10", "-q"])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    for test in ["SET", "GET", "INCR"] {
        assert!(text.contains(&format!("{test}:")), "{text}");
    }
    let counter = redis_cli(port, &["GET", "counter:__rand_int__"])?;
    assert_eq!(counter.trim(), "2000", "every INCR of redis-benchmark applied once");
    Ok(())
}
