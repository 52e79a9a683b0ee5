//! Three nodes behind a real HAProxy running `deploy/haproxy.cfg`: requests spread over
//! every node, a session reads back through any of them, a search is followed over SSE and
//! its report downloaded, an event reaches a client while its stream is open,
//! `/internal/*` is not reachable through it, and requests keep succeeding after a node is
//! killed: retried on another node until the health checks mark it down.
//!
//! Needs Debian's haproxy: `scripts/test` installs it and runs this test; plain `cargo test`
//! skips it as ignored.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::balancer::{self, cookie_session};
use shoal_tests::{binary_on_path, free_port, get_json, read_sse, wait_until, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORM: Duration = Duration::from_secs(40);

/// How long the health checks may take to mark a dead node down: two failed checks a
/// second apart (`fall 2`, `inter 1s`), with room for a loaded machine.
const MARKED_DOWN: Duration = Duration::from_secs(15);

/// `haproxy -db`: one process in the foreground (no master, no workers), so killing it
/// stops all of it.
struct Haproxy {
    child: Child,
    log_path: PathBuf,
}

impl Haproxy {
    /// Returns everything haproxy wrote: its warnings (a server going down) and its
    /// access log, one line a request.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("last lines haproxy wrote:\n{}", self.log_tail());
        }
    }
}

/// Returns the haproxy binary: Debian's package puts it in /usr/sbin, which a user's
/// `PATH` may not have.
fn haproxy_binary() -> anyhow::Result<PathBuf> {
    binary_on_path("haproxy")
        .or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|path| path.is_file()))
        .context("haproxy is not installed: apt-get install haproxy (scripts/test does this)")
}

/// Returns `line` with its first `host:port` word (`127.0.0.1:8001`, `:8080`) replaced by
/// `address`, its indentation kept.
fn with_address(line: &str, address: &str) -> String {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut replaced = false;
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|word| {
            if !replaced && word.contains(':') {
                replaced = true;
                address
            } else {
                word
            }
        })
        .collect();
    format!("{indent}{}", words.join(" "))
}

/// Writes `deploy/haproxy.cfg` with the nodes' ports and `listen` into `dir`, has haproxy
/// (`binary`) check it and starts haproxy; returns it and the names of the servers, in the
/// order of `node_ports`.
fn start_haproxy(
    binary: &Path,
    dir: &Path,
    node_ports: &[u16],
    listen: u16,
) -> anyhow::Result<(Haproxy, Vec<String>)> {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg"),
    )?;
    let listen_address = format!("127.0.0.1:{listen}");
    let mut ports = node_ports.iter();
    let mut servers = Vec::new();
    let mut config = String::new();
    for line in template.lines() {
        let line = if line.contains("# shoal-node") {
            let port = ports.next().context("deploy/haproxy.cfg has more servers than nodes")?;
            let name = line.split_whitespace().nth(1).context("a server line names a server")?;
            servers.push(name.to_string());
            with_address(line, &format!("127.0.0.1:{port}"))
        } else if line.contains("# shoal-listen") {
            with_address(line, &listen_address)
        } else {
            line.to_string()
        };
        config.push_str(&line);
        config.push('\n');
    }
    anyhow::ensure!(
        servers.len() == node_ports.len() && config.contains(&listen_address),
        "deploy/haproxy.cfg needs one `# shoal-listen` bind line and {} `# shoal-node` server \
         lines; it has {} server lines",
        node_ports.len(),
        servers.len()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let check = Command::new(binary).arg("-c").arg("-f").arg(&path).output()?;
    anyhow::ensure!(
        check.status.success(),
        "haproxy -c refuses deploy/haproxy.cfg:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log_path = dir.join("haproxy.log");
    let log = File::create(&log_path)?;
    let child = Command::new(binary)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start haproxy")?;
    Ok((Haproxy { child, log_path }, servers))
}

/// Returns how many requests in haproxy's access log were sent to another server after a
/// failure: their retries counter, the last of `actconn/feconn/beconn/srv_conn/retries`,
/// has a `+`.
fn num_redispatched(log: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.split_whitespace().any(|word| {
                let counters: Vec<&str> = word.split('/').collect();
                counters.len() == 5 && counters[4].starts_with('+')
            })
        })
        .count()
}

