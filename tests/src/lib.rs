//! Test harness: real `shoal` processes on loopback ports (or in network namespaces) with
//! temp data dirs, and the fault suite run against them: recorded histories, a
//! linearizability checker, and nemeses.
//!
//! Processes are SIGKILLed when their handle drops; every wait has a named deadline and
//! fails with what it last saw.

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod balancer;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod netns;
pub mod python;
pub mod random;
pub mod register;
pub mod resp;
pub mod robustness;
mod servers;
pub mod system;
pub mod workload;

pub use servers::{binary_on_path, Backing, Mode, RedisServer, S3Server};

/// Returns the path of the `shoal` binary, building it once per test process unless
/// `SHOAL_BIN` names one.
pub fn shoal_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SHOAL_BIN") {
            return PathBuf::from(path);
        }
        let workspace =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "shoal-node", "--bin", "shoal"])
            .current_dir(workspace)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the shoal binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug").join("shoal")
    })
}

/// Sends the test's logs (`RUST_LOG`, default `info`) to the test's output, once per
/// process.
pub fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}

/// Returns a loopback port that was free for both TCP and UDP a moment ago (a node
/// gossips on the UDP port of its HTTP address), and that this process has not handed
/// out before: tests run in parallel threads, and a port given to two of them before
/// either node binds it would join their clusters (they share `TEST_SECRET`), as a full
/// run once showed.
///
/// The port comes from below the kernel's ephemeral range, so no outgoing connection or
/// unbound UDP socket of any process can take it between this check and the node's
/// bind, as one CI run showed ("cannot bind …/UDP for gossip").
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Option<std::collections::HashSet<u16>>> =
        std::sync::Mutex::new(None);
    let candidates = ports_outside_ephemeral_range();
    for _ in 0..10_000 {
        let port = match &candidates {
            Some(range) => rand::random_range(range.clone()),
            None => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0 works");
                listener.local_addr().expect("bound").port()
            }
        };
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if !free {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.get_or_insert_with(Default::default).insert(port) {
            return port;
        }
    }
    panic!("no loopback port free for TCP and UDP that this process has not handed out")
}

/// Ports from 20000 up to the start of `net.ipv4.ip_local_port_range`, when that leaves
/// at least a thousand; `None` sends `free_port` to the kernel's own choice.
fn ports_outside_ephemeral_range() -> Option<std::ops::Range<u16>> {
    const LOWEST: u16 = 20_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_start: u16 = range.split_whitespace().next()?.parse().ok()?;
    (ephemeral_start >= LOWEST + 1000).then_some(LOWEST..ephemeral_start)
}

