//! `shoal serve`'s flags ([`ServeArgs`], each with its environment variable) and their
//! validation into a [`Config`], with errors that name the flag.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{
    invalid, Config, ConfigError, EdgeArgs, LogFormat, MembershipConfig, RaftConfig, RedisConfig,
    RespArgs, S3Config, SearchConfig, StorageConfig, StorageEngine, MAX_SESSION_TTL_SECS,
};

/// Flags of `shoal serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on [default: 0.0.0.0:8000, or 0.0.0.0:$PORT]
    #[arg(long, env = "SHOAL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Port to serve HTTP on, on all interfaces (ignored when --listen is given)
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// host:port other nodes reach this node at [default: the listen address, with
    /// 127.0.0.1 for an unspecified IP]
    #[arg(long, env = "SHOAL_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,

    /// Directory holding this node's data (created if missing)
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "./shoal-data")]
    pub data_dir: PathBuf,

    /// Raft node id (a positive integer) [default: generated once and kept in the data dir]
    #[arg(long, env = "SHOAL_NODE_ID")]
    pub node_id: Option<u64>,

    /// Name of this instance in logs and /api/health [default: shoal-<node id>]
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// HTTP addresses (host:port) of other nodes to form or join a cluster with,
    /// comma-separated; the same list on every node is fine (self is skipped). A host name
    /// may resolve to many nodes (a compose service, a Kubernetes headless Service): every
    /// address is a peer, and names are resolved again while the node runs
    #[arg(long, env = "SHOAL_PEERS", value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub peers: Vec<String>,

    /// UDP port for gossip [default: the HTTP port number]; peers are assumed to use the
    /// same rule
    #[arg(long, env = "SHOAL_GOSSIP_PORT")]
    pub gossip_port: Option<u16>,

    /// How often gossip runs (failure detection scales with it)
    #[arg(long, env = "SHOAL_GOSSIP_INTERVAL_MS", default_value_t = 500, value_name = "MS")]
    pub gossip_interval_ms: u64,

    /// Nodes that form a new cluster together, and the fewest voters --leave-on-shutdown
    /// leaves behind [default: distinct --peers plus self, or 1; set it when a peer name
    /// resolves to several nodes]
    #[arg(long, env = "SHOAL_BOOTSTRAP_EXPECT")]
    pub bootstrap_expect: Option<usize>,

    /// On SIGTERM, leave the cluster for good (scale-in): hand leadership over, commit
    /// this node's removal, then forget the replica so that a later start joins as a new
    /// member. A voter stays a member when fewer than --bootstrap-expect voters would
    /// remain, so stopping a whole cluster (or restarting it) keeps it whole
    #[arg(long, env = "SHOAL_LEAVE_ON_SHUTDOWN")]
    pub leave_on_shutdown: bool,

    /// The data dir is shared by the replicas of one service (a compose volume): each node
    /// takes a `node-<n>` subdirectory under a lock, one that holds a member's data first,
    /// so that `docker compose down` then `up` gives every node its data back
    #[arg(long, env = "SHOAL_SHARED_DATA_DIR")]
    pub shared_data_dir: bool,

    /// Voters the autopilot keeps at most (kept odd)
    #[arg(long, env = "SHOAL_MAX_VOTERS", default_value_t = 5)]
    pub max_voters: usize,

    /// Seconds a member may be dead in gossip before the autopilot removes it
    #[arg(long, env = "SHOAL_DEAD_NODE_TIMEOUT", default_value_t = 600, value_name = "SECS")]
    pub dead_node_timeout: u64,

    /// Token for the admin endpoints (`Authorization: Bearer <token>`)
    #[arg(long, env = "SHOAL_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// File holding the admin token (instead of --admin-token)
    #[arg(
        long,
        env = "SHOAL_ADMIN_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,

    /// Secret shared by every node of a cluster; signs internal requests (required with
    /// --peers)
    #[arg(long, env = "SHOAL_CLUSTER_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub cluster_secret: Option<String>,

    /// File holding the cluster secret (instead of --cluster-secret)
    #[arg(
        long,
        env = "SHOAL_CLUSTER_SECRET_FILE",
        value_name = "PATH",
        conflicts_with = "cluster_secret"
    )]
    pub cluster_secret_file: Option<PathBuf>,

    /// Seconds a session lives without being used, unless created with ttl_secs
    #[arg(long, env = "SHOAL_SESSION_TTL", default_value_t = 86_400, value_name = "SECS")]
    pub session_ttl: u64,

    /// Largest session `data`, in bytes of JSON; larger gets 413
    #[arg(long, env = "SHOAL_MAX_SESSION_BYTES", default_value_t = 65_536, value_name = "BYTES")]
    pub max_session_bytes: u64,

    /// Worker tasks shared by every search's parts
    #[arg(long, env = "SHOAL_WORKERS", default_value_t = 10)]
    pub workers: usize,

    /// Search parts that may wait for a worker; beyond it a search gets 503
    #[arg(long, env = "SHOAL_QUEUE_CAPACITY", default_value_t = 1000)]
    pub queue_capacity: usize,

    /// Seconds a search or tracker is kept after its last change
    #[arg(long, env = "SHOAL_PROGRESS_TTL", default_value_t = 300, value_name = "SECS")]
    pub progress_ttl: u64,

    /// Delay per page of the `sample` source, so progress is visible
    #[arg(long, env = "SHOAL_SAMPLE_PAGE_DELAY_MS", default_value_t = 250, value_name = "MS")]
    pub sample_page_delay_ms: u64,

    /// JSONL file of notices for the `file` source (one JSON object a line)
    #[arg(long, env = "SHOAL_SOURCE_FILE", value_name = "PATH")]
    pub source_file: Option<std::path::PathBuf>,

    /// Base URL of the PNCP consultation API, for the `pncp` source
    #[arg(long, env = "SHOAL_PNCP_URL", default_value = "https://pncp.gov.br/api/consulta")]
    pub pncp_url: String,

    /// PNCP modality codes searched, comma-separated (6 = pregão eletrônico)
    #[arg(long, env = "SHOAL_PNCP_MODALITIES", value_delimiter = ',', default_value = "6")]
    pub pncp_modalities: Vec<u32>,

    /// Most PNCP requests in flight at once, over all searches of the node
    #[arg(long, env = "SHOAL_PNCP_CONCURRENCY", default_value_t = 4)]
    pub pncp_concurrency: usize,

    /// First retry delay after a PNCP 429/5xx; doubles each retry
    #[arg(long, env = "SHOAL_PNCP_BACKOFF_MS", default_value_t = 500, value_name = "MS")]
    pub pncp_backoff_ms: u64,

    /// Seconds a search's Excel report stays downloadable
    #[arg(long, env = "SHOAL_REPORT_TTL", default_value_t = 3600, value_name = "SECS")]
    pub report_ttl: u64,

    /// Redis URL: keep sessions, searches and their events in this Redis instead of Raft
    /// (compatibility mode; keys as the classic setup used them)
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of the Redis keys of searches, events and reports (`bidiq:progress:{id}`)
    #[arg(long, env = "SHOAL_REDIS_PREFIX", default_value = "bidiq")]
    pub redis_prefix: String,

    /// S3 bucket for reports (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY);
    /// downloads then use pre-signed URLs
    #[arg(long, env = "SHOAL_S3_BUCKET", value_name = "BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 endpoint of a non-AWS server (MinIO, Supabase Storage, a local server)
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Allow a plain-http S3 endpoint (local servers only)
    #[arg(long, env = "AWS_ALLOW_HTTP")]
    pub s3_allow_http: bool,

    /// Address the bucket as `bucket.host` instead of `host/bucket` (path style, the default)
    #[arg(long, env = "AWS_VIRTUAL_HOSTED_STYLE_REQUEST")]
    pub s3_virtual_hosted_style: bool,

    /// Prefix of the report objects in the bucket
    #[arg(long, env = "SHOAL_S3_PREFIX", default_value = "reports/")]
    pub s3_prefix: String,

    /// Seconds a pre-signed S3 download URL stays valid
    #[arg(long, env = "SHOAL_DOWNLOAD_URL_TTL", default_value_t = 3600, value_name = "SECS")]
    pub download_url_ttl: u64,

    /// How often expired reports are deleted from the bucket
    #[arg(long, env = "SHOAL_S3_SWEEP_INTERVAL", default_value_t = 60, value_name = "SECS")]
    pub s3_sweep_interval: u64,

    /// How often an idle SSE stream sends a keep-alive comment
    #[arg(long, env = "SHOAL_SSE_KEEP_ALIVE_MS", default_value_t = 15_000, value_name = "MS")]
    pub sse_keep_alive_ms: u64,

    /// Log format
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `debug,openraft=info` (RUST_LOG is honoured too)
    #[arg(long, env = "SHOAL_LOG", default_value = "info,openraft=warn")]
    pub log: String,

    /// Storage engine of the data dir; a data dir keeps the engine it was created with
    #[arg(long, env = "SHOAL_STORAGE_ENGINE", value_enum, default_value_t = StorageEngine::Redb)]
    pub storage_engine: StorageEngine,

    /// Memory for the storage engine's page cache
    #[arg(long, env = "SHOAL_STORAGE_CACHE_MB", default_value_t = 64, value_name = "MB")]
    pub storage_cache_mb: u64,

    /// Raft heartbeat interval; also how long the leader waits for a follower to take an
    /// append, its fsync included: raise it (and the election timeout) on slow disks
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL_MS", default_value_t = 50, value_name = "MS")]
    pub heartbeat_interval_ms: u64,

    /// Shortest Raft election timeout; the longest is twice this
    #[arg(long, env = "SHOAL_ELECTION_TIMEOUT_MS", default_value_t = 300, value_name = "MS")]
    pub election_timeout_ms: u64,

    /// Build a Raft snapshot (and purge the log behind it) every this many entries, and
    /// whenever the log has grown by 4 MiB since the last one
    #[arg(long, env = "SHOAL_SNAPSHOT_LOGS", default_value_t = 10_000, value_name = "ENTRIES")]
    pub snapshot_logs: u64,

    /// How long a write or linearizable read may wait for the cluster before 503
    #[arg(long, env = "SHOAL_REQUEST_TIMEOUT_MS", default_value_t = 5_000, value_name = "MS")]
    pub request_timeout_ms: u64,

    /// Confirm the leader with a quorum round for reads instead of its lease (which relies
    /// on the nodes' clocks running at about the same rate and never stopping: use this
    /// where VMs are paused or live-migrated); reads get slower
    #[arg(long, env = "SHOAL_NO_READ_LEASE")]
    pub no_read_lease: bool,

    /// How often expired entries are removed and session touches are proposed
    #[arg(long, env = "SHOAL_MAINTENANCE_INTERVAL_MS", default_value_t = 1_000, value_name = "MS")]
    pub maintenance_interval_ms: u64,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub resp: RespArgs,
}

