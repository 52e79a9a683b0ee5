//! Periodic proposals that keep TTLs deterministic: `Expire` from the leader, and the
//! batched `Touch` of sessions read on this node (sliding expiry without a write per read).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::types::Command;
use crate::{unix_millis, Cluster};

/// At most this many distinct ids wait for one touch; more are dropped until the next
/// tick (their sessions then slide a second later, at the next read).
const MAX_PENDING_TOUCHES: usize = 100_000;

/// How often the leader looks for a plain key due to expire: a key with `PX 100` goes
/// about this long (plus a commit) after its deadline, as a Redis user expects, while
/// looking costs one read of the plain keys' expiry index's first entry.
const EXPIRY_CHECK: Duration = Duration::from_millis(25);

/// Collects the ids of sessions read on this node until the next `Touch` proposal.
#[derive(Debug, Clone, Default)]
pub struct Toucher {
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Toucher {
    /// Records that session `id` was used, so that its deadline slides.
    pub fn touch(&self, id: &str) {
        let mut pending = self.pending.lock().expect("toucher lock is never poisoned");
        if pending.len() < MAX_PENDING_TOUCHES {
            pending.insert(id.to_string());
        }
    }

    /// Puts back ids whose touch could not be proposed, within the bound.
    fn restore(&self, ids: Vec<String>) {
        let mut pending = self.pending.lock().expect("toucher lock is never poisoned");
        let room = MAX_PENDING_TOUCHES.saturating_sub(pending.len());
        pending.extend(ids.into_iter().take(room));
    }

    fn take(&self) -> Vec<String> {
        let mut pending = self.pending.lock().expect("toucher lock is never poisoned");
        pending.drain().collect()
    }
}

/// Starts the maintenance loop: every [`EXPIRY_CHECK`] the leader proposes `Expire` when
/// something is due, and every `interval` every node proposes one `Touch` for the
/// sessions read since the last tick. Stops when `shutdown` turns true.
pub fn spawn_maintenance(
    cluster: Cluster,
    toucher: Toucher,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expiry = tokio::time::interval(EXPIRY_CHECK.min(interval));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let full_tick = tokio::select! {
                _ = ticker.tick() => true,
                _ = expiry.tick() => false,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            expire_due(&cluster, full_tick).await;
            if !full_tick {
                continue;
            }
            cluster.snapshot_if_log_grew().await;
            let ids = toucher.take();
            if !ids.is_empty() {
                let command = Command::Touch { ids: ids.clone() };
                if let Err(error) = cluster.write(command).await {
                    tracing::debug!(%error, num_ids = ids.len(), "session touch not proposed; retried next tick");
                    toucher.restore(ids);
                }
            }
        }
    })
}

/// Proposes `Expire` if something is due: anything on a full tick, plain keys only in
/// between (sessions and write answers do not need it sooner, and proposing for them
/// every [`EXPIRY_CHECK`] would cost a log entry each time under a steady write load).
async fn expire_due(cluster: &Cluster, full_tick: bool) {
    if !cluster.is_leader() {
        return;
    }
    let reader = cluster.reader();
    let next = if full_tick { reader.next_deadline_ms() } else { reader.next_kv_deadline_ms() };
    match next {
        Ok(Some(deadline_ms)) if deadline_ms <= unix_millis() => {
            match cluster.write(Command::Expire).await {
                Ok(response) => tracing::debug!(?response, "expired due entries"),
                Err(error) => tracing::warn!(%error, "expiry not proposed; retried next tick"),
            }
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "reading the expiry index failed"),
    }
}