/// Polls `predicate` every 50 ms until it returns `Ok(true)` or `deadline` passes; the
/// failure names `what` and the last thing the predicate said.
pub async fn wait_until<F, Fut>(
    what: &str,
    deadline: Duration,
    mut predicate: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        let last = match predicate().await {
            Ok(true) => return Ok(()),
            Ok(false) => "predicate false".to_string(),
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting until {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fast Raft timings so that tests do not wait on production defaults.
pub const FAST_RAFT_ARGS: &[&str] = &[
    "--heartbeat-interval-ms",
    "50",
    "--election-timeout-ms",
    "200",
    "--maintenance-interval-ms",
    "200",
];

/// Where a node listens, and the command prefix that puts it there (such as
/// `ip netns exec <namespace>`; empty on loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub host: String,
    pub port: u16,
    pub launcher: Vec<String>,
}

impl Placement {
    /// Returns a placement on loopback port `port`.
    pub fn loopback(port: u16) -> Self {
        Self { host: "127.0.0.1".to_string(), port, launcher: Vec::new() }
    }

    /// Returns `host:port`, as `--peers` names the node.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One `shoal` process.
#[derive(Debug)]
pub struct TestNode {
    child: Option<Child>,
    pub host: String,
    pub port: u16,
    launcher: Vec<String>,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    /// The most files the process may open (soft and hard limit), when set.
    open_files: Option<u32>,
    /// The `shoal` binary the next start runs; `None`: [`shoal_binary`] (the working
    /// tree's build).
    binary: Option<PathBuf>,
    starts: u32,
}

impl TestNode {
    /// Starts `shoal` on a free loopback port with its data in `data_dir`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(free_port(), data_dir, extra_args)
    }

    /// Starts `shoal` on loopback port `port` with its data in `data_dir`.
    pub fn start_on(port: u16, data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(port, data_dir, extra_args, &[])
    }

    /// Starts `shoal` on `port` with `envs` set as well (the `AWS_*` variables).
    pub fn start_with(
        port: u16,
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_placed(Placement::loopback(port), data_dir, extra_args, envs)
    }

    /// Starts `shoal` at `placement` with `envs` set as well.
    pub fn start_placed(
        placement: Placement,
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut node = Self::unstarted(placement, data_dir, extra_args, envs);
        node.spawn()?;
        Ok(node)
    }

    /// Starts the `shoal` binary at `binary` (another build, such as an earlier release's)
    /// at `placement` with `envs` set as well; later starts run it too, until
    /// [`TestNode::set_binary`] names another.
    pub fn start_binary(
        binary: &Path,
        placement: Placement,
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut node = Self::unstarted(placement, data_dir, extra_args, envs);
        node.binary = Some(binary.to_path_buf());
        node.spawn()?;
        Ok(node)
    }

    /// Starts `shoal` on a free port with at most `open_files` descriptors (soft and hard
    /// limit, so it cannot raise them), set by bash's `ulimit -n` before it execs shoal.
    pub fn start_with_open_files(
        data_dir: &Path,
        extra_args: &[&str],
        open_files: u32,
    ) -> anyhow::Result<Self> {
        let mut node = Self::unstarted(Placement::loopback(free_port()), data_dir, extra_args, &[]);
        node.open_files = Some(open_files);
        node.spawn()?;
        Ok(node)
    }

    fn unstarted(
        placement: Placement,
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(String, String)],
    ) -> Self {
        Self {
            child: None,
            host: placement.host,
            port: placement.port,
            launcher: placement.launcher,
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            envs: envs.to_vec(),
            open_files: None,
            binary: None,
            starts: 0,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = File::options().create(true).append(true).open(&self.log_path)?;
        // The program and its arguments before shoal's own: a launcher (such as
        // `ip netns exec`), then bash when the open-file limit is set (`exec`: the process
        // is shoal itself, so kill and /proc reach it).
        let mut program: Vec<std::ffi::OsString> =
            self.launcher.iter().map(std::ffi::OsString::from).collect();
        if let Some(limit) = self.open_files {
            program.extend(["bash".into(), "-c".into()]);
            program.push(format!("ulimit -n {limit} && exec \"$0\" \"$@\"").into());
        }
        program.push(self.binary().into());
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        let child = command
            .arg("--listen")
            .arg(format!("{}:{}", self.host, self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("SHOAL_LOG", "info,shoal_raft=debug,openraft=warn")
            .env_remove("RUST_LOG")
            .env_remove("REDIS_URL")
            .envs(self.envs.iter().map(|(name, value)| (name, value)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start shoal")?;
        self.child = Some(child);
        Ok(())
    }

    /// Returns `host:port`, as `--peers` names the node.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Returns `http://<host>:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// Returns the process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns the `shoal` binary the node's next start runs.
    pub fn binary(&self) -> &Path {
        match &self.binary {
            Some(binary) => binary,
            None => shoal_binary(),
        }
    }

    /// Makes the node's next starts ([`TestNode::restart`]) run the `shoal` binary at
    /// `path` (such as [`shoal_binary`] after an older build: an upgrade); the running
    /// process is not touched.
    pub fn set_binary(&mut self, path: &Path) {
        self.binary = Some(path.to_path_buf());
    }

    /// Sets (or with `None` removes) environment variable `name` for the node's next
    /// starts; the running process keeps what it started with.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.envs.retain(|(existing, _)| existing != name);
        if let Some(value) = value {
            self.envs.push((name.to_string(), value.to_string()));
        }
    }

    /// Waits until `/api/health/ready` answers 200.
    pub async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = self.url("/api/health/ready");
        let result = wait_until("the node is ready", deadline, || {
            let request = client.get(&url).timeout(Duration::from_secs(2)).send();
            async move { Ok(request.await?.status() == 200) }
        })
        .await;
        if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
        {
            bail!("shoal exited with {status}; log:\n{}", self.log());
        }
        result.with_context(|| format!("log:\n{}", self.log()))
    }

    /// Returns the node's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the node is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }

    /// Returns whether the process was started and has exited (killed by another
    /// process, or crashed).
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))))
    }

    /// SIGKILLs the process and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM, as an orchestrator does, and waits up to
    /// `deadline` for it to exit (then SIGKILLs it and fails).
    pub async fn terminate(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        let started = std::time::Instant::now();
        let mut child = self.child.take().context("the node is not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("shoal did not exit within {deadline:?} of SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process with SIGSTOP (a long pause, as a stalled VM or a GC would cause),
    /// or lets it go on with SIGCONT.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("the node is not running")?.id();
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits until the node answers `/api/health` and returns its Raft id.
    pub async fn wait_node_id(&self, deadline: Duration) -> anyhow::Result<u64> {
        let url = self.url("/api/health");
        let found = std::sync::Arc::new(std::sync::Mutex::new(None));
        wait_until("the node answers with its id", deadline, || {
            let (url, found) = (url.clone(), found.clone());
            async move {
                let id = get_json(&url).await?["node_id"].as_u64();
                *found.lock().unwrap() = id;
                Ok(id.is_some())
            }
        })
        .await
        .with_context(|| format!("log:\n{}", self.log()))?;
        let id = *found.lock().unwrap();
        id.context("no node id")
    }

    /// Starts the process again on the same port and data dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Returns everything the node has logged, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Reads the SSE stream at `url` (resuming after `last_event_id`) until it ends or
/// `limit` events have arrived; returns the status and the events.
pub async fn read_sse(
    url: &str,
    last_event_id: Option<&str>,
    limit: usize,
    deadline: Duration,
) -> anyhow::Result<(u16, Vec<SseEvent>)> {
    let client = reqwest::Client::new();
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let read = async {
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        let mut buffer = String::new();
        let mut events = Vec::new();
        while events.len() < limit {
            let Some(chunk) = response.chunk().await? else {
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = SseEvent { id: None, event: "message".into(), data: String::new() };
                let mut is_comment_only = true;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        event.data.push_str(value.trim_start());
                    } else {
                        continue;
                    }
                    is_comment_only = false;
                }
                if !is_comment_only {
                    events.push(event);
                }
            }
        }
        anyhow::Ok((status, events))
    };
    tokio::time::timeout(deadline, read).await.context("the SSE stream did not end in time")?
}

