//! Flags of the public edge: what a node lets in from the network (connections, time to
//! send a request, event sizes) and its rules for browsers (cookie, cross-site requests).
//! docs/decisions.md ("Let no one in") has the reason for each default.

use std::time::Duration;

use clap::Args;

use super::{invalid, ConfigError};

/// The longest either timeout may be set to: an hour.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Flags of the public edge, flattened into `shoal serve`'s.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// How long a client has to send a whole request head (0: no limit): from the
    /// connection's start for its first request, from the first byte for later ones
    #[arg(long, env = "SHOAL_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_name = "MS")]
    pub header_read_timeout_ms: u64,

    /// How long a keep-alive connection may wait for its next request (0: no limit);
    /// keep it above the load balancer's idle timeout (60 s for nginx and AWS ALB) and
    /// above 60 s, how long nodes keep idle connections to each other
    #[arg(long, env = "SHOAL_IDLE_TIMEOUT_MS", default_value_t = 75_000, value_name = "MS")]
    pub idle_timeout_ms: u64,

    /// Client connections served at once; beyond them a connection gets 503 with
    /// Retry-After, except health checks, /metrics and /internal/* on a few reserved
    /// ones (0: no cap) [default: the open-file limit less a reserve for files, Raft and
    /// outgoing connections]
    #[arg(long, env = "SHOAL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Largest `data` of one tracker event, in bytes of JSON; larger gets 413
    #[arg(long, env = "SHOAL_MAX_EVENT_BYTES", default_value_t = 16_384, value_name = "BYTES")]
    pub max_event_bytes: usize,

    /// Mark the session cookie `Secure` (sent over HTTPS only): set it when browsers reach
    /// the node through TLS (a load balancer that terminates it)
    #[arg(long, env = "SHOAL_COOKIE_SECURE")]
    pub cookie_secure: bool,

    /// Origins (scheme://host[:port]) other than the node's own whose browser pages may
    /// change state through the API (POST, PUT, PATCH, DELETE), comma-separated
    #[arg(long, env = "SHOAL_ALLOWED_ORIGINS", value_delimiter = ',', value_name = "ORIGIN,...")]
    pub allowed_origins: Vec<String>,

    /// Serve SSE streams through hyper like every other response, instead of the lighter
    /// streaming path (same bytes, about 16 KiB more memory per open stream): to rule the
    /// streaming path out when looking into a problem
    #[arg(long, env = "SHOAL_NO_SSE_FAST_PATH")]
    pub no_sse_fast_path: bool,
}

/// The validated edge settings.
#[derive(Debug, Clone)]
pub struct Edge {
    /// `None`: heads may take forever (the flag at 0).
    pub header_read_timeout: Option<Duration>,
    /// `None`: keep-alive connections may wait forever.
    pub idle_timeout: Option<Duration>,
    /// `None`: derived from the open-file limit at start; `Some(0)`: no cap.
    pub max_connections: Option<usize>,
    pub max_event_bytes: usize,
    pub cookie_secure: bool,
    /// Lowercase `scheme://host[:port]`, as browsers send `Origin`.
    pub allowed_origins: Vec<String>,
    /// Whether connections that open with an SSE request take the streaming path.
    pub sse_fast_path: bool,
}

impl EdgeArgs {
    /// Validates the flags into [`Edge`].
    pub fn into_edge(self) -> Result<Edge, ConfigError> {
        let timeout = |flag: &'static str, ms: u64| match ms {
            0 => Ok(None),
            1..=MAX_TIMEOUT_MS => Ok(Some(Duration::from_millis(ms))),
            _ => Err(invalid(flag, format!("{ms} ms is over an hour; use 0 (none) to 3600000"))),
        };
        if self.max_event_bytes < 2 {
            return Err(invalid("max-event-bytes", "must be at least 2, the size of `{}`"));
        }
        let allowed_origins = self
            .allowed_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(checked_origin)
            .collect::<Result<_, _>>()?;
        Ok(Edge {
            header_read_timeout: timeout("header-read-timeout-ms", self.header_read_timeout_ms)?,
            idle_timeout: timeout("idle-timeout-ms", self.idle_timeout_ms)?,
            max_connections: self.max_connections,
            max_event_bytes: self.max_event_bytes,
            cookie_secure: self.cookie_secure,
            allowed_origins,
            sse_fast_path: !self.no_sse_fast_path,
        })
    }
}

/// Returns `origin` as browsers write it in `Origin` (lowercase, no trailing slash), or
/// what is wrong with it.
fn checked_origin(origin: &str) -> Result<String, ConfigError> {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let well_formed = origin.split_once("://").is_some_and(|(scheme, host)| {
        matches!(scheme, "http" | "https")
            && !host.is_empty()
            && !host.contains(['/', '?', '#', '@'])
    });
    if well_formed {
        Ok(origin)
    } else {
        Err(invalid(
            "allowed-origins",
            format!(
                "`{origin}` is not an origin such as https://app.example.com or http://host:8080"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(args: &[&str]) -> Result<Edge, ConfigError> {
        let mut argv = vec!["shoal"];
        argv.extend_from_slice(args);
        let cli = <crate::Cli as clap::Parser>::try_parse_from(argv).expect("flags parse");
        cli.serve.edge.into_edge()
    }

    #[test]
    fn defaults_and_switches() {
        let defaults = edge(&[]).unwrap();
        assert_eq!(defaults.header_read_timeout, Some(Duration::from_secs(10)));
        assert_eq!(defaults.idle_timeout, Some(Duration::from_secs(75)));
        assert_eq!((defaults.max_connections, defaults.max_event_bytes), (None, 16_384));
        assert!(!defaults.cookie_secure && defaults.allowed_origins.is_empty());

        let off = edge(&["--header-read-timeout-ms", "0", "--idle-timeout-ms", "0"]).unwrap();
        assert_eq!((off.header_read_timeout, off.idle_timeout), (None, None));
        let origins = edge(&["--allowed-origins", "https://App.example.com/, http://h:8080"]);
        assert_eq!(origins.unwrap().allowed_origins, ["https://app.example.com", "http://h:8080"]);
        for bad in ["app.example.com", "ftp://x", "https://x/path", "https://"] {
            assert_eq!(edge(&["--allowed-origins", bad]).unwrap_err().flag, "allowed-origins");
        }
        assert_eq!(edge(&["--idle-timeout-ms", "3600001"]).unwrap_err().flag, "idle-timeout-ms");
    }
}
