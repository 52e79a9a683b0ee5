//! Outside servers the compatibility modes need, started from this machine's binaries:
//! `redis-server` (Debian's package) and `s3s-fs` (an S3 server from crates.io that checks
//! signatures and pre-signed URL expiry). `scripts/test` installs both when missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{free_port, TestNode, FAST_RAFT_ARGS};

/// Returns the path of `binary` if it is on `PATH` (or in `~/.cargo/bin`).
pub fn binary_on_path(binary: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|dir| dir.join(binary)).find(|path| path.is_file())
}

fn required(binary: &str, install: &str) -> anyhow::Result<PathBuf> {
    binary_on_path(binary)
        .with_context(|| format!("{binary} is not installed: {install} (scripts/test does this)"))
}

/// Waits until something accepts TCP connections on `port`.
fn wait_listening(port: u16, deadline: Duration, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > deadline {
            bail!("{what} did not listen on port {port} within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// A `redis-server` on a loopback port, persisting to its own directory (append-only
/// file), so that a restart keeps the data as a production Redis would.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` with its files in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut server = Self { child: None, port: free_port(), dir: dir.to_path_buf() };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = required("redis-server", "apt-get install redis-server")?;
        let log = std::fs::File::options().create(true).append(true).open(self.dir.join("log"))?;
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(10), "redis-server")?;
        // Listening comes before loading the append-only file: wait for PONG.
        let started = Instant::now();
        while self.command(&["PING"]).map_or(true, |reply| !reply.contains("PONG")) {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server does not answer PING");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Returns `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let binary = required("redis-cli", "apt-get install redis-tools")?;
        let output = Command::new(binary)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .context("cannot run redis-cli")?;
        if !output.status.success() {
            bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sends one inline command over a raw socket (for readiness, without redis-cli).
    fn command(&self, words: &[&str]) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(format!("{}\r\n", words.join(" ")).as_bytes())?;
        let mut buffer = [0u8; 256];
        let read = stream.read(&mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    /// Stops the server as an operator would (`SHUTDOWN`, which writes its files).
    pub fn stop(&mut self) {
        let _ = self.command(&["SHUTDOWN"]);
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && started.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and files.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "shoal-test-access";
/// The secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "shoal-test-secret-key-0123456789";
/// The bucket reports go to in tests.
pub const S3_BUCKET: &str = "reports";

/// An `s3s-fs` server on a loopback port: a real S3 API over a directory, checking
/// SigV4 signatures (and pre-signed URL expiry) against one access key.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    /// The directory the objects are in: `root/<bucket>/<key>`.
    pub root: PathBuf,
}

impl S3Server {
    /// Starts `s3s-fs` serving `root`, with bucket [`S3_BUCKET`].
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        let binary = required("s3s-fs", "cargo install s3s-fs@0.14.1 --features binary --locked")?;
        std::fs::create_dir_all(root.join(S3_BUCKET))?;
        let port = free_port();
        let log = std::fs::File::create(root.with_extension("log"))?;
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start s3s-fs")?;
        let server = Self { child: Some(child), port, root: root.to_path_buf() };
        wait_listening(port, Duration::from_secs(10), "s3s-fs")?;
        Ok(server)
    }

    /// Returns `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns the flags and variables that point shoal at this server.
    pub fn node_settings(&self) -> (Vec<String>, Vec<(String, String)>) {
        let args = vec![
            "--s3-bucket".to_string(),
            S3_BUCKET.to_string(),
            "--s3-endpoint".to_string(),
            self.endpoint(),
            "--s3-allow-http".to_string(),
        ];
        let envs = vec![
            ("AWS_ACCESS_KEY_ID".to_string(), S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), S3_SECRET_KEY.to_string()),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ];
        (args, envs)
    }

    /// Returns the report objects in the bucket.
    pub fn objects(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.join(S3_BUCKET)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "xlsx") {
                    found.push(path);
                }
            }
        }
        found
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where a node under test keeps its state and its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raft, reports in the cluster.
    Cluster,
    /// Redis (compatibility mode), reports in Redis.
    Redis,
    /// Raft, reports in S3.
    ClusterS3,
    /// Redis, reports in S3.
    RedisS3,
}

impl Mode {
    /// Returns what `/api/health` says for `mode`.
    pub fn state(self) -> &'static str {
        match self {
            Mode::Cluster | Mode::ClusterS3 => "cluster",
            Mode::Redis | Mode::RedisS3 => "redis",
        }
    }

    /// Returns what `/api/health` says for `storage`.
    pub fn storage(self) -> &'static str {
        match self {
            Mode::Cluster => "cluster",
            Mode::Redis => "redis",
            Mode::ClusterS3 | Mode::RedisS3 => "s3",
        }
    }
}

