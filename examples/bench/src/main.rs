//! `shoal-bench`: load for a list of shoal nodes, spread round robin as a load balancer
//! would. Prints progress while it runs, then a table (and JSON with `--json`).
//!
//! ```sh
//! shoal-bench sessions-write --nodes http://127.0.0.1:8001,http://127.0.0.1:8002 --clients 64 --duration-secs 10
//! shoal-bench sse-latency --nodes http://127.0.0.1:8001,http://127.0.0.1:8002 --rate 1000 --duration-secs 10
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
    /// A publisher on the first node, subscribers on the others: event latency.
    SseLatency,
}

/// Load generator for shoal.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", version)]
pub struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
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
        Scenario::SessionsWrite | Scenario::SessionsRead | Scenario::SessionsMixed => {
            scenarios::sessions(&args).await?
        }
        Scenario::SseLatency => scenarios::sse_latency(&args).await?,
    };
    print!("{}", stats::table(std::slice::from_ref(&summary)));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
