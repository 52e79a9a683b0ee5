//! Snapshots: the applied state is the snapshot. Building one records its point (and
//! makes the state durable); sending one encodes the state's pairs; installing one
//! replaces the state, marked so that a crash midway is finished at the next start.

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::{LogId, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use shoal_storage::{codec, Engine, KeyValue, Tree, WriteBatch};
use tokio::sync::watch;

use super::{Membership, StateMachineStore, StorageError, CURRENT_SNAPSHOT_KEY, INSTALLING_KEY};
use crate::keys;
use crate::types::{Node, NodeId, TypeConfig};

/// A snapshot as kept on disk: openraft's metadata, and the encoded state pairs only
/// while a received snapshot is being installed (see [`StateMachineStore`]).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<NodeId, Node>,
    pub(crate) data: Vec<u8>,
}

/// Records a snapshot point: the applied state itself is the snapshot (its data is
/// encoded from the state when a follower needs it), so building one writes only its
/// metadata and makes the state durable before openraft purges the log behind it.
pub struct SnapshotBuilder {
    pub(super) engine: Arc<dyn Engine>,
    pub(super) durable: Arc<watch::Sender<u64>>,
    pub(super) snapshots: Arc<dyn Tree>,
    pub(super) snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) last_applied: Option<LogId<NodeId>>,
    pub(super) membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = snapshot_meta(self.last_applied, &self.membership);
        let stored = StoredSnapshot { meta: meta.clone(), data: Vec::new() };
        let signature = Some(meta.signature());
        {
            // A build runs beside the state machine task, so an install of a newer
            // snapshot may have finished meanwhile: never replace it with an older one.
            let _writing = self.snapshot_lock.lock().await;
            let current = self
                .snapshots
                .get(CURRENT_SNAPSHOT_KEY)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?
                .map(|bytes| codec::decode::<StoredSnapshot>(&bytes, "snapshot"))
                .transpose()
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            if current.is_none_or(|current| current.meta.last_log_id < meta.last_log_id) {
                self.snapshots
                    .insert(CURRENT_SNAPSHOT_KEY, &codec::encode(&stored))
                    .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
            }
        }
        // openraft purges the log behind this snapshot next: make the state it covers
        // durable first.
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        raise(&self.durable, self.last_applied);
        tracing::info!(snapshot = %meta, "raft snapshot point recorded");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) })
    }
}

/// Raises the durable index to cover `applied` (it never goes back).
pub(super) fn raise(durable: &watch::Sender<u64>, applied: Option<LogId<NodeId>>) {
    let index = applied.map_or(0, |log_id| log_id.index + 1);
    durable.send_if_modified(|durable| {
        let raised = index > *durable;
        *durable = (*durable).max(index);
        raised
    });
}

/// Returns the metadata of a snapshot of the state at `last_applied`, with a new id.
pub(super) fn snapshot_meta(
    last_applied: Option<LogId<NodeId>>,
    membership: &Membership,
) -> SnapshotMeta<NodeId, Node> {
    let snapshot_id = match last_applied {
        Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, unix_nanos()),
        None => format!("empty-{}", unix_nanos()),
    };
    SnapshotMeta { last_log_id: last_applied, last_membership: membership.clone(), snapshot_id }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}

impl StateMachineStore {
    pub(super) fn read_current_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let bytes = self
            .snapshots
            .get(CURRENT_SNAPSHOT_KEY)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        bytes
            .map(|bytes| codec::decode(&bytes, "snapshot"))
            .transpose()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }

    /// Replaces the whole state with the snapshot's. Not atomic: the caller marks the
    /// install in progress so that a crash midway is finished at the next start.
    pub(super) async fn restore(&mut self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let signature = Some(stored.meta.signature());
        let pairs: Vec<KeyValue> = codec::decode(&stored.data, "snapshot data")
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        let write_err =
            |e: shoal_storage::StorageError| StorageIOError::write_snapshot(signature.clone(), &e);
        let gate = self.gate.clone();
        let _replacing = gate.write().unwrap_or_else(PoisonError::into_inner);
        self.state.clear().map_err(write_err)?;
        let mut batch = WriteBatch::new();
        let (mut num_sessions, mut num_kv, mut clock_ms) = (0_u64, 0_u64, 0_u64);
        for (key, value) in pairs {
            if key.starts_with(keys::SESSION_PREFIX) {
                num_sessions += 1;
            } else if key.starts_with(keys::KV_PREFIX) {
                num_kv += 1;
            } else if key == keys::CLOCK {
                clock_ms = codec::decode(&value, "clock").map_err(write_err)?;
            }
            batch.put(key, value);
        }
        batch.put(keys::LAST_APPLIED, codec::encode(&stored.meta.last_log_id));
        batch.put(keys::MEMBERSHIP, codec::encode(&stored.meta.last_membership));
        batch.put(keys::NUM_SESSIONS, codec::encode(&num_sessions));
        batch.put(keys::NUM_KV, codec::encode(&num_kv));
        self.state.apply(batch).map_err(write_err)?;
        drop(_replacing);
        // Installed: the state holds the data now; keep only the snapshot's metadata.
        let installed = StoredSnapshot { meta: stored.meta.clone(), data: Vec::new() };
        self.snapshots
            .apply({
                let mut done = WriteBatch::new();
                done.put(CURRENT_SNAPSHOT_KEY, codec::encode(&installed));
                done.delete(INSTALLING_KEY);
                done
            })
            .map_err(write_err)?;
        self.flush().await?;
        self.set_last_applied(stored.meta.last_log_id);
        self.mark_durable(stored.meta.last_log_id);
        self.membership = stored.meta.last_membership.clone();
        self.num_sessions.store(num_sessions, Ordering::Relaxed);
        self.kv.keys.store(num_kv, Ordering::Relaxed);
        self.kv.clock_ms.store(clock_ms, Ordering::Relaxed);
        Ok(())
    }
}
