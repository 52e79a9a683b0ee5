//! Helpers for the Redis protocol tests: where a node serves RESP, a raw socket for what
//! clients would never send, and a real `redis-server` started with a chosen fsync
//! policy, to compare replies side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::servers::binary_on_path;
use crate::{free_port, TestNode};

/// The flags that serve RESP on a port the system picks (read back by [`resp_port`]).
pub const RESP_ARGS: &[&str] = &["--resp-listen", "127.0.0.1:0"];

/// Returns the port `node` serves RESP on, from its log.
pub async fn resp_port(node: &TestNode, deadline: Duration) -> anyhow::Result<u16> {
    let started = Instant::now();
    loop {
        let log = node.log();
        let found =
            log.lines().rev().filter(|line| line.contains("serving the Redis protocol")).find_map(
                |line| {
                    line.split("addr=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()
                },
            );
        if let Some(port) = found {
            return Ok(port);
        }
        if started.elapsed() > deadline {
            bail!("the node did not serve RESP within {deadline:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns a redis-rs client of the server on `port`.
pub fn client(port: u16) -> anyhow::Result<redis::Client> {
    Ok(redis::Client::open(format!("redis://127.0.0.1:{port}"))?)
}

/// Sends `bytes` on a new connection and returns what arrives until the server has been
/// quiet for `quiet` (or closed the connection).
pub async fn raw(port: u16, bytes: &[u8], quiet: Duration) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(bytes).await?;
    read_quiet(&mut stream, quiet).await
}

/// Reads what arrives on `stream` until it has been quiet for `quiet` or closed.
pub async fn read_quiet(stream: &mut TcpStream, quiet: Duration) -> anyhow::Result<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buffer)).await {
            Err(_) => return Ok(received),
            Ok(Ok(0)) => return Ok(received),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Ok(Err(error)) if received.is_empty() => return Err(error.into()),
            Ok(Err(_)) => return Ok(received),
        }
    }
}

/// A `redis-server` of its own, on a loopback port, with append-only persistence at
/// `appendfsync` (`always`, `everysec`).
#[derive(Debug)]
pub struct Redis {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Redis {
    /// Starts `redis-server` with its files in `dir`.
    pub async fn start(dir: &Path, appendfsync: &str) -> anyhow::Result<Self> {
        let binary = binary_on_path("redis-server").context(
            "redis-server is not installed: apt-get install redis-server (scripts/test does this)",
        )?;
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let log = std::fs::File::create(dir.join("log"))?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", appendfsync])
            .arg("--dir")
            .arg(dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        let redis = Self { child, port, dir: dir.to_path_buf() };
        let started = Instant::now();
        loop {
            let pong = raw(port, b"PING\r\n", Duration::from_millis(200)).await.unwrap_or_default();
            if pong.starts_with(b"+PONG") {
                return Ok(redis);
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer PING");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redis-cli -p port args…` and returns its standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let binary = binary_on_path("redis-cli").context(
        "redis-cli is not installed: apt-get install redis-tools (scripts/test does this)",
    )?;
    let output = Command::new(binary).args(["-p", &port.to_string()]).args(args).output()?;
    if !output.status.success() {
        bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
