//! Command-line flags (each with its environment variable) and the validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
pub use edge::{Edge, EdgeArgs};
pub use resp::{RespArgs, RespConfig, MAX_WRITE_BYTES};
pub use serve::ServeArgs;

mod edge;
mod resp;
mod serve;

/// shoal: a horizontally scalable backend for sessions, live search progress and
/// reports, replicated with Raft and needing no Redis.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

/// What `shoal` does; without a subcommand it serves.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a node (the default).
    Serve(Box<ServeArgs>),
    /// Print the cluster as a node sees it: members, addresses, gossip state, Raft roles.
    Status {
        /// Base URL of any node
        #[arg(long, env = "SHOAL_NODE", default_value = "http://127.0.0.1:8000")]
        node: String,
    },
    /// Drop this node's damaged replica (Raft log and state, moved aside, nothing deleted)
    /// so that it rejoins its cluster as a new member and catches up by snapshot; run it
    /// with the node stopped, then start the node as before.
    ResetReplica {
        /// The data dir of the stopped node
        #[arg(long, env = "SHOAL_DATA_DIR", default_value = "./shoal-data")]
        data_dir: PathBuf,
    },
    /// Exit 0 if the node can serve reads and writes (`/api/health/ready` answers 200),
    /// else 1: a container health check for images without curl.
    Health {
        /// Base URL of the node [default: 127.0.0.1 at the port of SHOAL_LISTEN or PORT,
        /// else 8000]
        #[arg(long, env = "SHOAL_NODE")]
        node: Option<String>,
        /// How long to wait for the answer
        #[arg(long, default_value_t = 3_000, value_name = "MS")]
        timeout_ms: u64,
    },
    /// Remove a member from the cluster (needs the admin token).
    RemoveNode {
        /// The node id to remove (see `shoal status`)
        node_id: u64,
        /// Base URL of any node
        #[arg(long, env = "SHOAL_NODE", default_value = "http://127.0.0.1:8000")]
        node: String,
        /// The cluster's admin token
        #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The storage engine of a node's data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageEngine {
    /// redb: a copy-on-write B-tree file that reuses freed pages (the default).
    Redb,
    /// sled, the engine of earlier versions (their data dirs keep using it).
    Sled,
}

/// The most a session may live without use: 365 days.
pub const MAX_SESSION_TTL_SECS: u64 = 365 * 24 * 3600;

/// A node's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The cluster secret, read from the flag, the variable or the file.
    pub cluster_secret: Option<String>,
    pub admin_token: Option<String>,
    pub advertise_addr: Option<String>,
    pub data_dir: PathBuf,
    pub node_id: Option<u64>,
    pub instance_id: Option<String>,
    pub session_ttl: Duration,
    pub max_session_bytes: u64,
    pub sse_keep_alive: Duration,
    pub report_ttl: Duration,
    pub log_format: LogFormat,
    pub log: String,
    /// Compatibility mode: state in this Redis instead of Raft.
    pub redis: Option<RedisConfig>,
    /// Reports in S3 instead of the state store.
    pub s3: Option<S3Config>,
    /// What the node lets in from the network, and its rules for browsers.
    pub edge: Edge,
    /// Raft's timings and snapshot policy.
    pub raft: RaftConfig,
    /// Forming, joining and leaving a cluster.
    pub membership: MembershipConfig,
    /// The search runner and its sources.
    pub searches: SearchConfig,
    /// The storage engine of the data dir.
    pub storage: StorageConfig,
    /// The Redis protocol endpoint; `None`: off.
    pub resp: Option<RespConfig>,
    /// The prefix of the classic key and channel names (`--redis-prefix`, `bidiq`):
    /// `{prefix}:progress:{id}:events` carries a search's events in every mode.
    pub key_prefix: String,
}

/// Raft's timings and snapshot policy (settings, so that tests run a cluster fast).
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_logs: u64,
    pub request_timeout: Duration,
    /// Whether the leader answers reads by its lease (half the election timeout).
    pub read_lease: bool,
    pub maintenance_interval: Duration,
}

/// How a node forms, joins and leaves a cluster.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Peers' HTTP addresses, without this node's.
    pub peers: Vec<String>,
    pub gossip_port: Option<u16>,
    pub gossip_interval: Duration,
    pub bootstrap_expect: Option<usize>,
    pub leave_on_shutdown: bool,
    pub max_voters: usize,
    pub dead_node_timeout: Duration,
}

/// The search runner: its workers, queue, record lifetime and sources.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub progress_ttl: Duration,
    pub sample_page_delay: Duration,
    pub source_file: Option<std::path::PathBuf>,
    pub pncp_url: String,
    pub pncp_modalities: Vec<u32>,
    pub pncp_concurrency: usize,
    pub pncp_backoff: Duration,
}

/// The storage engine of the data dir.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub shared_data_dir: bool,
    /// Bytes of the storage engine's page cache.
    pub cache_bytes: u64,
    pub engine: StorageEngine,
}

/// Where the Redis of the compatibility mode is.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
}

/// Where reports go in S3, and how often expired ones are deleted.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub settings: shoal_storage::S3Settings,
    pub sweep_interval: Duration,
}

/// A flag with a value that cannot work, and what would.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { flag, problem: problem.into() }
}

impl Config {
    /// Returns the configuration of `shoal` run with no flags and no environment.
    pub fn default_for_tests(data_dir: PathBuf) -> Self {
        let mut args = Cli::parse_from(["shoal"]).serve;
        args.data_dir = data_dir;
        args.into_config().expect("the defaults are valid")
    }
}