/// Returns a secret given directly, or read (trimmed) from the file of `file_flag`.
pub(super) fn secret_value(
    value: Option<String>,
    file: Option<PathBuf>,
    file_flag: &'static str,
) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(value), _) => Ok(Some(value)),
        (None, Some(path)) => {
            std::fs::read_to_string(&path).map(|text| Some(text.trim().to_string())).map_err(
                |error| invalid(file_flag, format!("cannot read {}: {error}", path.display())),
            )
        }
        (None, None) => Ok(None),
    }
}

impl ServeArgs {
    /// Validates the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port.unwrap_or(8000))
        });
        if self.node_id == Some(0) {
            return Err(invalid("node-id", "0 is reserved; use a positive integer"));
        }
        if self.session_ttl == 0 || self.session_ttl > MAX_SESSION_TTL_SECS {
            return Err(invalid(
                "session-ttl",
                format!("{} s is out of range; use 1 to {MAX_SESSION_TTL_SECS}", self.session_ttl),
            ));
        }
        if self.max_session_bytes < 2 {
            return Err(invalid(
                "max-session-bytes",
                "must be at least 2, the size of an empty object `{}`",
            ));
        }
        if self.workers == 0 || self.workers > 1024 {
            return Err(invalid(
                "workers",
                format!("{} is out of range; use 1 to 1024", self.workers),
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > 1_000_000 {
            return Err(invalid("queue-capacity", "use 1 to 1000000"));
        }
        if !self.pncp_url.starts_with("http://") && !self.pncp_url.starts_with("https://") {
            return Err(invalid("pncp-url", format!("{:?} is not an http(s) URL", self.pncp_url)));
        }
        if self.pncp_modalities.is_empty() || self.pncp_concurrency == 0 {
            return Err(invalid(
                "pncp-modalities/pncp-concurrency",
                "name at least one modality and allow one request",
            ));
        }
        if self.report_ttl == 0 {
            return Err(invalid("report-ttl", "must be positive"));
        }
        if self.progress_ttl == 0 {
            return Err(invalid("progress-ttl", "must be positive"));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("heartbeat-interval-ms", "must be positive"));
        }
        if self.election_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "election-timeout-ms",
                format!(
                    "{} ms must exceed the heartbeat interval ({} ms), ideally by 3x or more",
                    self.election_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        if self.snapshot_logs == 0 {
            return Err(invalid("snapshot-logs", "must be positive"));
        }
        if self.request_timeout_ms == 0 || self.maintenance_interval_ms == 0 {
            return Err(invalid("request-timeout-ms/maintenance-interval-ms", "must be positive"));
        }
        if let Some(addr) = &self.advertise_addr {
            if addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                return Err(invalid("advertise-addr", format!("`{addr}` is not host:port")));
            }
        }
        let cluster_secret =
            secret_value(self.cluster_secret, self.cluster_secret_file, "cluster-secret-file")?;
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|peer| peer.trim().to_string())
            .filter(|peer| !peer.is_empty())
            .collect();
        for peer in &peers {
            if peer.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                return Err(invalid("peers", format!("`{peer}` is not host:port")));
            }
        }
        if !peers.is_empty() && cluster_secret.is_none() {
            return Err(invalid(
                "peers",
                "a cluster needs a shared secret: set --cluster-secret, SHOAL_CLUSTER_SECRET or \
                 SHOAL_CLUSTER_SECRET_FILE to the same value on every node (e.g. `openssl rand -hex 32`)",
            ));
        }
        if self.max_voters == 0 || self.max_voters.is_multiple_of(2) {
            return Err(invalid(
                "max-voters",
                format!("{} must be odd and positive (e.g. 3 or 5)", self.max_voters),
            ));
        }
        if self.gossip_interval_ms == 0 || self.dead_node_timeout == 0 {
            return Err(invalid("gossip-interval-ms/dead-node-timeout", "must be positive"));
        }
        let admin_token =
            secret_value(self.admin_token, self.admin_token_file, "admin-token-file")?;
        if cluster_secret.as_ref().is_some_and(|secret| secret.len() < 16) {
            return Err(invalid(
                "cluster-secret",
                "use at least 16 characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        let key_prefix = self.redis_prefix.trim().trim_end_matches(':').to_string();
        if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis-prefix", "use a word such as `bidiq`"));
        }
        let resp = self.resp.into_config(
            &self.redis_prefix,
            self.redis_url.as_ref().is_some_and(|url| !url.trim().is_empty()),
        )?;
        let redis = match self.redis_url.filter(|url| !url.trim().is_empty()) {
            None => None,
            Some(url) => {
                if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                    return Err(invalid(
                        "redis-url",
                        "use redis://[user:password@]host:port[/db] (or rediss:// for TLS)",
                    ));
                }
                if !peers.is_empty() {
                    return Err(invalid(
                        "redis-url",
                        "Redis mode nodes share their state through Redis and form no cluster: \
                         drop --peers (or REDIS_URL, to run a Raft cluster instead)",
                    ));
                }
                let prefix = self.redis_prefix.trim().trim_end_matches(':').to_string();
                if prefix.is_empty() || prefix.contains(char::is_whitespace) {
                    return Err(invalid("redis-prefix", "use a word such as `bidiq`"));
                }
                Some(RedisConfig { url, prefix })
            }
        };
        let s3 = match self.s3_bucket.filter(|bucket| !bucket.trim().is_empty()) {
            None => None,
            Some(bucket) => {
                if self.download_url_ttl == 0 || self.download_url_ttl > 7 * 24 * 3600 {
                    return Err(invalid(
                        "download-url-ttl",
                        "use 1 to 604800 s (S3 pre-signed URLs last at most 7 days)",
                    ));
                }
                if self.s3_sweep_interval == 0 {
                    return Err(invalid("s3-sweep-interval", "must be positive"));
                }
                let prefix = self.s3_prefix.trim_matches('/');
                let settings = shoal_storage::S3Settings {
                    bucket,
                    endpoint: self.s3_endpoint.filter(|endpoint| !endpoint.is_empty()),
                    region: self.s3_region.filter(|region| !region.is_empty()),
                    allow_http: self.s3_allow_http,
                    virtual_hosted_style: self.s3_virtual_hosted_style,
                    prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
                    url_ttl: Duration::from_secs(self.download_url_ttl),
                    timeout: Duration::from_millis(self.request_timeout_ms),
                };
                Some(S3Config {
                    settings,
                    sweep_interval: Duration::from_secs(self.s3_sweep_interval),
                })
            }
        };
        Ok(Config {
            listen,
            cluster_secret,
            admin_token: admin_token.filter(|token| !token.is_empty()),
            advertise_addr: self.advertise_addr,
            data_dir: self.data_dir,
            node_id: self.node_id,
            instance_id: self.instance_id.filter(|id| !id.trim().is_empty()),
            session_ttl: Duration::from_secs(self.session_ttl),
            max_session_bytes: self.max_session_bytes,
            sse_keep_alive: Duration::from_millis(self.sse_keep_alive_ms.max(1)),
            report_ttl: Duration::from_secs(self.report_ttl),
            log_format: self.log_format,
            log: self.log,
            redis,
            s3,
            edge: self.edge.into_edge()?,
            resp,
            key_prefix,
            raft: RaftConfig {
                heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
                election_timeout: Duration::from_millis(self.election_timeout_ms),
                snapshot_logs: self.snapshot_logs,
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                read_lease: !self.no_read_lease,
                maintenance_interval: Duration::from_millis(self.maintenance_interval_ms),
            },
            membership: MembershipConfig {
                peers,
                gossip_port: self.gossip_port,
                gossip_interval: Duration::from_millis(self.gossip_interval_ms),
                bootstrap_expect: self.bootstrap_expect,
                leave_on_shutdown: self.leave_on_shutdown,
                max_voters: self.max_voters,
                dead_node_timeout: Duration::from_secs(self.dead_node_timeout),
            },
            searches: SearchConfig {
                workers: self.workers,
                queue_capacity: self.queue_capacity,
                progress_ttl: Duration::from_secs(self.progress_ttl),
                sample_page_delay: Duration::from_millis(self.sample_page_delay_ms),
                source_file: self.source_file,
                pncp_url: self.pncp_url,
                pncp_modalities: self.pncp_modalities,
                pncp_concurrency: self.pncp_concurrency,
                pncp_backoff: Duration::from_millis(self.pncp_backoff_ms),
            },
            storage: StorageConfig {
                engine: self.storage_engine,
                cache_bytes: self.storage_cache_mb.max(1) * 1024 * 1024,
                shared_data_dir: self.shared_data_dir,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Cli;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["shoal"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").serve.into_config()
    }

    #[test]
    fn listen_defaults_and_overrides() {
        let config = parse(&["--port", "9100"]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9100".parse().unwrap());
        let config = parse(&["--port", "9100", "--listen", "127.0.0.1:9200"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9200".parse().unwrap());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = parse(&["--session-ttl", "0"]).unwrap_err();
        assert_eq!(error.flag, "session-ttl");
        let error =
            parse(&["--election-timeout-ms", "50", "--heartbeat-interval-ms", "100"]).unwrap_err();
        assert_eq!(error.flag, "election-timeout-ms");
        assert!(parse(&["--node-id", "0"]).is_err());
        assert!(parse(&["--advertise-addr", "nohost"]).is_err());
    }

    #[test]
    fn compatibility_mode_flags() {
        let config = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(
            (redis.url.as_str(), redis.prefix.as_str()),
            ("redis://127.0.0.1:6379", "bidiq")
        );
        assert_eq!(parse(&["--redis-url", "localhost:6379"]).unwrap_err().flag, "redis-url");
        let with_peers = parse(&[
            "--redis-url",
            "redis://r:6379",
            "--peers",
            "a:8000",
            "--cluster-secret",
            "0123456789abcdef",
        ]);
        assert_eq!(with_peers.unwrap_err().flag, "redis-url");

        let config =
            parse(&["--s3-bucket", "excel-reports", "--s3-prefix", "/out/", "--s3-allow-http"])
                .unwrap();
        let s3 = config.s3.unwrap().settings;
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("excel-reports", "out/"));
        assert_eq!(s3.url_ttl, Duration::from_secs(3600));
        assert!(s3.allow_http && !s3.virtual_hosted_style);
        let error = parse(&["--s3-bucket", "b", "--download-url-ttl", "0"]).unwrap_err();
        assert_eq!(error.flag, "download-url-ttl");
        assert!(parse(&[]).unwrap().s3.is_none());
    }

    #[test]
    fn help_names_every_env_var() {
        let help = <Cli as clap::CommandFactory>::command().render_long_help().to_string();
        for var in [
            "SHOAL_LISTEN",
            "PORT",
            "SHOAL_DATA_DIR",
            "SHOAL_NODE_ID",
            "INSTANCE_ID",
            "SHOAL_SESSION_TTL",
            "REDIS_URL",
            "SHOAL_S3_BUCKET",
            "AWS_ENDPOINT_URL",
            "SHOAL_DOWNLOAD_URL_TTL",
            "SHOAL_HEADER_READ_TIMEOUT_MS",
            "SHOAL_IDLE_TIMEOUT_MS",
            "SHOAL_MAX_CONNECTIONS",
            "SHOAL_MAX_EVENT_BYTES",
            "SHOAL_COOKIE_SECURE",
            "SHOAL_ALLOWED_ORIGINS",
        ] {
            assert!(help.contains(&format!("env: {var}")), "--help lacks {var}:\n{help}");
        }
    }
}