/// The outside servers of one [`Mode`], and the settings that point nodes at them.
#[derive(Debug)]
pub struct Backing {
    pub mode: Mode,
    pub redis: Option<RedisServer>,
    pub s3: Option<S3Server>,
    root: PathBuf,
}

impl Backing {
    /// Starts the servers `mode` needs, with their files under `root`.
    pub fn start(mode: Mode, root: &Path) -> anyhow::Result<Self> {
        let redis = match mode {
            Mode::Redis | Mode::RedisS3 => Some(RedisServer::start(&root.join("redis"))?),
            _ => None,
        };
        let s3 = match mode {
            Mode::ClusterS3 | Mode::RedisS3 => Some(S3Server::start(&root.join("s3"))?),
            _ => None,
        };
        Ok(Self { mode, redis, s3, root: root.to_path_buf() })
    }

    /// Returns the flags and variables of a node in this mode, after `extra_args`.
    pub fn node_settings(&self, extra_args: &[&str]) -> (Vec<String>, Vec<(String, String)>) {
        let mut args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        let mut envs = Vec::new();
        if let Some(redis) = &self.redis {
            args.extend(["--redis-url".to_string(), redis.url()]);
        }
        if let Some(s3) = &self.s3 {
            let (s3_args, s3_envs) = s3.node_settings();
            args.extend(s3_args);
            envs.extend(s3_envs);
        }
        (args, envs)
    }

    /// Starts node `name` in this mode with `extra_args` (after [`FAST_RAFT_ARGS`]).
    pub fn start_node(&self, name: &str, extra_args: &[&str]) -> anyhow::Result<TestNode> {
        let mut all: Vec<&str> = FAST_RAFT_ARGS.to_vec();
        all.extend_from_slice(extra_args);
        let (args, envs) = self.node_settings(&all);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestNode::start_with(free_port(), &self.root.join(name), &args, &envs)
    }

    /// Returns a download URL as a client uses it: S3's pre-signed URLs are absolute,
    /// shoal's own links are paths on `node`.
    pub fn download_url(&self, node: &TestNode, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            node.url(url)
        }
    }
}

/// Runs an async test suite `fn(Mode)` in every mode: `cluster` always; the modes with
/// outside servers are ignored by a bare `cargo test` and run by `scripts/test`.
#[macro_export]
macro_rules! in_every_mode {
    ($suite:ident) => {
        mod $suite {
            use $crate::Mode;

            #[tokio::test]
            async fn cluster() -> anyhow::Result<()> {
                super::$suite(Mode::Cluster).await
            }

            #[tokio::test]
            #[ignore = "needs redis-server; scripts/test installs it and runs this"]
            async fn redis() -> anyhow::Result<()> {
                super::$suite(Mode::Redis).await
            }

            #[tokio::test]
            #[ignore = "needs s3s-fs; scripts/test installs it and runs this"]
            async fn cluster_s3() -> anyhow::Result<()> {
                super::$suite(Mode::ClusterS3).await
            }
        }
    };
}
