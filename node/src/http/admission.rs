//! Which connections a node serves: up to `--max-connections` of any kind, then a few
//! more for health checks, `/metrics` and `/internal/*` only; the rest get a 503.
//!
//! Why: every connection holds a file descriptor, and a node out of descriptors can
//! accept nothing (its health checks time out, its peers cannot reach it). The cap keeps
//! descriptors for the node's own files, the Raft log, outgoing connections and the
//! reserve; the reserve lets a load balancer see the node is alive, and its peers keep
//! Raft going, while clients are refused.
//!
//! A connection in the reserve that has not sent its request line yet gives its place
//! up to a newer one when the reserve is full: health checkers and peers send their
//! request at once, so an attacker who keeps opening silent connections only ever holds
//! the newest places, and each for a moment.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Connections beyond the cap on which only health checks, `/metrics` and `/internal/*`
/// are served (one request each, then the connection closes).
pub const RESERVED_CONNECTIONS: usize = 64;
/// Connections beyond the reserve that may be open while those they displaced from it
/// close: past them, newcomers are refused at once, so descriptors stay bounded however
/// fast connections arrive.
const DISPLACED_CONNECTIONS: usize = 16;
/// How long a connection in the reserve has to send its request line.
pub const RESERVE_HEAD_DEADLINE: Duration = Duration::from_secs(1);
/// The least number of descriptors kept for everything but client connections: storage
/// files, the Raft log's segments, gossip, connections to peers, Redis, S3 and PNCP.
const MIN_OTHER_DESCRIPTORS: usize = 128;

/// What an accepted connection gets.
#[derive(Debug, Clone)]
pub(super) enum Admission {
    /// Served like any other.
    Full,
    /// Served one request if it is a health check, `/metrics` or internal; else a 503.
    Reserve(Arc<Place>),
    /// A 503 at once.
    Refused,
}

/// A connection's place in the reserve while it has not sent its request line.
#[derive(Debug, Default)]
pub(super) struct Place {
    /// Told when a newer connection takes the place.
    evicted: Notify,
    /// The request line came (or the connection ended): the place is no longer given up.
    decided: AtomicBool,
}

impl Place {
    fn decide(&self) {
        self.decided.store(true, Ordering::Relaxed);
    }

    fn is_decided(&self) -> bool {
        self.decided.load(Ordering::Relaxed)
    }
}

/// Counts the open client connections against the cap.
#[derive(Debug)]
pub(super) struct Gate {
    /// `None`: no cap.
    max_connections: Option<usize>,
    open: Arc<AtomicUsize>,
    /// The places of the reserve whose connections sent nothing yet, oldest first.
    waiting: Mutex<VecDeque<Arc<Place>>>,
}

/// Held by an open connection; counts it out when dropped.
#[derive(Debug)]
pub(super) struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("shoal_http_connections_open").decrement(1.0);
    }
}

impl Gate {
    /// `max_connections`: `None` or `Some(0)` for no cap.
    pub(super) fn new(max_connections: Option<usize>) -> Self {
        let max_connections = max_connections.filter(|max| *max > 0);
        Self { max_connections, open: Arc::default(), waiting: Mutex::default() }
    }

    /// Decides on a connection just accepted; the ticket counts it while it is open.
    pub(super) fn admit(&self) -> (Admission, Ticket) {
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("shoal_http_connections_open").increment(1.0);
        let ticket = Ticket(self.open.clone());
        let max = match self.max_connections {
            Some(max) if open >= max => max,
            _ => return (Admission::Full, ticket),
        };
        if open >= max + RESERVED_CONNECTIONS + DISPLACED_CONNECTIONS {
            return (Admission::Refused, ticket);
        }
        let mut waiting = self.waiting.lock().expect("reserve lock");
        waiting.retain(|place| !place.is_decided());
        if open >= max + RESERVED_CONNECTIONS {
            // The reserve is full: the oldest connection still silent gives its place up
            // (it closes, and its descriptor with it), or this one is refused.
            let Some(oldest) = waiting.pop_front() else { return (Admission::Refused, ticket) };
            oldest.evicted.notify_one();
        }
        let place = Arc::new(Place::default());
        waiting.push_back(place.clone());
        (Admission::Reserve(place), ticket)
    }
}

/// The answer to a connection beyond the cap.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 90\r\n\
\r\n\
{\"error\":\"over_capacity\",\"message\":\"this node serves too many connections; retry shortly\"}";

/// Counts a refused connection in `/metrics`: `reason` is `capacity` (beyond the cap and
/// the reserve) or `reserve` (a request other than those the reserve serves).
pub(super) fn count_refused(reason: &'static str) {
    metrics::counter!("shoal_http_connections_refused_total", "reason" => reason).increment(1);
}

/// Answers 503 on `stream` without waiting for anything, and closes it. The request is
/// read first if it is there already (closing with unread data would reset the
/// connection before the client reads the answer).
pub(super) fn refuse_now(stream: TcpStream) {
    let _ = stream.try_read(&mut [0; 2048]);
    let _ = stream.try_write(OVER_CAPACITY);
}

/// Answers 503 on `stream` (the client is waiting for an answer) and closes it, reading
/// what the client sent first (see [`refuse_now`]).
pub(super) async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.try_read(&mut [0; 2048]);
    let write = async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(RESERVE_HEAD_DEADLINE, write).await;
}

