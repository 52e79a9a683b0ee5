//! The domain layer: sessions and progress records (searches, trackers) as the API and
//! the jobs speak of them, over one of two implementations of [`StateStore`]:
//! [`ClusterStore`] (Raft: linearizable, replicated, fsynced on a majority; the default)
//! or [`RedisStore`] (compatibility mode, DESIGN §7). Both apply the same rules
//! (`shoal_raft::rules`, `shoal_raft::transition`) to the same records, so every request
//! gets the same answer in either mode. Only the implementations know Raft commands or
//! Redis keys; callers see domain types and [`StoreError`].

mod cluster;
mod error;
mod redis;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use cluster::ClusterStore;
pub use error::{Result, StoreError, Unavailable};
pub(crate) use redis::encode_session;
pub use redis::{RedisKeys, RedisStore};
use shoal_raft::{NodeId, ProgressRecord, ProgressUpdate, SessionChange, SessionRecord};

/// How long background writes (a search's milestones) retry while the store cannot take
/// them (no leader, Redis restarting).
const PATIENCE: Duration = Duration::from_secs(15);

/// Which implementation holds the state, as `/api/health` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Cluster,
    Redis,
}

impl Mode {
    /// Returns `cluster` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cluster => "cluster",
            Mode::Redis => "redis",
        }
    }
}

/// Where sessions and progress records live. Every write answers once it is durable
/// (Raft) or stored (Redis); every read is as of now (linearizable in a cluster).
#[async_trait]
pub trait StateStore: Debug + Send + Sync {
    /// Returns which implementation this is.
    fn mode(&self) -> Mode;

    /// Creates session `id` holding `data` (a JSON object, as text).
    async fn create_session(&self, id: &str, data: String, ttl_ms: u64) -> Result<SessionRecord>;

    /// Changes the data of session `id`, if it is at `if_version` (when given) and the
    /// result is an object of at most `max_data_bytes`.
    async fn update_session(
        &self,
        id: &str,
        change: SessionChange,
        if_version: Option<u64>,
        max_data_bytes: u64,
    ) -> Result<SessionRecord>;

    /// Deletes session `id`, if it is at `if_version` (when given).
    async fn delete_session(&self, id: &str, if_version: Option<u64>) -> Result<()>;

    /// Reads session `id` and slides its expiry.
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;

    /// Creates progress record `id`.
    async fn create_progress(&self, id: &str, record: ProgressRecord) -> Result<ProgressRecord>;

    /// Records milestone `update` of attempt `attempt` of record `id`, as its event `seq`
    /// (0: a milestone without an event of its own).
    async fn record_milestone(
        &self,
        id: &str,
        attempt: u32,
        seq: u64,
        update: ProgressUpdate,
    ) -> Result<ProgressRecord>;

    /// Hands unfinished record `id`, at attempt `attempt`, to `owner` as attempt + 1.
    async fn take_over(&self, id: &str, attempt: u32, owner: NodeId) -> Result<ProgressRecord>;

    /// Reads progress record `id`.
    async fn progress(&self, id: &str) -> Result<Option<ProgressRecord>>;

    /// Returns which of `ids` have a live progress record now.
    async fn progress_alive(&self, ids: &[String]) -> Result<Vec<bool>>;

    /// Reads progress record `id` cheaply: this node's copy, which may lag.
    async fn progress_local(&self, id: &str) -> Option<ProgressRecord>;

    /// Reads progress record `id` from this node's replica without waiting, where the
    /// store has one (`None` in Redis mode): for reads under a lock that must not await.
    fn progress_on_replica(&self, id: &str) -> Option<Result<Option<ProgressRecord>>>;

    /// Succeeds when this node can serve reads and writes now.
    async fn ready(&self) -> Result<()>;
}

/// The state store of a node, shared by the handlers and the jobs.
pub type Store = Arc<dyn StateStore>;

/// Runs `write` until it succeeds, fails for good, or [`PATIENCE`] runs out: for
/// background work that has no client to retry it (a search's milestones). A node cut off
/// from the quorum waits too: an election ends within a second or two, and failing the
/// search instead would lose its work.
pub async fn patiently<T, F, Fut>(write: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    patiently_while(StoreError::mends_with_time, write).await
}

/// Runs `write` until it succeeds, fails with an error `mends` does not expect to mend,
/// or [`PATIENCE`] runs out.
pub async fn patiently_while<T, E, F, Fut>(
    mends: impl Fn(&E) -> bool,
    mut write: F,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Err(error) if mends(&error) && started.elapsed() < PATIENCE => {
                tracing::debug!(%error, "the store cannot take a write yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
