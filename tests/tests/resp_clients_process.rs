//! Real Python Redis clients, unmodified, against a 3-node shoal cluster serving the Redis
//! protocol on every node (issue 18): redis-py's blocking and asyncio clients over RESP2
//! and RESP3; a Flask app keeping its sessions through Flask-Session behind a real HAProxy
//! in TCP mode while each node in turn is SIGKILLed; and two python-socketio servers, each
//! on its own node, whose events reach each other's clients through shoal's pub/sub.
//!
//! The clients are those of `tests/python/requirements.txt`, run by the scripts beside it.
//! `scripts/test` installs them (and haproxy) and runs these tests; plain `cargo test`
//! skips them as ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use shoal_tests::python::{python_command, run_script, Background};
use shoal_tests::resp::{client, raw, redis_cli, resp_port};
use shoal_tests::{binary_on_path, free_port, wait_until, TestCluster, TestNode, CLUSTER_ARGS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const READY: Duration = Duration::from_secs(30);
/// How long a script may run before it is killed and the test fails.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);
/// How long HAProxy's checks (every 500 ms, `fall 2`, `rise 2`) may take to mark a server
/// down or up, with room for a loaded machine.
const MARKED: Duration = Duration::from_secs(15);
/// `/me` calls made while a node is down, before it is restarted.
const NUM_CALLS_WHILE_DOWN: usize = 12;
/// How long after the kill of the leader `/me` may fail (each failure retried by the test,
/// as a user reloading the page would); at any other time, the kill of a follower
/// included, none may.
///
/// The app's redis-py client retries connection errors (`tests/python/flask_app.py`), so
/// a connection the proxy closes at the kill does not reach the app. What does, when the
/// leader is the node killed, is shoal's `-TRYAGAIN` while the others elect a new one
/// (about a second with the test's 300 ms election timeout): redis-py raises it as a
/// plain `ResponseError`, which it has no way to retry apart from every other error reply.
const FAILOVER_WINDOW: Duration = Duration::from_secs(5);

/// Returns `count` distinct loopback ports that were free a moment ago.
fn distinct_ports(count: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    // Bounded: free_port rarely hands out the same port twice in a row.
    for _ in 0..count * 20 {
        if ports.len() == count {
            break;
        }
        ports.insert(free_port());
    }
    ports.into_iter().collect()
}

/// Three shoal nodes, each serving RESP on a port it keeps across restarts (so that a
/// restarted node is where HAProxy looks for it).
struct RespCluster {
    cluster: TestCluster,
    resp_ports: Vec<u16>,
}

impl RespCluster {
    /// Starts the nodes in `root` and waits until every node takes writes.
    async fn start(root: &Path) -> anyhow::Result<Self> {
        let ports = distinct_ports(6);
        ensure!(ports.len() == 6, "six distinct free ports");
        let (http_ports, resp_ports) = ports.split_at(3);
        let peers =
            http_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let mut nodes = Vec::new();
        for (index, (http_port, resp_port)) in http_ports.iter().zip(resp_ports).enumerate() {
            let resp_listen = format!("127.0.0.1:{resp_port}");
            let instance = format!("node-{index}");
            let mut args: Vec<&str> = CLUSTER_ARGS.to_vec();
            args.extend(["--resp-listen", &resp_listen, "--peers", &peers]);
            args.extend(["--instance-id", &instance]);
            nodes.push(TestNode::start_on(*http_port, &root.join(format!("n{index}")), &args)?);
        }
        let resp =
            Self { cluster: TestCluster::from_nodes(nodes), resp_ports: resp_ports.to_vec() };
        resp.cluster.wait_converged(&[0, 1, 2], 3, READY).await?;
        for index in 0..3 {
            resp.wait_back(index).await?;
        }
        Ok(resp)
    }

    /// Returns `redis://127.0.0.1:{port}/0` of node `index`.
    fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}/0", self.resp_ports[index])
    }

    /// Waits until node `index` serves RESP on its port and takes a write there.
    async fn wait_back(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.cluster.nodes[index];
        let served = resp_port(node, READY).await?;
        ensure!(served == self.resp_ports[index], "node {index} serves RESP on {served}");
        let connection = client(served)?;
        wait_until(&format!("node {index} takes a RESP write"), READY, || {
            let connection = connection.clone();
            async move {
                let mut connection = connection.get_multiplexed_async_connection().await?;
                redis::cmd("SET")
                    .arg("probe")
                    .arg(index)
                    .query_async::<()>(&mut connection)
                    .await?;
                Ok(true)
            }
        })
        .await
        .with_context(|| format!("log of node {index}:\n{}", tail(&node.log(), 30)))
    }
}

