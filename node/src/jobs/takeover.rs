//! Takeover (DESIGN §8): unfinished searches whose owner is dead, or that this node
//! owned before it restarted, run again here as the next attempt.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_raft::{
    unix_millis, Cluster, Command, NodeId, ProgressCommand, ProgressRecord, Response,
};
use tokio::sync::watch;

use super::Searches;
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
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Ok(records) = cluster.reader().progress_records(unix_millis()) else { continue };
        let unfinished: Vec<(String, ProgressRecord)> = records
            .into_iter()
            .filter(|(id, record)| {
                record.kind == "search" && !record.status.is_terminal() && !searches.is_running(id)
            })
            .collect();
        if unfinished.is_empty() {
            continue;
        }
        let dead: BTreeSet<NodeId> = gossip
            .members()
            .await
            .into_iter()
            .filter(|member| !member.alive)
            .map(|member| member.node_id)
            .collect();
        let me = cluster.node_id();
        for (id, record) in unfinished {
            let mine = record.owner == me;
            if mine && record.updated_at_ms >= started_ms {
                // Handed to this node by a takeover: run it as it is.
                if let Err(error) = searches.resume(&id, &record).await {
                    tracing::warn!(search_id = %id, %error, "cannot run a search taken over yet; retrying");
                }
                continue;
            }
            // The leader alone takes over from dead owners, so only one node does.
            let orphaned = mine || (cluster.is_leader() && dead.contains(&record.owner));
            if !orphaned {
                continue;
            }
            let command =
                ProgressCommand::Takeover { id: id.clone(), attempt: record.attempt, owner: me };
            match cluster.write(Command::Progress(command)).await {
                Ok(Response::Progress { record: taken, .. }) => {
                    tracing::warn!(
                        search_id = %id,
                        from = record.owner,
                        attempt = taken.attempt,
                        "took over a search whose owner is gone"
                    );
                    if let Err(error) = searches.resume(&id, &taken).await {
                        tracing::warn!(search_id = %id, %error, "cannot run a search taken over yet; retrying");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(search_id = %id, %error, "takeover not recorded; retrying")
                }
            }
        }
    }
}
