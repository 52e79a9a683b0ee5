//! Searches: validation, the shared worker pool, the sources, and the runner that
//! records milestones through Raft and publishes events to the local hub.

mod file_source;

mod part;
mod pncp;
mod pool;
mod sample;
pub mod takeover;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::search::{fold, matches, Notice};
pub use crate::search::{InvalidSearch, SearchParams, SearchRequest, UF_CODES};
pub use file_source::load as load_source_file;
use part::{PartJob, PartOutcome};
pub use pncp::{PncpClient, PncpPage};
pub use pool::{PoolStats, QueueFull, Reservation, WorkerPool};
use serde_json::{json, Value};
use shoal_raft::{NodeId, PartState, ProgressRecord, ProgressStatus, ProgressUpdate, Rejection};
use tokio::sync::{mpsc, watch};

use crate::reports::Reports;
use crate::sse::{terminal_data, EventKind, Hub, Topic};
use crate::store::{patiently, Store, StoreError};

/// How long a finished search's events stay in memory for reconnecting clients.
const TOPIC_LINGER: Duration = Duration::from_secs(120);

/// Why a search could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub progress_ttl: Duration,
    pub sources: Sources,
}

/// The sources searches can read, as configured.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Delay per page of the `sample` source.
    pub sample_page_delay: Duration,
    /// The notices of `--source-file`, when given.
    pub file: Option<Arc<Vec<Notice>>>,
    pub pncp: PncpClient,
}

impl Sources {
    /// Returns the names a search may ask for.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["sample", "pncp"];
        if self.file.is_some() {
            names.push("file");
        }
        names
    }
}

/// Starts, runs and cancels the searches owned by this node.
#[derive(Debug)]
pub struct Searches {
    store: Store,
    node_id: NodeId,
    hub: Arc<Hub>,
    pool: WorkerPool,
    reports: Arc<Reports>,
    settings: SearchSettings,
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Every (search, attempt) this process has started: an attempt runs at most once.
    started: Mutex<std::collections::HashSet<(String, u32)>>,
}

/// How many times the end of a search is tried before streams are ended anyway.
const TERMINAL_TRIES: u32 = 3;

/// How a search ended.
struct Outcome {
    status: ProgressStatus,
    kind: EventKind,
    result: Option<Value>,
    error: Option<String>,
}

impl Searches {
    /// Returns a runner on `pool` that publishes to `hub`.
    pub fn new(
        store: Store,
        node_id: NodeId,
        hub: Arc<Hub>,
        pool: WorkerPool,
        reports: Arc<Reports>,
        settings: SearchSettings,
    ) -> Self {
        Self {
            store,
            node_id,
            hub,
            pool,
            reports,
            settings,
            cancels: Mutex::default(),
            started: Mutex::default(),
        }
    }