fn tail(text: &str, num_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(num_lines)..].join("\n")
}

/// Waits until `GET url` answers 200 (a Python server that has started listening).
async fn wait_http(url: &str, process: &mut Background) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let result = wait_until(&format!("{url} answers"), READY, || {
        let request = http.get(url).timeout(Duration::from_secs(2)).send();
        async move { Ok(request.await?.status() == 200) }
    })
    .await;
    if let Some(status) = process.exited() {
        bail!("the server exited with {status}\n{}", process.output_tail());
    }
    result.with_context(|| process.output_tail())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python clients (redis-py, Flask-Session, python-socketio); scripts/test installs them and runs this"]
async fn redis_py_blocking_and_asyncio_clients_work_across_three_nodes() -> anyhow::Result<()> {
    shoal_tests::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let resp = RespCluster::start(dir.path()).await?;
    let urls: Vec<String> = (0..3).map(|index| resp.url(index)).collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();

    tracing::info!(
        "--- redis_py_check.py: redis.Redis (RESP2), redis.asyncio.Redis (RESP2, RESP3)"
    );
    let output = run_script(dir.path(), "redis_py_check.py", &args, &[], SCRIPT_DEADLINE).await?;
    let report = output.last_json()?;
    if !(output.status.success() && report["ok"] == true) {
        let failures: Vec<&str> = report["failures"]
            .as_array()
            .map(|failures| failures.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        panic!(
            "redis-py failed on shoal ({}):\n{}\n--- stderr, the end:\n{}",
            output.status,
            failures.join("\n"),
            // Less redis-py's own line for each RESP3 push it hands on.
            tail(&without_push_lines(&output.stderr), 40)
        );
    }
    tracing::info!(suites = %report["suites"], "what redis-py reported");
    let version = redis_version(resp.resp_ports[0])?;
    for suite in ["sync-resp2", "asyncio-resp2", "asyncio-resp3"] {
        let suite_report = &report["suites"][suite];
        assert!(
            suite_report["checks"].as_u64() >= Some(25),
            "{suite} ran too few checks: {report}"
        );
        assert_eq!(suite_report["failures"], serde_json::json!([]), "{suite}: {report}");
        // PUBLISH counts subscribers cluster-wide: one on B and one pattern on C.
        assert_eq!(suite_report["publish_counts"], serde_json::json!([2, 1]), "{suite}");
        assert_eq!(
            suite_report["redis_version"].as_str(),
            Some(version.as_str()),
            "{suite}: INFO's redis_version as redis-py parsed it"
        );
    }
    Ok(())
}

fn without_push_lines(text: &str) -> String {
    text.lines().filter(|line| !line.starts_with("Push response: ")).collect::<Vec<_>>().join("\n")
}

/// Returns the `redis_version` that `redis-cli INFO server` on `port` shows.
fn redis_version(port: u16) -> anyhow::Result<String> {
    let info = redis_cli(port, &["INFO", "server"])?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:").map(str::to_string))
        .with_context(|| format!("INFO server has no redis_version:\n{info}"))
}

/// A real HAProxy, `-db`: one process in the foreground, so killing it stops all of it.
struct Haproxy {
    process: Background,
    stats_socket: PathBuf,
    port: u16,
}

impl Haproxy {
    /// Writes a TCP-mode configuration in front of `resp_ports` into `dir`, has haproxy
    /// check it, and starts it. Servers are named `shoal0`… in the order of `resp_ports`.
    fn start(dir: &Path, resp_ports: &[u16]) -> anyhow::Result<Self> {
        let binary = binary_on_path("haproxy")
            .or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|path| path.is_file()))
            .context(
                "haproxy is not installed: apt-get install haproxy (scripts/test does this)",
            )?;
        let port = free_port();
        let stats_socket = dir.join("haproxy.sock");
        let mut config = format!(
            "global
    log stderr format raw local0
    stats socket {socket} mode 600 level admin
    maxconn 512

defaults
    mode tcp
    log global
    option tcplog
    # Short, for a test on loopback: a dead server is found within a second, and a
    # connection idle for 30 s is closed (redis-py reconnects).
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # A connection that cannot reach its server (a killed node, not yet marked down) is
    # tried again on another one.
    retries 2
    option redispatch 1

listen resp
    bind 127.0.0.1:{port}
    balance roundrobin
    option tcp-check
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    default-server inter 500ms fall 2 rise 2
",
            socket = stats_socket.display()
        );
        for (index, resp_port) in resp_ports.iter().enumerate() {
            config.push_str(&format!("    server shoal{index} 127.0.0.1:{resp_port} check\n"));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &config)?;
        let check = Command::new(&binary).arg("-c").arg("-f").arg(&path).output()?;
        ensure!(
            check.status.success(),
            "haproxy -c refuses the configuration:\n{config}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut command = Command::new(&binary);
        command.arg("-db").arg("-f").arg(&path);
        let process = Background::spawn("haproxy", command, dir)?;
        Ok(Self { process, stats_socket, port })
    }

    /// Returns each server's status as the stats socket tells it (`UP`, `DOWN`,
    /// `UP 1/2`…).
    async fn statuses(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut stream = UnixStream::connect(&self.stats_socket).await?;
        stream.write_all(b"show stat\n").await?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer))
            .await
            .context("the stats socket did not answer within 2 s")??;
        let mut lines = answer.lines();
        let header = lines.next().context("show stat answered nothing")?;
        let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let column =
            |name: &str| columns.iter().position(|column| *column == name).context("a column");
        let (server, status) = (column("svname")?, column("status")?);
        Ok(lines
            .map(|line| line.split(',').collect::<Vec<&str>>())
            .filter(|fields| fields.len() > status)
            .map(|fields| (fields[server].to_string(), fields[status].to_string()))
            .collect())
    }

    /// Waits until HAProxy's checks say `status` (`UP`, `DOWN`) of server `shoal{index}`.
    async fn wait_status(&self, index: usize, status: &str) -> anyhow::Result<()> {
        let server = format!("shoal{index}");
        wait_until(&format!("haproxy says {server} is {status}"), MARKED, || async {
            let statuses = self.statuses().await?;
            match statuses.get(&server) {
                Some(got) if got == status => Ok(true),
                Some(got) => bail!("{server} is {got}"),
                None => bail!("no {server} in {statuses:?}"),
            }
        })
        .await
        .with_context(|| self.process.output_tail())
    }
}