/// Reads the session of `cookie` through the load balancer, then creates one, asserting
/// that both succeed.
///
/// The read comes first: right after a kill, a kept-alive connection to the dead node may
/// still look alive to HAProxy. It retries a read that such a connection loses, but by
/// design never a write (`deploy/haproxy.cfg`), whose client would see its connection
/// closed without an answer.
async fn read_and_write(
    client: &reqwest::Client,
    lb: &str,
    cookie: &str,
    n: usize,
) -> anyhow::Result<()> {
    assert_eq!(cookie_session(client, lb, cookie).await?["data"]["user"], "ana", "read {n}");
    let response =
        client.post(format!("{lb}/api/sessions")).json(&json!({"data": {"n": n}})).send().await?;
    let status = response.status();
    let answer = response.text().await?;
    assert_eq!(status, StatusCode::CREATED, "write {n} after the kill: {answer}");
    Ok(())
}

/// Sends `request_line` with an empty body on a connection of its own to loopback `port`
/// and returns the status of the answer. Raw, because HTTP clients would tidy the target.
async fn raw_status(port: u16, request_line: &str) -> anyhow::Result<u16> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .with_context(|| format!("no answer to {request_line} within 5 s"))??;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).context("an answer with a status line")?;
    status.parse().with_context(|| format!("status line of {answer:?}"))
}

