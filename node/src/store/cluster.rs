//! [`ClusterStore`]: the state in the Raft cluster. Writes are [`Command`]s through the
//! leader; reads wait on the read barrier, then read this replica.

use async_trait::async_trait;
use shoal_raft::{
    unix_millis, Cluster, Command, NodeId, ProgressCommand, ProgressRecord, ProgressUpdate,
    Response, SessionChange, SessionRecord, Toucher,
};

use super::{Mode, Result, StateStore, StoreError};

/// The state in the Raft cluster.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    cluster: Cluster,
    /// Batches the expiry slides of reads into one `Touch` a second.
    toucher: Toucher,
}

impl ClusterStore {
    /// Returns the store of `cluster`, whose session reads `toucher` slides.
    pub fn new(cluster: Cluster, toucher: Toucher) -> Self {
        Self { cluster, toucher }
    }

    async fn write_session(&self, command: Command) -> Result<SessionRecord> {
        match self.cluster.write(command).await? {
            Response::Session { record, .. } => Ok(record),
            other => Err(unexpected("a session write", &other)),
        }
    }

    async fn write_progress(&self, command: ProgressCommand) -> Result<ProgressRecord> {
        match self.cluster.write(Command::Progress(command)).await? {
            Response::Progress { record, .. } => Ok(record),
            other => Err(unexpected("a progress write", &other)),
        }
    }
}

/// A state machine answer that does not fit its command: a bug, reported as a failure.
fn unexpected(what: &str, response: &Response) -> StoreError {
    StoreError::Failed(format!("{what} answered {response:?}"))
}

#[async_trait]
impl StateStore for ClusterStore {
    fn mode(&self) -> Mode {
        Mode::Cluster
    }

    async fn create_session(&self, id: &str, data: String, ttl_ms: u64) -> Result<SessionRecord> {
        self.write_session(Command::CreateSession { id: id.to_string(), data, ttl_ms }).await
    }

    async fn update_session(
        &self,
        id: &str,
        change: SessionChange,
        if_version: Option<u64>,
        max_data_bytes: u64,
    ) -> Result<SessionRecord> {
        let id = id.to_string();
        self.write_session(Command::UpdateSession { id, change, if_version, max_data_bytes }).await
    }

    async fn delete_session(&self, id: &str, if_version: Option<u64>) -> Result<()> {
        let command = Command::DeleteSession { id: id.to_string(), if_version };
        match self.cluster.write(command).await? {
            Response::Deleted => Ok(()),
            other => Err(unexpected("a session delete", &other)),
        }
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        self.cluster.read_barrier().await?;
        let record = self.cluster.reader().session(id, unix_millis())?;
        if record.is_some() {
            self.toucher.touch(id);
        }
        Ok(record)
    }

    async fn create_progress(&self, id: &str, record: ProgressRecord) -> Result<ProgressRecord> {
        self.write_progress(ProgressCommand::Create { id: id.to_string(), record }).await
    }

    async fn record_milestone(
        &self,
        id: &str,
        attempt: u32,
        seq: u64,
        update: ProgressUpdate,
    ) -> Result<ProgressRecord> {
        let id = id.to_string();
        self.write_progress(ProgressCommand::Update { id, attempt, seq, update }).await
    }

    async fn take_over(&self, id: &str, attempt: u32, owner: NodeId) -> Result<ProgressRecord> {
        self.write_progress(ProgressCommand::Takeover { id: id.to_string(), attempt, owner }).await
    }

    async fn progress(&self, id: &str) -> Result<Option<ProgressRecord>> {
        self.cluster.read_barrier().await?;
        Ok(self.cluster.reader().progress(id, unix_millis())?)
    }

    async fn progress_alive(&self, ids: &[String]) -> Result<Vec<bool>> {
        // One read barrier for all of them.
        self.cluster.read_barrier().await?;
        let (reader, now_ms) = (self.cluster.reader(), unix_millis());
        ids.iter().map(|id| Ok(reader.progress(id, now_ms)?.is_some())).collect()
    }

    async fn progress_local(&self, id: &str) -> Option<ProgressRecord> {
        self.cluster.reader().progress(id, unix_millis()).ok().flatten()
    }

    fn progress_on_replica(&self, id: &str) -> Option<Result<Option<ProgressRecord>>> {
        Some(self.cluster.reader().progress(id, unix_millis()).map_err(StoreError::from))
    }

    async fn ready(&self) -> Result<()> {
        if self.cluster.status().leader_id.is_none() {
            return Err(super::Unavailable::NoLeader.into());
        }
        Ok(self.cluster.read_barrier().await?)
    }
}