/// A browser's view of the Flask app: one cookie jar (the `session` cookie), requests
/// with a timeout.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    /// Returns the JSON answer of `GET {path}`, which must be 200, keeping the cookie the
    /// app sets.
    async fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("session={cookie}"));
        }
        let response = request.timeout(Duration::from_secs(15)).send().await?;
        let status = response.status();
        for set_cookie in response.headers().get_all("set-cookie") {
            let pair = set_cookie.to_str()?.split(';').next().unwrap_or_default();
            if let Some(value) = pair.strip_prefix("session=") {
                self.cookie = Some(value.to_string());
            }
        }
        let body = response.text().await?;
        ensure!(status == 200, "{path} answered {status}");
        Ok(serde_json::from_str(&body)?)
    }
}

/// The `/me` calls and what they showed: every call answered 200 incremented the counter
/// exactly once; a failed one may have incremented it too (its write reached the cluster
/// but its answer did not reach the app), which shows as a larger step at the next
/// success and is counted apart.
#[derive(Debug, Default)]
struct Tally {
    num_successes: u64,
    failures: Vec<String>,
    failures_since_success: u64,
    last_count: u64,
    applied_unacknowledged: u64,
}

impl Tally {
    /// Calls `/me` until it answers 200 and checks the counter it shows. A failure is
    /// retried (every 100 ms) while `tolerated_until` has not passed; past it (or with
    /// `None`) the call fails the test.
    async fn me(
        &mut self,
        browser: &mut Browser,
        tolerated_until: Option<Instant>,
    ) -> anyhow::Result<()> {
        loop {
            let error = match browser.get("/me").await {
                Ok(answer) => return self.success(&answer),
                Err(error) => format!("{error:#}"),
            };
            tracing::info!(%error, "a /me call failed");
            self.failures.push(error);
            self.failures_since_success += 1;
            if tolerated_until.is_none_or(|until| Instant::now() > until) {
                bail!(
                    "/me failed where no failure is tolerated (only within {FAILOVER_WINDOW:?} \
                     of the leader's kill): {:?}",
                    self.failures
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn success(&mut self, answer: &Value) -> anyhow::Result<()> {
        assert_eq!(answer["user"], "ana", "the session lost its user: {answer}");
        let count = answer["count"].as_u64().with_context(|| format!("a count in {answer}"))?;
        let step = count.saturating_sub(self.last_count);
        assert!(
            step >= 1 && step <= 1 + self.failures_since_success,
            "the counter went from {} to {count} over one successful /me and {} failed ones: \
             an acknowledged write was lost (or one applied twice); {self:?}",
            self.last_count,
            self.failures_since_success,
        );
        self.applied_unacknowledged += step - 1;
        self.num_successes += 1;
        self.failures_since_success = 0;
        self.last_count = count;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python clients (redis-py, Flask-Session, python-socketio); scripts/test installs them and runs this"]
async fn flask_session_behind_haproxy_keeps_the_session_while_each_node_is_killed(
) -> anyhow::Result<()> {
    shoal_tests::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let mut resp = RespCluster::start(dir.path()).await?;
    let haproxy = Haproxy::start(dir.path(), &resp.resp_ports)?;
    for index in 0..3 {
        haproxy.wait_status(index, "UP").await?;
    }
    let pong = raw(haproxy.port, b"PING\r\n", Duration::from_millis(300)).await?;
    assert_eq!(pong, b"+PONG\r\n", "PING through haproxy");

    tracing::info!("--- the Flask app, REDIS_URL at haproxy");
    let app_port = free_port();
    let mut command = python_command("flask_app.py", &[&app_port.to_string()])?;
    command.env("REDIS_URL", format!("redis://127.0.0.1:{}/0", haproxy.port));
    let mut app = Background::spawn("flask_app", command, dir.path())?;
    let base = format!("http://127.0.0.1:{app_port}");
    wait_http(&format!("{base}/health"), &mut app).await?;
    let mut browser = Browser { http: reqwest::Client::new(), base, cookie: None };
    let login = browser.get("/login?user=ana").await?;
    assert_eq!(login, serde_json::json!({"user": "ana", "count": 0}));
    let sid = browser.cookie.clone().context("/login set the session cookie")?;
    let mut tally = Tally::default();
    for _ in 0..5 {
        tally.me(&mut browser, None).await?;
    }

    for victim in 0..3 {
        let leader = resp.cluster.wait_converged(&[0, 1, 2], 3, READY).await?;
        tracing::info!(victim, leader, "--- SIGKILL node {victim}; the session keeps answering");
        let failures_before = tally.failures.len();
        resp.cluster.nodes[victim].kill();
        let killed = Instant::now();
        let tolerated_until = (victim == leader).then(|| killed + FAILOVER_WINDOW);
        for _ in 0..NUM_CALLS_WHILE_DOWN {
            tally.me(&mut browser, tolerated_until).await?;
        }
        // The calls above may all have run before the checks noticed; from here on HAProxy
        // sends no new connection to the dead node.
        haproxy.wait_status(victim, "DOWN").await?;
        tracing::info!(victim, "marked down after {:?}", killed.elapsed());
        for _ in 0..3 {
            tally.me(&mut browser, tolerated_until).await?;
        }
        tracing::info!(
            victim,
            num_failed = tally.failures.len() - failures_before,
            "/me calls that failed (and were retried) after the kill"
        );

        tracing::info!(victim, "--- restart node {victim}, wait until it is back");
        resp.cluster.nodes[victim].restart()?;
        resp.cluster.nodes[victim].wait_ready(READY).await?;
        resp.wait_back(victim).await?;
        haproxy.wait_status(victim, "UP").await?;
        tally.me(&mut browser, None).await?;
    }

    tracing::info!("--- no acknowledged write lost");
    let final_answer = browser.get("/me").await?;
    tally.success(&final_answer)?;
    assert_eq!(
        tally.last_count,
        tally.num_successes + tally.applied_unacknowledged,
        "the counter counts every successful /me once (plus failed ones whose write applied)"
    );
    assert!(tally.applied_unacknowledged <= tally.failures.len() as u64, "{tally:?}");
    // What the app's failed requests met, as redis-py raised it: only the election's
    // TRYAGAIN; connection errors were retried by the client and never reached the app.
    let stderr = app.stderr();
    let raised: BTreeSet<&str> =
        stderr.lines().filter(|line| line.starts_with("redis.exceptions.")).collect();
    tracing::info!(
        num_successes = tally.num_successes,
        num_failures = tally.failures.len(),
        applied_unacknowledged = tally.applied_unacknowledged,
        ?raised,
        "the /me calls"
    );
    assert!(
        raised.iter().all(|line| line.starts_with("redis.exceptions.ResponseError: TRYAGAIN ")),
        "the app met errors other than TRYAGAIN: {raised:?}"
    );
    assert_eq!(browser.cookie.as_deref(), Some(sid.as_str()), "the session id stayed");

    // Flask-Session's key, as a user would look for it, on every node.
    let key = format!("session:{sid}");
    for (index, port) in resp.resp_ports.iter().enumerate() {
        let listed = redis_cli(*port, &["KEYS", "session:*"])?;
        assert!(listed.lines().any(|line| line == key), "KEYS session:* on node {index}: {listed}");
        let ttl: i64 = redis_cli(*port, &["TTL", &key])?.trim().parse()?;
        assert!(ttl > 0, "Flask-Session's key has its lifetime as TTL: {ttl}");
    }
    drop(app);
    drop(haproxy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python clients (redis-py, Flask-Session, python-socketio); scripts/test installs them and runs this"]
async fn socketio_emit_on_one_server_reaches_a_client_of_another_through_shoal(
) -> anyhow::Result<()> {
    shoal_tests::init_test_tracing();
    let dir = tempfile::tempdir()?;
    let resp = RespCluster::start(dir.path()).await?;

    tracing::info!("--- two python-socketio servers, each on its own shoal node");
    let mut servers = Vec::new();
    for (name, node) in [("one", 0), ("two", 1)] {
        let port = free_port();
        let args = [name, &resp.url(node), &port.to_string()].map(str::to_string);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = python_command("socketio_server.py", &args)?;
        let mut server = Background::spawn(&format!("socketio_{name}"), command, dir.path())?;
        wait_http(&format!("http://127.0.0.1:{port}/health"), &mut server).await?;
        servers.push((server, port));
    }
    let (server_one, server_two) = (servers[0].1, servers[1].1);

    tracing::info!("--- a client of server two");
    // The client gives up (and exits 1) this long after connecting, well before the test
    // would kill it.
    let deadline = READY.as_secs().to_string();
    let command = python_command(
        "socketio_client.py",
        &[&format!("http://127.0.0.1:{server_two}"), "2", &deadline],
    )?;
    let mut client_process = Background::spawn("socketio_client", command, dir.path())?;
    wait_until("the client is connected", READY, || {
        let connected = client_process.stdout().contains("\"connected\"");
        async move { Ok(connected) }
    })
    .await
    .with_context(|| client_process.output_tail())?;
    // Server two subscribes to the channel `socketio` once its first client connects.
    let node_two = resp.resp_ports[1];
    wait_until("server two subscribes on its node", READY, || async move {
        let numsub = redis_cli(node_two, &["PUBSUB", "NUMSUB", "socketio"])?;
        Ok(numsub.lines().nth(1).and_then(|count| count.trim().parse::<u64>().ok()) >= Some(1))
    })
    .await?;

    tracing::info!("--- server one emits twice");
    let http = reqwest::Client::new();
    for n in [1, 2] {
        let url = format!("http://127.0.0.1:{server_one}/emit?n={n}");
        let response = http.post(url).timeout(Duration::from_secs(10)).send().await?;
        assert_eq!(response.status(), 200, "emit {n}: {}", response.text().await?);
    }
    let status = client_process.wait_exit(SCRIPT_DEADLINE).await?;
    let stdout = client_process.stdout();
    assert!(
        status.success(),
        "the client did not get both events:\n{}",
        client_process.output_tail()
    );
    let received: Value = stdout
        .lines()
        .rev()
        .find_map(|line| {
            serde_json::from_str::<Value>(line).ok().filter(|line| line["received"].is_array())
        })
        .with_context(|| format!("no received line:\n{stdout}"))?;
    assert_eq!(
        received["received"],
        serde_json::json!([{"n": 1, "from": "one"}, {"n": 2, "from": "one"}]),
        "both events, in the order emitted, on the client of the other server"
    );
    Ok(())
}
