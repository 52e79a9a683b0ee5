//! Takeover (DESIGN §8): unfinished searches whose owner is dead, or that this node
//! owned before it restarted, run again here as the next attempt.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_raft::{unix_millis, Cluster, NodeId, ProgressRecord};
use tokio::sync::watch;

use super::Searches;

/// How long an owner must look dead before the leader takes its searches over.
const TAKEOVER_GRACE: Duration = Duration::from_secs(3);
use crate::gossip::Gossip;

/// Runs the takeover loop every `interval` until `shutdown` turns true. `started_ms` is
/// when this process started: a search it owns but does not run, last changed before
/// then, was orphaned by a restart.
pub async fn run(
    searches: Arc<Searches>,
    cluster: Cluster,
    gossip: Arc<Gossip>,
    interval: Duration,
    started_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when each owner has looked dead (or unknown) to gossip.
    let mut suspected: HashMap<NodeId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // Decide on the cluster's latest state, not a lagging local copy.
        if cluster.read_barrier().await.is_err() {
            continue;
        }
        let Ok(records) = cluster.reader().progress_records(unix_millis()) else { continue };
        let unfinished: Vec<(String, ProgressRecord)> = records
            .into_iter()
            .filter(|(id, record)| {
                !record.status.is_terminal()
                    && (record.kind == "tracker"
                        || (record.kind == "search" && !searches.is_running(id)))
            })
            .collect();
        let alive: BTreeSet<NodeId> = gossip
            .members()
            .await
            .into_iter()
            .filter(|member| member.alive)
            .map(|member| member.node_id)
            .collect();
        let now = Instant::now();
        suspected.retain(|node_id, _| !alive.contains(node_id));
        let me = cluster.node_id();
        for (id, record) in unfinished {
            let take_over = if record.kind == "tracker" {
                // A tracker runs nothing: it only needs an owner alive to number its events.
                record.owner != me
                    && cluster.is_leader()
                    && !alive.contains(&record.owner)
                    && now.duration_since(*suspected.entry(record.owner).or_insert(now))
                        >= TAKEOVER_GRACE
            } else if record.owner == me {
                if !searches.has_started(&id, record.attempt) && record.updated_at_ms >= started_ms
                {
                    // Handed to this node by a takeover: run that attempt, once.
                    if let Err(error) = searches.resume(&id, &record).await {
                        tracing::warn!(search_id = %id, %error, "cannot run a search taken over yet; retrying");
                    }
                    continue;
                }
                // Orphaned by a restart, or an attempt here that could not record its end.
                true
            } else if alive.contains(&record.owner) || !cluster.is_leader() {
                false
            } else {
                // The leader alone takes over from owners gossip has not seen alive for a
                // while (a pause or a new leader's cold gossip is not a death).
                let since = *suspected.entry(record.owner).or_insert(now);
                now.duration_since(since) >= TAKEOVER_GRACE
            };
            if !take_over {
                continue;
            }
            match searches.store.take_over(&id, record.attempt, me).await {
                Ok(taken) => {
                    tracing::warn!(
                        search_id = %id,
                        from = record.owner,
                        attempt = taken.attempt,
                        "took over a search or tracker whose owner is gone"
                    );
                    if taken.kind == "search" {
                        if let Err(error) = searches.resume(&id, &taken).await {
                            tracing::warn!(search_id = %id, %error, "cannot run a search taken over yet; retrying");
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(search_id = %id, %error, "takeover not recorded; retrying")
                }
            }
        }
    }
}
