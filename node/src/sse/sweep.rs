//! The hub's sweep: drops the topics whose replicated record is gone or expired.
//!
//! A topic is retired a while after its terminal event; one that never gets one (a
//! tracker nobody finishes, a search whose record expired) would otherwise keep its
//! history in memory for the life of the process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Hub;
use crate::store::Store;

/// Every `interval`, removes from `hub` (and closes, ending their streams) the topics
/// whose record no longer lives, until `stop` turns true.
///
/// Contract: a topic is opened only after its record was written or read, so a record
/// that one read barrier after listing the topics does not find is gone for good; a
/// replica that lags cannot make the sweep drop a live topic (which would renumber the
/// events of its next publisher).
pub async fn run(hub: Arc<Hub>, store: Store, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(error) = sweep(&hub, &store).await {
            tracing::debug!(%error, "the hub's sweep could not read the records; next time");
        }
    }
}

/// Removes the topics of `hub` whose record is gone; returns how many.
pub async fn sweep(hub: &Hub, store: &Store) -> crate::store::Result<usize> {
    let topics = hub.topics();
    if topics.is_empty() {
        metrics::gauge!("shoal_event_topics").set(0.0);
        return Ok(0);
    }
    let ids: Vec<String> = topics.iter().map(|(id, _)| id.clone()).collect();
    let alive = store.progress_alive(&ids).await?;
    let mut removed = 0;
    for ((id, topic), alive) in topics.iter().zip(alive) {
        if !alive {
            hub.remove(id, topic);
            topic.close();
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::debug!(removed, left = hub.len(), "dropped the topics of expired records");
    }
    metrics::gauge!("shoal_event_topics").set(hub.len() as f64);
    Ok(removed)
}