/// The secret test clusters share.
pub const TEST_SECRET: &str = "test-cluster-secret-0123456789";

/// Raft and gossip timings for multi-node tests: fast, with room for a loaded machine.
pub const CLUSTER_ARGS: &[&str] = &[
    "--heartbeat-interval-ms",
    "50",
    "--election-timeout-ms",
    "300",
    "--gossip-interval-ms",
    "100",
    "--maintenance-interval-ms",
    "200",
    "--cluster-secret",
    TEST_SECRET,
];

/// Creates a session whose data is `{"n": n}` at `base` (`http://host:port`); returns its
/// id when the creation was acknowledged (201), `None` on any other outcome: what the
/// writers of the scaling and container tests count as written.
pub async fn create_numbered_session(
    client: &reqwest::Client,
    base: &str,
    n: u64,
) -> Option<String> {
    let body = serde_json::json!({ "data": { "n": n } });
    let response = client.post(format!("{base}/api/sessions")).json(&body).send().await.ok()?;
    if response.status() != reqwest::StatusCode::CREATED {
        return None;
    }
    let created: serde_json::Value = response.json().await.ok()?;
    created["id"].as_str().map(str::to_string)
}

/// Returns `GET url` as JSON once it answers 200, retrying for up to 30 s while it is
/// not served yet: 503 (an election, no quorum), 502 (a load balancer between nodes) or
/// no connection; any other status fails at once.
pub async fn get_served(url: &str) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(url).send().await {
            match response.status().as_u16() {
                200 => return Ok(response.json().await?),
                502 | 503 => {}
                status => bail!("{url} answered {status}"),
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("{url} was not served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns `GET url` as JSON.
pub async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let response = reqwest::Client::new().get(url).timeout(Duration::from_secs(5)).send().await?;
    Ok(response.json().await?)
}

/// Several `shoal` processes started with the same peer list.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    root: PathBuf,
    args: Vec<String>,
    /// The `shoal` binary new nodes run; `None`: [`shoal_binary`].
    binary: Option<PathBuf>,
}

impl TestCluster {
    /// Starts `count` nodes in `root`, each with every node in `--peers`.
    pub fn start(root: &Path, count: usize, extra_args: &[&str]) -> anyhow::Result<Self> {
        let placements = (0..count).map(|_| Placement::loopback(free_port())).collect();
        Self::start_at(root, placements, extra_args)
    }

    /// Starts one node at each of `placements`, each with every node in `--peers`.
    pub fn start_at(
        root: &Path,
        placements: Vec<Placement>,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_placed(root, placements, extra_args, None)
    }

    /// Starts `count` nodes in `root` as [`TestCluster::start`] does, running the `shoal`
    /// binary at `binary` (another build, such as an earlier release's); nodes added later
    /// run it too. [`TestNode::set_binary`] changes what one node runs from its next start.
    pub fn start_with_binary(
        root: &Path,
        count: usize,
        extra_args: &[&str],
        binary: &Path,
    ) -> anyhow::Result<Self> {
        let placements = (0..count).map(|_| Placement::loopback(free_port())).collect();
        Self::start_placed(root, placements, extra_args, Some(binary.to_path_buf()))
    }

    fn start_placed(
        root: &Path,
        placements: Vec<Placement>,
        extra_args: &[&str],
        binary: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut cluster =
            Self { nodes: Vec::new(), root: root.to_path_buf(), args: Vec::new(), binary };
        cluster.args = CLUSTER_ARGS.iter().chain(extra_args).map(|arg| arg.to_string()).collect();
        let peers = placements.iter().map(Placement::addr).collect::<Vec<_>>().join(",");
        for (index, placement) in placements.into_iter().enumerate() {
            cluster.nodes.push(cluster.spawn(index, placement, &peers)?);
        }
        Ok(cluster)
    }

    fn spawn(&self, index: usize, placement: Placement, peers: &str) -> anyhow::Result<TestNode> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["--peers", peers, "--instance-id"]);
        let instance = format!("node-{index}");
        args.push(&instance);
        let data_dir = self.root.join(format!("n{index}"));
        match &self.binary {
            Some(binary) => TestNode::start_binary(binary, placement, &data_dir, &args, &[]),
            None => TestNode::start_placed(placement, &data_dir, &args, &[]),
        }
    }

    /// Wraps nodes started by hand (with `CLUSTER_ARGS`) into a cluster.
    pub fn from_nodes(nodes: Vec<TestNode>) -> Self {
        let root = nodes
            .first()
            .and_then(|node| node.data_dir.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let args = CLUSTER_ARGS.iter().map(|arg| arg.to_string()).collect();
        Self { nodes, root, args, binary: None }
    }

    /// Starts one more node whose `--peers` names only the nodes at `seeds`.
    pub fn add_node(&mut self, seeds: &[usize]) -> anyhow::Result<usize> {
        self.add_node_at(seeds, Placement::loopback(free_port()))
    }

    /// Starts one more node at `placement` whose `--peers` names only the nodes at `seeds`.
    pub fn add_node_at(&mut self, seeds: &[usize], placement: Placement) -> anyhow::Result<usize> {
        let peers = seeds
            .iter()
            .map(|seed| format!("{}:{}", self.nodes[*seed].host, self.nodes[*seed].port))
            .collect::<Vec<_>>()
            .join(",");
        let index = self.nodes.len();
        let node = self.spawn(index, placement, &peers)?;
        self.nodes.push(node);
        Ok(index)
    }

    /// Waits until every running node in `indexes` sees the same leader and `voters`
    /// voters, and returns the leader's node index.
    pub async fn wait_converged(
        &self,
        indexes: &[usize],
        voters: usize,
        deadline: Duration,
    ) -> anyhow::Result<usize> {
        let found = std::sync::Arc::new(std::sync::Mutex::new(None));
        wait_until("the nodes agree on a leader and the voters", deadline, || {
            let urls: Vec<String> =
                indexes.iter().map(|i| self.nodes[*i].url("/api/health")).collect();
            let found = found.clone();
            async move {
                let mut views = Vec::new();
                for url in &urls {
                    views.push(get_json(url).await?);
                }
                let first = &views[0]["cluster"];
                let agree = views.iter().all(|view| {
                    view["cluster"]["leader_id"] == first["leader_id"]
                        && view["cluster"]["voters"] == first["voters"]
                });
                let ready = !first["leader_id"].is_null()
                    && first["voters"].as_array().map_or(0, Vec::len) == voters;
                // A leader outside the nodes asked may be a dead one they still remember.
                let leader = views.iter().position(|view| view["node_id"] == first["leader_id"]);
                *found.lock().unwrap() = leader.map(|position| indexes[position]);
                Ok(agree && ready && leader.is_some())
            }
        })
        .await
        .with_context(|| self.log_tails(indexes))?;
        let leader = *found.lock().unwrap();
        leader.context("the leader is not among the nodes asked")
    }

    /// Returns the last lines each of `indexes` logged, to tell why a wait failed.
    pub fn log_tails(&self, indexes: &[usize]) -> String {
        let mut tails = String::from("last log lines of the nodes:");
        for index in indexes {
            let log = self.nodes[*index].log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            tails.push_str(&format!("\n--- node {index}:\n{tail}"));
        }
        tails
    }

    /// Returns node `index`'s Raft id.
    pub async fn node_id(&self, index: usize) -> anyhow::Result<u64> {
        get_json(&self.nodes[index].url("/api/health")).await?["node_id"]
            .as_u64()
            .context("node_id")
    }
}
