//! Flags of the Redis protocol endpoint (`--resp-listen`): off unless set, and never
//! open beyond loopback without a password.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{invalid, ConfigError};

/// The largest `--resp-max-bulk-bytes`: every value is one Raft entry (or part of one),
/// and entries stay about a MiB at most (see `shoal_raft`'s batch bounds).
const MAX_BULK_BYTES: usize = 1024 * 1024;
/// The most bytes of keys and values one write may carry (an `MSET` of many keys).
pub const MAX_WRITE_BYTES: usize = 2 * MAX_BULK_BYTES;

/// Flags of the Redis protocol endpoint, flattened into `shoal serve`'s.
#[derive(Debug, Clone, Args)]
pub struct RespArgs {
    /// Serve the Redis protocol (RESP2/RESP3) on this address too, e.g. `0.0.0.0:6379`:
    /// Redis clients then keep their keys and pub/sub in the Raft cluster (off by default)
    #[arg(long, env = "SHOAL_RESP_LISTEN", value_name = "HOST:PORT")]
    pub resp_listen: Option<String>,

    /// Password Redis clients give with AUTH or HELLO … AUTH (user `default`); required
    /// when --resp-listen is not a loopback address
    #[arg(long, env = "SHOAL_RESP_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub resp_password: Option<String>,

    /// File holding the RESP password (instead of --resp-password)
    #[arg(
        long,
        env = "SHOAL_RESP_PASSWORD_FILE",
        value_name = "PATH",
        conflicts_with = "resp_password"
    )]
    pub resp_password_file: Option<PathBuf>,

    /// Seconds a Redis connection may sit idle before it is closed (0: never);
    /// subscribers are never closed for idling, as in Redis
    #[arg(long, env = "SHOAL_RESP_IDLE_TIMEOUT", default_value_t = 300, value_name = "SECS")]
    pub resp_idle_timeout: u64,

    /// How long a client has to finish a command it started sending, and to
    /// authenticate once connected (0: no limit)
    #[arg(
        long,
        env = "SHOAL_RESP_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub resp_request_timeout_ms: u64,

    /// Largest string argument (a key or a value) a command may carry, in bytes
    #[arg(long, env = "SHOAL_RESP_MAX_BULK_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub resp_max_bulk_bytes: usize,

    /// Most arguments one command may carry (MSET, DEL, MGET of many keys)
    #[arg(long, env = "SHOAL_RESP_MAX_ARGS", default_value_t = 65_536)]
    pub resp_max_args: usize,

    /// Redis connections served at once; beyond them a client is told
    /// `max number of clients reached`
    #[arg(long, env = "SHOAL_RESP_MAX_CLIENTS", default_value_t = 10_000)]
    pub resp_max_clients: usize,
}

/// The validated settings of the Redis protocol endpoint.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// `host:port` as given: resolved when the listener binds.
    pub listen: String,
    pub password: Option<String>,
    /// `None`: connections may idle forever.
    pub idle_timeout: Option<Duration>,
    /// `None`: a command may take forever to arrive.
    pub request_timeout: Option<Duration>,
    pub max_bulk_bytes: usize,
    pub max_args: usize,
    pub max_clients: usize,
    /// The classic key prefix (`--redis-prefix`): searches show as `{prefix}:progress:{id}`.
    pub prefix: String,
}

impl RespArgs {
    /// Validates the flags; `None` when the endpoint is off. `prefix` is the classic key
    /// prefix; `redis_mode`: state lives in an outside Redis, which clients should use.
    pub fn into_config(
        self,
        prefix: &str,
        redis_mode: bool,
    ) -> Result<Option<RespConfig>, ConfigError> {
        let Some(listen) = self.resp_listen.filter(|addr| !addr.trim().is_empty()) else {
            return Ok(None);
        };
        if redis_mode {
            return Err(invalid(
                "resp-listen",
                "in Redis mode (REDIS_URL is set) the state is in that Redis: point Redis \
                 clients at it and drop --resp-listen; or, if REDIS_URL in this environment is \
                 meant for your application, unset it for shoal",
            ));
        }
        let Some((host, port)) = listen.rsplit_once(':') else {
            return Err(invalid("resp-listen", format!("`{listen}` is not host:port")));
        };
        if port.parse::<u16>().is_err() {
            return Err(invalid("resp-listen", format!("`{port}` is not a port number")));
        }
        let password = super::serve::secret_value(
            self.resp_password,
            self.resp_password_file,
            "resp-password-file",
        )?
        .filter(|password| !password.is_empty());
        if password.is_none() && !is_loopback(host) {
            return Err(invalid(
                "resp-password",
                format!(
                    "--resp-listen {listen} is reachable beyond this machine: set --resp-password \
                     (or SHOAL_RESP_PASSWORD / _FILE) and give it to clients in REDIS_URL \
                     (redis://:PASSWORD@host:port), or listen on 127.0.0.1"
                ),
            ));
        }
        if self.resp_max_bulk_bytes > MAX_BULK_BYTES {
            return Err(invalid(
                "resp-max-bulk-bytes",
                format!(
                    "use at most {MAX_BULK_BYTES} (1 MiB): every value is replicated through Raft; \
                     keep large files in S3"
                ),
            ));
        }
        if self.resp_max_bulk_bytes == 0 || self.resp_max_args < 2 || self.resp_max_clients == 0 {
            return Err(invalid(
                "resp-max-bulk-bytes/resp-max-args/resp-max-clients",
                "must be positive (and at least 2 arguments)",
            ));
        }
        let positive = |duration: Duration| (!duration.is_zero()).then_some(duration);
        Ok(Some(RespConfig {
            listen,
            password,
            idle_timeout: positive(Duration::from_secs(self.resp_idle_timeout)),
            request_timeout: positive(Duration::from_millis(self.resp_request_timeout_ms)),
            max_bulk_bytes: self.resp_max_bulk_bytes,
            max_args: self.resp_max_args,
            max_clients: self.resp_max_clients,
            prefix: prefix.trim().trim_end_matches(':').to_string(),
        }))
    }
}

/// Returns whether `host` names this machine only (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || format!("{host}:0").parse::<SocketAddr>().is_ok_and(|addr| addr.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::Cli;

    fn parse(args: &[&str]) -> Result<Option<super::RespConfig>, super::ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
            .expect("flags parse");
        cli.serve.into_config().map(|config| config.resp)
    }

    #[test]
    fn off_unless_asked() {
        assert!(parse(&[]).expect("valid").is_none());
    }

    #[test]
    fn loopback_needs_no_password_but_anything_else_does() {
        let local = parse(&["--resp-listen", "127.0.0.1:6379"]).expect("valid").expect("on");
        assert_eq!(local.password, None);
        assert!(parse(&["--resp-listen", "[::1]:6379"]).expect("valid").is_some());
        let open = parse(&["--resp-listen", "0.0.0.0:6379"]).expect_err("refused");
        assert_eq!(open.flag, "resp-password");
        let with_password = parse(&["--resp-listen", ":6379", "--resp-password", "hunter2"]);
        assert_eq!(with_password.expect("valid").expect("on").password.as_deref(), Some("hunter2"));
    }

    #[test]
    fn redis_mode_points_clients_at_its_redis() {
        let refused =
            parse(&["--resp-listen", "127.0.0.1:6379", "--redis-url", "redis://127.0.0.1:6380"])
                .expect_err("refused");
        assert_eq!(refused.flag, "resp-listen");
    }
}