#[tokio::test]
#[ignore = "needs haproxy (Debian's package); scripts/test installs it and runs this test"]
async fn three_nodes_behind_haproxy() -> anyhow::Result<()> {
    let haproxy_binary = haproxy_binary()?;
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--sample-page-delay-ms", "30"])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|node| node.port).collect();
    let listen = free_port();
    let haproxy_dir = dir.path().join("haproxy");
    std::fs::create_dir_all(&haproxy_dir)?;
    let (haproxy, servers) = start_haproxy(&haproxy_binary, &haproxy_dir, &ports, listen)?;
    let lb = format!("http://127.0.0.1:{listen}");
    let health_url = format!("{lb}/api/health");
    wait_until("haproxy answers", FORM, || {
        let url = health_url.clone();
        async move { Ok(get_json(&url).await.is_ok()) }
    })
    .await
    .with_context(|| format!("haproxy's log:\n{}", haproxy.log_tail()))?;

    let cookie = balancer::serves_like_one_node(&lb, 3, FORM).await?;
    let client = reqwest::Client::new();

    tracing::info!("--- an event reaches a client through haproxy while its stream is open");
    let tracker: Value = client
        .post(format!("{lb}/api/trackers"))
        .json(&json!({"total": 1, "label": "through haproxy"}))
        .send()
        .await?
        .json()
        .await?;
    let tracker_events = format!("{lb}{}", tracker["events_url"].as_str().unwrap());
    let url = tracker_events.clone();
    // Two events and the stream stays open: the tracker never finishes.
    let follower = tokio::spawn(async move { read_sse(&url, None, 2, FORM).await });
    // Posted until the follower has its second event: one posted before it subscribed is
    // part of its snapshot, not streamed.
    wait_until("the open stream delivers a progress event", FORM, || {
        let finished = follower.is_finished();
        let post = (!finished).then(|| {
            client.post(&tracker_events).json(&json!({"type": "progress", "data": {}})).send()
        });
        async move {
            if let Some(post) = post {
                post.await?.error_for_status()?;
            }
            Ok(finished)
        }
    })
    .await?;
    let (status, events) = follower.await??;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(kinds, ["snapshot", "progress"], "{events:?}");
    // The follower has stopped reading, but its connection stays open until the stream
    // sends again, and leastconn would keep requests off the node serving it: finish the
    // tracker, which ends the stream, and wait until haproxy has logged its end.
    let finished =
        client.post(&tracker_events).json(&json!({"type": "completed", "data": {}})).send().await?;
    assert_eq!(finished.status(), StatusCode::OK);
    let stream_logged = format!("\"GET {} HTTP/1.1\"", tracker["events_url"].as_str().unwrap());
    wait_until("haproxy has logged the end of the tracker's stream", FORM, || {
        let logged = haproxy.log().contains(&stream_logged);
        async move { Ok(logged) }
    })
    .await?;

    tracing::info!("--- /internal/* stays off the public side");
    for path in ["/internal/raft/vote", "//internal/raft/vote", "/%69nternal/raft/vote"] {
        let through_haproxy = client.post(format!("{lb}{path}")).body("{}").send().await?;
        assert_eq!(through_haproxy.status(), StatusCode::NOT_FOUND, "{path} through haproxy");
    }
    let node_port = cluster.nodes[0].port;
    for target in
        ["/internal/raft/vote", &format!("http://127.0.0.1:{node_port}/internal/raft/vote")]
    {
        let on_the_node = raw_status(node_port, &format!("POST {target} HTTP/1.1")).await?;
        assert_eq!(on_the_node, 401, "{target} on the node itself: unsigned");
    }
    for target in [
        "/internal/raft/vote",
        "/./internal/raft/vote",
        "/INTERNAL/raft/vote",
        &format!("http://127.0.0.1:{listen}/internal/raft/vote"),
    ] {
        let through_haproxy = raw_status(listen, &format!("POST {target} HTTP/1.1")).await?;
        assert_eq!(through_haproxy, 404, "{target} through haproxy");
    }
    // A browser's write through haproxy on a non-default port: its Origin matches the Host
    // haproxy passes on, so it is not taken for a cross-site one.
    let same_origin =
        client.post(format!("{lb}/api/sessions")).header("origin", &lb).body("{}").send().await?;
    assert_eq!(same_origin.status(), StatusCode::CREATED);

    tracing::info!("--- a node dies: requests through haproxy keep succeeding");
    // A follower: a leader's death would add an election, during which every node rightly
    // answers 503; what is tested here is what HAProxy does about a dead node.
    let victim = (leader + 1) % cluster.nodes.len();
    let survivors: BTreeSet<String> =
        (0..cluster.nodes.len()).filter(|n| *n != victim).map(|n| format!("node-{n}")).collect();
    cluster.nodes[victim].kill();
    let marked_down = format!("/{} is DOWN", servers[victim]);
    let killed = Instant::now();
    let mut before_down = 0;
    while !haproxy.log().contains(&marked_down) {
        anyhow::ensure!(
            killed.elapsed() < MARKED_DOWN,
            "haproxy did not mark {} down within {MARKED_DOWN:?}; its log:\n{}",
            servers[victim],
            haproxy.log_tail()
        );
        read_and_write(&client, &lb, &cookie, before_down).await?;
        before_down += 1;
    }
    assert!(before_down > 0, "no request was sent before the checks marked the node down");
    assert!(
        num_redispatched(&haproxy.log()) > 0,
        "none of the {before_down} reads and writes before the node was marked down was sent \
         to it first and then to another node"
    );
    tracing::info!(before_down, "marked down after {:?}", killed.elapsed());
    for n in before_down..before_down + 20 {
        read_and_write(&client, &lb, &cookie, n).await?;
    }
    let mut instances = BTreeSet::new();
    for _ in 0..20 {
        let health = client.get(&health_url).send().await?;
        assert_eq!(health.status(), StatusCode::OK);
        let health: Value = health.json().await?;
        instances.insert(health["instance_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(instances, survivors, "haproxy reached {instances:?} after the kill");
    Ok(())
}
