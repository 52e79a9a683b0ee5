//! Test harness: real `shoal` processes on loopback ports with temp data dirs.
//!
//! Processes are SIGKILLed when their handle drops; every wait has a named deadline and
//! fails with what it last saw.

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

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

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0 works");
    listener.local_addr().expect("bound").port()
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

/// One `shoal` process.
#[derive(Debug)]
pub struct TestNode {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    starts: u32,
}

impl TestNode {
    /// Starts `shoal` on a free loopback port with its data in `data_dir`.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut node = Self {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            starts: 0,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = File::options().create(true).append(true).open(&self.log_path)?;
        let child = Command::new(shoal_binary())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("SHOAL_LOG", "info,shoal_raft=debug,openraft=warn")
            .env_remove("RUST_LOG")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start shoal")?;
        self.child = Some(child);
        Ok(())
    }

    /// Returns `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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

    /// SIGKILLs the process and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