    /// Returns the sources a search may ask for.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.settings.sources.names()
    }

    /// Returns the pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Records a new search through Raft and queues one job per UF; answers once the
    /// search is durable. A full queue refuses the whole search.
    pub async fn start(
        self: &Arc<Self>,
        params: SearchParams,
    ) -> Result<(String, ProgressRecord), StartError> {
        let reservation = self.pool.reserve(params.ufs.len())?;
        let id = format!("{:032x}", rand::random::<u128>());
        let parts = params
            .ufs
            .iter()
            .map(|uf| PartState {
                name: uf.clone(),
                status: ProgressStatus::Queued,
                pages: 0,
                records: 0,
            })
            .collect();
        let record = ProgressRecord {
            kind: "search".to_string(),
            params: serde_json::to_string(&params).expect("params serialize"),
            status: ProgressStatus::Queued,
            owner: self.node_id(),
            attempt: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            total_parts: params.ufs.len() as u32,
            parts,
            result: None,
            error: None,
            last_seq: 0,
            ttl_ms: self.settings.progress_ttl.as_millis() as u64,
            expires_at_ms: 0,
        };
        // Marked running before it exists, so the takeover loop never runs it twice.
        let (cancel, cancelled) = watch::channel(false);
        self.cancels.lock().expect("cancels lock").insert(id.clone(), cancel);
        let record = match self.store.create_progress(&id, record).await {
            Ok(record) => record,
            Err(error) => {
                self.cancels.lock().expect("cancels lock").remove(&id);
                return Err(error.into());
            }
        };
        self.started.lock().expect("started lock").insert((id.clone(), record.attempt));
        let topic = self.hub.open(&id, record.attempt, record.last_seq);
        let mode = self.store.mode().as_str();
        tracing::info!(
            search_id = %id,
            ufs = params.ufs.len(),
            mode,
            "created progress tracker: {id} ({} UFs) [mode: {mode}]",
            params.ufs.len()
        );
        tokio::spawn(self.clone().run(id.clone(), params, topic, reservation, cancelled));
        Ok((id, record))
    }

    /// Returns whether this process ever started attempt `attempt` of search `id`.
    pub fn has_started(&self, id: &str, attempt: u32) -> bool {
        self.started.lock().expect("started lock").contains(&(id.to_string(), attempt))
    }

    /// Returns whether this node runs search `id` now.
    pub fn is_running(&self, id: &str) -> bool {
        self.cancels.lock().expect("cancels lock").contains_key(id)
    }

    /// Runs attempt `record.attempt` of search `id` here, from the start: after a takeover.
    pub async fn resume(
        self: &Arc<Self>,
        id: &str,
        record: &ProgressRecord,
    ) -> Result<(), StartError> {
        let params: SearchParams = serde_json::from_str(&record.params).map_err(|error| {
            StoreError::Failed(format!("search {id} has unreadable parameters: {error}"))
        })?;
        let reservation = self.pool.reserve(params.ufs.len())?;
        let (cancel, cancelled) = watch::channel(false);
        if !self.started.lock().expect("started lock").insert((id.to_string(), record.attempt)) {
            return Ok(()); // This attempt ran here already; a takeover starts the next one.
        }
        if self.cancels.lock().expect("cancels lock").insert(id.to_string(), cancel).is_some() {
            return Ok(()); // Already running.
        }
        // Streams of the attempt that is over end, and their clients reconnect to this one.
        if let Some(old) = self.hub.get(id).filter(|topic| topic.attempt != record.attempt) {
            old.close();
        }
        let topic = self.hub.open(id, record.attempt, record.last_seq);
        tracing::info!(search_id = %id, attempt = record.attempt, ufs = params.ufs.len(), "running a search taken over");
        tokio::spawn(self.clone().run(id.to_string(), params, topic, reservation, cancelled));
        Ok(())
    }

    /// Asks running search `id` to stop; returns false if this node does not run it.
    pub fn cancel(&self, id: &str) -> bool {
        match self.cancels.lock().expect("cancels lock").get(id) {
            Some(cancel) => {
                cancel.send_replace(true);
                true
            }
            None => false,
        }
    }

    async fn run(
        self: Arc<Self>,
        id: String,
        params: SearchParams,
        topic: Arc<Topic>,
        mut reservation: Reservation,
        cancelled: watch::Receiver<bool>,
    ) {
        let attempt = topic.attempt;
        let started =
            patiently(|| self.store.record_milestone(&id, attempt, 0, ProgressUpdate::Started));
        if let Err(error) = started.await {
            tracing::warn!(search_id = %id, %error, "recording the start of a search failed");
        }
        let keywords: Vec<String> = params.keywords.iter().map(|keyword| fold(keyword)).collect();
        let (outcomes, mut finished) = mpsc::unbounded_channel();
        for uf in &params.ufs {
            let job = PartJob {
                store: self.store.clone(),
                topic: topic.clone(),
                id: id.clone(),
                uf: uf.clone(),
                first_day: params.first_day(),
                last_day: params.last_day(),
                keywords: keywords.clone(),
                source: params.source.clone(),
                sources: self.settings.sources.clone(),
                cancelled: cancelled.clone(),
            };
            let outcomes = outcomes.clone();
            self.pool.submit(&mut reservation, async move {
                let outcome = job.run().await;
                let succeeded = !matches!(outcome, PartOutcome::Failed(_));
                let _ = outcomes.send(outcome);
                succeeded
            });
        }
        drop(outcomes);

        let (mut found, mut failure, mut was_cancelled) = (Vec::new(), None, false);
        let mut received = 0;
        let mut cancel_requested = cancelled.clone();
        loop {
            tokio::select! {
                outcome = finished.recv() => {
                    let Some(outcome) = outcome else { break };
                    received += 1;
                    match outcome {
                        PartOutcome::Done { uf, notices } => found.push((uf, notices)),
                        PartOutcome::Failed(error) => failure = failure.or(Some(error)),
                        PartOutcome::Cancelled => was_cancelled = true,
                    }
                }
                // Parts still queued behind other searches would notice only when they
                // start: end the search now, they stop at once when they do.
                _ = cancel_requested.wait_for(|cancelled| *cancelled) => {
                    was_cancelled = true;
                    break;
                }
            }
        }
        if !was_cancelled && failure.is_none() && received < params.ufs.len() {
            failure = Some("a part stopped unexpectedly; see the node's log".to_string());
        }
        // Rows in the order the UFs were asked for, whatever order the parts ended in.
        found.sort_by_key(|(uf, _)| params.ufs.iter().position(|wanted| wanted == uf));
        let notices: Vec<Notice> = found.into_iter().flat_map(|(_, notices)| notices).collect();
        let total_records = notices.len() as u64;
        let (status, kind, result, error) = if was_cancelled || *cancelled.borrow() {
            (ProgressStatus::Cancelled, EventKind::Cancelled, None, None)
        } else if let Some(error) = failure {
            (ProgressStatus::Failed, EventKind::Failed, None, Some(error))
        } else {
            match self.reports.store_search_report(&id, &params, notices).await {
                Ok(download) => {
                    let result = json!({ "total_records": total_records, "download": download });
                    (ProgressStatus::Completed, EventKind::Completed, Some(result), None)
                }
                Err(error) => (ProgressStatus::Failed, EventKind::Failed, None, Some(error)),
            }
        };
        self.finish(&id, &topic, Outcome { status, kind, result, error }).await;
        tracing::info!(search_id = %id, status = status.as_str(), total_records, "search finished");
        self.cancels.lock().expect("cancels lock").remove(&id);
        self.hub.retire(&id, &topic, TOPIC_LINGER);
    }

    /// Records the end of a search through Raft and publishes its terminal event,
    /// retrying a few times; if it still cannot be recorded, publishes a `failed` event
    /// anyway, so that no client waits for an end that never comes.
    async fn finish(&self, id: &str, topic: &Topic, outcome: Outcome) {
        let mut last_error = None;
        for try_number in 1..=TERMINAL_TRIES {
            let recorded = topic
                .publish_durable(outcome.kind, |seq| {
                    let update = ProgressUpdate::Finished {
                        status: outcome.status,
                        result: outcome.result.as_ref().map(Value::to_string),
                        error: outcome.error.clone(),
                    };
                    let data = terminal_data(
                        outcome.status,
                        outcome.result.clone(),
                        outcome.error.as_deref(),
                    );
                    async move {
                        patiently(|| {
                            self.store.record_milestone(id, topic.attempt, seq, update.clone())
                        })
                        .await?;
                        Ok::<_, StoreError>(data)
                    }
                })
                .await;
            match recorded {
                Ok(_) => return,
                Err(StoreError::Rejected(Rejection::StaleAttempt { current })) => {
                    // Another node took the search over: its attempt ends it, not this one.
                    tracing::warn!(search_id = %id, current, "search was taken over; this attempt stops");
                    topic.close();
                    return;
                }
                Err(error) => {
                    tracing::warn!(search_id = %id, %error, try_number, "recording the end of a search failed");
                    last_error = Some(error);
                    tokio::time::sleep(Duration::from_millis(500) * try_number).await;
                }
            }
        }
        let error =
            format!("could not record the end of the search: {}", last_error.expect("tried"));
        tracing::error!(search_id = %id, %error, "ending the event stream unrecorded");
        topic
            .publish(EventKind::Failed, terminal_data(ProgressStatus::Failed, None, Some(&error)))
            .await;
    }
}