/// What became of a connection in the reserve.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reserved {
    /// Its request is one the reserve serves.
    Serve,
    /// Its request is another, or did not come in time.
    Refuse,
    /// A newer connection took its place before it sent anything.
    Evicted,
}

/// Waits (at most [`RESERVE_HEAD_DEADLINE`], or until evicted) for the request line of a
/// connection in the reserve, without consuming it, and says what to do with it.
pub(super) async fn reserve_decides(stream: &TcpStream, place: &Place) -> Reserved {
    let decided = tokio::select! {
        serves = reserve_serves(stream) => if serves { Reserved::Serve } else { Reserved::Refuse },
        () = place.evicted.notified() => Reserved::Evicted,
    };
    place.decide();
    decided
}

/// Waits (at most [`RESERVE_HEAD_DEADLINE`]) for the request line of a connection in the
/// reserve, without consuming it, and returns whether the reserve serves it.
async fn reserve_serves(stream: &TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + RESERVE_HEAD_DEADLINE;
    let mut buf = [0_u8; 512];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let Ok(Ok(len)) = peeked else { return false };
        if len == 0 {
            return false;
        }
        if let Some(end) = buf[..len].windows(2).position(|pair| pair == b"\r\n") {
            return serves(&buf[..end]);
        }
        if len == buf.len() {
            return false;
        }
        // Part of the line is there: the peek would return at once, so wait a little.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// Returns whether request line `line` is one the reserve serves.
fn serves(line: &[u8]) -> bool {
    let mut words = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else { return false };
    let path = target.split(|&byte| byte == b'?').next().unwrap_or_default();
    path.starts_with(b"/internal/")
        || (method == b"GET" && matches!(path, b"/api/health" | b"/api/health/ready" | b"/metrics"))
}

/// Raises this process's soft limit on open files to its hard limit, logs the outcome,
/// and returns the limit in force (`None` where there is none to read).
pub fn raise_open_file_limit() -> Option<u64> {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(before = ?before, limit, "open-file limit: {limit}");
            Some(limit)
        }
        Err(error) => {
            tracing::warn!(%error, limit = ?before, "cannot raise the open-file limit");
            before
        }
    }
}

/// Returns the default `--max-connections` under an open-file limit of `limit`: the
/// limit less the reserve and the descriptors kept for everything else (an eighth of
/// the limit, at least [`MIN_OTHER_DESCRIPTORS`]); a quarter of the limit at least.
pub fn default_max_connections(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 30);
    let others = (limit / 8).max(MIN_OTHER_DESCRIPTORS);
    limit.saturating_sub(others + RESERVED_CONNECTIONS).max(limit / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_serves_health_metrics_and_internal_only() {
        for line in [
            &b"GET /api/health HTTP/1.1"[..],
            b"GET /api/health/ready HTTP/1.1",
            b"GET /metrics?x=1 HTTP/1.1",
            b"POST /internal/raft/append HTTP/1.1",
        ] {
            assert!(serves(line), "{}", String::from_utf8_lossy(line));
        }
        for line in [
            &b"POST /api/health HTTP/1.1"[..],
            b"GET /api/sessions HTTP/1.1",
            b"GET /api/healthz HTTP/1.1",
            b"GET /internal HTTP/1.1",
            b"garbage",
        ] {
            assert!(!serves(line), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_503_is_well_formed() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok(), "{body}");
    }

    #[tokio::test]
    async fn the_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(default_max_connections(1024), 1024 - 128 - 64);
        assert_eq!(default_max_connections(512), 512 - 128 - 64);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) - (1 << 17) - 64);
        assert_eq!(default_max_connections(100), 25);
        let gate = Gate::new(Some(2));
        let full: Vec<_> = (0..2).map(|_| gate.admit()).collect();
        assert!(full.iter().all(|(admission, _)| matches!(admission, Admission::Full)));
        let reserve: Vec<_> = (0..RESERVED_CONNECTIONS).map(|_| gate.admit()).collect();
        let places: Vec<Arc<Place>> = reserve
            .iter()
            .map(|(admission, _)| match admission {
                Admission::Reserve(place) => place.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Full: a newcomer takes the place of the oldest that sent nothing yet.
        places[0].decide();
        let (Admission::Reserve(newcomer), _newcomer_ticket) = gate.admit() else {
            panic!("a newcomer gets a place in the full reserve");
        };
        newcomer.decide();
        let evicted = places[1].evicted.notified();
        tokio::pin!(evicted);
        assert!(futures::FutureExt::now_or_never(evicted.as_mut()).is_some(), "the oldest went");
        for place in &places {
            place.decide();
        }
        assert!(matches!(gate.admit().0, Admission::Refused), "no place left to give up");
        drop((full, reserve));
        assert!(matches!(gate.admit().0, Admission::Full), "closed connections count out");
    }
}
