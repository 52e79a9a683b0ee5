//! `shoal-bench`: load for a list of shoal nodes, spread round robin as a load balancer
//! would. Prints progress while it runs, then a table (and JSON with `--json`).
//!
//! ```sh
//! shoal-bench sessions-write --nodes http://127.0.0.1:8001,http://127.0.0.1:8002 --clients 64 --duration-secs 10
//! shoal-bench sse-latency --nodes http://127.0.0.1:8001,http://127.0.0.1:8002 --rate 1000 --duration-secs 10
//! shoal-bench sessions-write --target etcd --nodes http://127.0.0.1:2379 --clients 64
//! ```

mod scenarios;
mod stats;

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Create sessions, then overwrite them (PUT), from every client.
    SessionsWrite,
    /// Read existing sessions by id.
    SessionsRead,
    /// 90% reads, 10% writes.
    SessionsMixed,
    /// Create new sessions with `--ttl-secs`: TTL churn (expired ones are removed).
    SessionsCreate,
    /// A publisher on the first node, subscribers on the others: event latency.
    SseLatency,
    /// `--clients` loops each running a search to completion (`?wait=true`).
    Searches,
    /// `--connections` idle SSE streams held open for the duration.
    SseConnections,
}

/// What the sessions scenarios talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// shoal's sessions API (cluster or Redis mode).
    Shoal,
    /// etcd's HTTP JSON gateway (`/v3/kv/put`, `/v3/kv/range`), same key and value sizes.
    Etcd,
}

/// Load generator for shoal.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version)]
pub struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// What the sessions scenarios talk to.
    #[arg(long, value_enum, default_value_t = Target::Shoal)]
    pub target: Target,
    /// Node base URLs, comma-separated; requests go round robin over them.
    #[arg(
        long,
        env = "SHOAL_BENCH_NODES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8000"
    )]
    pub nodes: Vec<String>,
    /// Concurrent clients (sessions scenarios).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Stop after this many operations instead (sessions scenarios).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Bytes of data per session.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Events per second the publisher sends (sse-latency).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// SSE subscribers, spread over the nodes other than the publisher's (sse-latency).
    #[arg(long, default_value_t = 4)]
    pub subscribers: usize,
    /// TTL of the sessions `sessions-create` makes.
    #[arg(long, default_value_t = 30)]
    pub ttl_secs: u64,
    /// SSE streams to hold open (sse-connections).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// The search each client runs (searches): UFs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "SP,RJ")]
    pub ufs: Vec<String>,
    /// Days each search covers (searches), from 2025-01-01.
    #[arg(long, default_value_t = 31)]
    pub search_days: u32,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl Args {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.nodes.is_empty(), "--nodes needs at least one URL");
    let summary = match args.scenario {
        Scenario::SessionsWrite
        | Scenario::SessionsRead
        | Scenario::SessionsMixed
        | Scenario::SessionsCreate => scenarios::sessions(&args).await?,
        Scenario::SseLatency => scenarios::sse_latency(&args).await?,
        Scenario::Searches => scenarios::searches(&args).await?,
        Scenario::SseConnections => scenarios::sse_connections(&args).await?,
    };
    print!("{}", stats::table(std::slice::from_ref(&summary)));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
