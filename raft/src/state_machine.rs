//! The replicated state machine: sessions and their expiry index, on an [`Engine`] tree.
//!
//! Contract: applying the same entries in the same order gives the same state on every
//! replica. Each entry is applied as one atomic batch together with `last_applied`, so
//! after a crash the tree is at some entry boundary and openraft re-applies the rest
//! from the log.
//!
//! Durability: applies are committed without fsync; every 200 ms
//! ([`DURABLE_INTERVAL`]) an apply is committed durably, and so is every snapshot point.
//! The durable applied index ([`StateMachineStore::durable_index`]) tells the log store
//! how far it may purge.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_storage::{codec, Engine, KeyValue, Tree, WriteBatch};
use tokio::sync::watch;

use crate::blob;
use crate::progress;
use crate::types::{BlobMeta, ProgressRecord};
use crate::types::{Command, Entry, Node, NodeId, Request, Response, SessionRecord, TypeConfig};
use crate::{keys, once, rules};

const STATE_TREE: &str = "state";
const SNAPSHOT_TREE: &str = "snapshot";
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";
/// Present while a received snapshot is being installed; found at start, the install is redone.
const INSTALLING_KEY: &[u8] = b"installing";
/// How often an apply is committed durably (with everything applied before it).
pub const DURABLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

type StorageError = openraft::StorageError<NodeId>;
type Membership = StoredMembership<NodeId, Node>;

/// A snapshot as kept on disk: openraft's metadata, and the encoded state pairs only
/// while a received snapshot is being installed (see [`StateMachineStore`]).
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<NodeId, Node>,
    pub(crate) data: Vec<u8>,
}

/// Read access to the applied state, shared with the HTTP handlers.
///
/// Reads see everything applied so far; callers that need linearizability wait on the
/// read barrier of [`crate::Cluster`] first.
#[derive(Debug, Clone)]
pub struct StateReader {
    state: Arc<dyn Tree>,
    num_sessions: Arc<AtomicU64>,
    /// Held for writing while a snapshot replaces the state, so reads never see it half
    /// replaced.
    gate: Arc<RwLock<()>>,
}

impl StateReader {
    /// Returns session `id` unless it is missing or expired at `now_ms`.
    pub fn session(&self, id: &str, now_ms: u64) -> shoal_storage::Result<Option<SessionRecord>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        Ok(read_session(&*self.state, id)?.filter(|record| !record.is_expired(now_ms)))
    }

    /// Returns search or tracker `id` unless it is missing or expired at `now_ms`.
    pub fn progress(&self, id: &str, now_ms: u64) -> shoal_storage::Result<Option<ProgressRecord>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        Ok(progress::read(&*self.state, id)?.filter(|record| record.expires_at_ms > now_ms))
    }

    /// Returns committed blob `id` whole, unless it is missing or expired at `now_ms`.
    pub fn blob(
        &self,
        id: &str,
        now_ms: u64,
    ) -> shoal_storage::Result<Option<(BlobMeta, Vec<u8>)>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        blob::read(&*self.state, id, now_ms)
    }

    /// Returns every unexpired search and tracker.
    pub fn progress_records(
        &self,
        now_ms: u64,
    ) -> shoal_storage::Result<Vec<(String, ProgressRecord)>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let mut records = Vec::new();
        for pair in self.state.scan_prefix(keys::PROGRESS_PREFIX) {
            let (key, bytes) = pair?;
            let record: ProgressRecord = codec::decode(&bytes, "progress")?;
            if record.expires_at_ms > now_ms {
                let id = String::from_utf8_lossy(&key[keys::PROGRESS_PREFIX.len()..]).into_owned();
                records.push((id, record));
            }
        }
        Ok(records)
    }

    /// Returns the number of stored sessions (expired ones count until the next expiry).
    pub fn num_sessions(&self) -> u64 {
        self.num_sessions.load(Ordering::Relaxed)
    }

    /// Returns the earliest deadline of anything `Expire` removes: the expiry index and
    /// the answers of keyed writes.
    pub fn next_deadline_ms(&self) -> shoal_storage::Result<Option<u64>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let indexed = match self.state.scan_prefix(keys::EXPIRY_PREFIX).next() {
            Some(pair) => keys::parse_expiry(&pair?.0).map(|(deadline_ms, _, _)| deadline_ms),
            None => None,
        };
        let answers = once::next_deadline(&*self.state)?;
        Ok(indexed.into_iter().chain(answers).min())
    }
}

fn read_session(state: &dyn Tree, id: &str) -> shoal_storage::Result<Option<SessionRecord>> {
    state.get(&keys::session(id))?.map(|bytes| codec::decode(&bytes, "session")).transpose()
}

/// openraft's [`RaftStateMachine`] for shoal.
#[derive(Debug)]
pub struct StateMachineStore {
    engine: Arc<dyn Engine>,
    state: Arc<dyn Tree>,
    snapshots: Arc<dyn Tree>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    num_sessions: Arc<AtomicU64>,
    gate: Arc<RwLock<()>>,
    /// The applied index plus one (0: nothing applied).
    applied: watch::Sender<u64>,
    /// The applied index plus one that is durable, for the log store's purge guard.
    durable: Arc<watch::Sender<u64>>,
    /// When an apply was last committed durably.
    durable_at: std::time::Instant,
    /// Orders the writes of the current snapshot by snapshot builds and installs.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// False until openraft's start-up has read the current snapshot's metadata.
    started: bool,
}

impl StateMachineStore {
    /// Opens the state machine on `engine`, finishing a snapshot install a crash interrupted.
    pub async fn open(engine: Arc<dyn Engine>) -> Result<Self, StorageError> {
        let state =
            engine.open_tree(STATE_TREE).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshots =
            engine.open_tree(SNAPSHOT_TREE).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let mut store = Self {
            engine,
            state,
            snapshots,
            last_applied: None,
            membership: Membership::default(),
            num_sessions: Arc::new(AtomicU64::new(0)),
            gate: Arc::default(),
            applied: watch::Sender::new(0),
            durable: Arc::new(watch::Sender::new(0)),
            durable_at: std::time::Instant::now(),
            snapshot_lock: Arc::default(),
            started: false,
        };
        let interrupted_install = store
            .snapshots
            .get(INSTALLING_KEY)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        if interrupted_install.is_some() {
            let stored = store.read_current_snapshot()?.ok_or_else(|| {
                StorageIOError::read_snapshot(
                    None,
                    &shoal_storage::StorageError::Corrupt {
                        what: "snapshot",
                        reason: "an install was interrupted but no snapshot is stored".to_string(),
                    },
                )
            })?;
            tracing::warn!(snapshot = %stored.meta, "finishing a snapshot install interrupted by a crash");
            store.restore(&stored).await?;
        }
        store.load_meta()?;
        // What the engine holds now may be only in the page cache (a clean stop writes it
        // without fsync): make it durable, so the durable index starts at what was loaded.
        store.flush().await?;
        store.mark_durable(store.last_applied);
        Ok(store)
    }

    /// Returns a reader of the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            state: self.state.clone(),
            num_sessions: self.num_sessions.clone(),
            gate: self.gate.clone(),
        }
    }

    /// Returns the applied index plus one (0: nothing applied), updated on every apply.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Returns the applied index plus one that is durable (0: none): a crash leaves the
    /// state at that point or later.
    pub fn durable_index(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    fn mark_durable(&mut self, applied: Option<LogId<NodeId>>) {
        raise(&self.durable, applied);
        self.durable_at = std::time::Instant::now();
    }

    fn set_last_applied(&mut self, last_applied: Option<LogId<NodeId>>) {
        self.last_applied = last_applied;
        self.applied.send_replace(last_applied.map_or(0, |log_id| log_id.index + 1));
    }

    fn load_meta(&mut self) -> Result<(), StorageError> {
        fn read<T: DeserializeOwned>(
            state: &dyn Tree,
            key: &[u8],
            what: &'static str,
        ) -> shoal_storage::Result<Option<T>> {
            state.get(key)?.map(|bytes| codec::decode(&bytes, what)).transpose()
        }
        let state_tree = self.state.clone();
        let state = &*state_tree;
        let read_error = |e: shoal_storage::StorageError| StorageIOError::read_state_machine(&e);
        let last_applied: Option<Option<LogId<NodeId>>> =
            read(state, keys::LAST_APPLIED, "last applied").map_err(read_error)?;
        self.set_last_applied(last_applied.flatten());
        self.membership =
            read(state, keys::MEMBERSHIP, "membership").map_err(read_error)?.unwrap_or_default();
        let num_sessions: u64 =
            read(state, keys::NUM_SESSIONS, "session count").map_err(read_error)?.unwrap_or(0);
        self.num_sessions.store(num_sessions, Ordering::Relaxed);
        Ok(())
    }

    fn read_current_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let bytes = self
            .snapshots
            .get(CURRENT_SNAPSHOT_KEY)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        bytes
            .map(|bytes| codec::decode(&bytes, "snapshot"))
            .transpose()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(())
    }

    /// Replaces the whole state with the snapshot's. Not atomic: the caller marks the
    /// install in progress so that a crash midway is finished at the next start.
    async fn restore(&mut self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let signature = Some(stored.meta.signature());
        let pairs: Vec<KeyValue> = codec::decode(&stored.data, "snapshot data")
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        let write_err =
            |e: shoal_storage::StorageError| StorageIOError::write_snapshot(signature.clone(), &e);
        let gate = self.gate.clone();
        let _replacing = gate.write().unwrap_or_else(PoisonError::into_inner);
        self.state.clear().map_err(write_err)?;
        let mut batch = WriteBatch::new();
        let mut num_sessions = 0_u64;
        for (key, value) in pairs {
            if key.starts_with(keys::SESSION_PREFIX) {
                num_sessions += 1;
            }
            batch.put(key, value);
        }
        batch.put(keys::LAST_APPLIED, codec::encode(&stored.meta.last_log_id));
        batch.put(keys::MEMBERSHIP, codec::encode(&stored.meta.last_membership));
        batch.put(keys::NUM_SESSIONS, codec::encode(&num_sessions));
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
        Ok(())
    }

    async fn apply_entry(&mut self, entry: Entry) -> Result<Response, StorageError> {
        let log_id = entry.log_id;
        let mut change = Change::default();
        let response = match entry.payload {
            EntryPayload::Blank => Response::Empty,
            EntryPayload::Normal(request) => self
                .apply_request(request, &mut change)
                .map_err(|e| StorageIOError::apply(log_id, &e))?,
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                change.batch.put(keys::MEMBERSHIP, codec::encode(&self.membership));
                Response::Empty
            }
        };
        change.batch.put(keys::LAST_APPLIED, codec::encode(&Some(log_id)));
        let num_sessions = if change.session_delta != 0 {
            let count = self.num_sessions.load(Ordering::Relaxed);
            let count = count.saturating_add_signed(change.session_delta);
            change.batch.put(keys::NUM_SESSIONS, codec::encode(&count));
            Some(count)
        } else {
            None
        };
        if self.durable_at.elapsed() >= DURABLE_INTERVAL {
            let state = self.state.clone();
            tokio::task::spawn_blocking(move || state.apply_durably(change.batch))
                .await
                .map_err(|e| StorageIOError::apply(log_id, &e))?
                .map_err(|e| StorageIOError::apply(log_id, &e))?;
            self.mark_durable(Some(log_id));
        } else {
            self.state.apply(change.batch).map_err(|e| StorageIOError::apply(log_id, &e))?;
        }
        self.set_last_applied(Some(log_id));
        if let Some(count) = num_sessions {
            self.num_sessions.store(count, Ordering::Relaxed);
        }
        Ok(response)
    }

    fn apply_request(
        &self,
        request: Request,
        change: &mut Change,
    ) -> shoal_storage::Result<Response> {
        let now_ms = request.now_ms;
        let state_tree = self.state.clone();
        let state = &*state_tree;
        Ok(match request.command {
            Command::CreateSession { id, data, ttl_ms } => {
                let existing = read_session(state, &id)?;
                let record = match rules::create_session(existing.as_ref(), now_ms, data, ttl_ms) {
                    Ok(record) => record,
                    Err(rejection) => return Ok(Response::Rejected(rejection)),
                };
                match &existing {
                    Some(existing) => change.batch.delete(keys::expiry(
                        existing.expires_at_ms,
                        keys::EXPIRY_KIND_SESSION,
                        &id,
                    )),
                    None => change.session_delta += 1,
                }
                change.put_session(&id, &record);
                Response::Session { id, record }
            }
            Command::UpdateSession { id, change: session_change, if_version, max_data_bytes } => {
                let existing = read_session(state, &id)?;
                let old_deadline = existing.as_ref().map(|record| record.expires_at_ms);
                let record = match rules::update_session(
                    existing,
                    now_ms,
                    session_change,
                    if_version,
                    max_data_bytes,
                ) {
                    Ok(record) => record,
                    Err(rejection) => return Ok(Response::Rejected(rejection)),
                };
                if let Some(old_deadline) = old_deadline {
                    change.batch.delete(keys::expiry(old_deadline, keys::EXPIRY_KIND_SESSION, &id));
                }
                change.put_session(&id, &record);
                Response::Session { id, record }
            }
            Command::DeleteSession { id, if_version } => {
                let existing = read_session(state, &id)?;
                let record = match rules::live_session(existing, now_ms, if_version) {
                    Ok(record) => record,
                    Err(rejection) => return Ok(Response::Rejected(rejection)),
                };
                change.delete_session(&id, &record);
                Response::Deleted
            }
            Command::Touch { ids } => {
                let mut touched = 0;
                for id in ids.into_iter().collect::<BTreeSet<_>>() {
                    let Some(mut record) = read_session(state, &id)? else {
                        continue;
                    };
                    let deadline = now_ms.saturating_add(record.ttl_ms);
                    if record.is_expired(now_ms) || deadline <= record.expires_at_ms {
                        continue;
                    }
                    change.batch.delete(keys::expiry(
                        record.expires_at_ms,
                        keys::EXPIRY_KIND_SESSION,
                        &id,
                    ));
                    record.expires_at_ms = deadline;
                    change.put_session(&id, &record);
                    touched += 1;
                }
                Response::Count(touched)
            }
            Command::Expire => {
                let mut expired = 0;
                let end = keys::expiry(now_ms, u8::MAX, "");
                let due = state.range(Bound::Included(keys::EXPIRY_PREFIX), Bound::Excluded(&end));
                for pair in due {
                    let (key, _) = pair?;
                    let Some((deadline_ms, kind, id)) = keys::parse_expiry(&key) else {
                        continue;
                    };
                    if deadline_ms > now_ms {
                        continue;
                    }
                    if kind == keys::EXPIRY_KIND_BLOB {
                        match blob::read_record(state, id)? {
                            Some(record) if record.expires_at_ms == deadline_ms => {
                                blob::delete(state, &mut change.batch, id, &record)?;
                                expired += 1;
                            }
                            _ => change.batch.delete(key.clone()),
                        }
                        continue;
                    }
                    if kind == keys::EXPIRY_KIND_PROGRESS {
                        match progress::read(state, id)? {
                            Some(record) if record.expires_at_ms == deadline_ms => {
                                progress::delete(&mut change.batch, id, &record);
                                expired += 1;
                            }
                            _ => change.batch.delete(key.clone()),
                        }
                        continue;
                    }
                    match read_session(state, id)? {
                        Some(record) if record.expires_at_ms == deadline_ms => {
                            change.delete_session(id, &record);
                            expired += 1;
                        }
                        // An index entry without its record: drop it.
                        _ => change.batch.delete(key.clone()),
                    }
                }
                expired += once::forget_expired(state, now_ms, &mut change.batch)?;
                Response::Count(expired)
            }
            Command::Once { key, deadline_ms, command } => {
                if let Some(refused) = once::expired(now_ms, deadline_ms) {
                    return Ok(refused);
                }
                let live = |id: &str| {
                    Ok(read_session(state, id)?.filter(|record| !record.is_expired(now_ms)))
                };
                if let Some(first) = once::answered(state, deadline_ms, key, live, &command)? {
                    return Ok(first);
                }
                let answer = self.apply_request(Request { now_ms, command: *command }, change)?;
                once::remember(&mut change.batch, deadline_ms, key, &answer);
                answer
            }
            Command::Progress(command) => {
                progress::apply(state, now_ms, command, &mut change.batch)?
            }
            Command::Blob(command) => blob::apply(state, now_ms, command, &mut change.batch)?,
            // The leader batches commands on distinct records only, so each may be applied
            // against the state before the batch, all into this entry's one write.
            Command::Batch(commands) => Response::Batch(
                commands
                    .into_iter()
                    .map(|command| self.apply_request(Request { now_ms, command }, change))
                    .collect::<shoal_storage::Result<_>>()?,
            ),
        })
    }
}

/// The writes of one applied entry.
#[derive(Default)]
struct Change {
    batch: WriteBatch,
    session_delta: i64,
}

impl Change {
    fn put_session(&mut self, id: &str, record: &SessionRecord) {
        self.batch.put(keys::session(id), codec::encode(record));
        self.batch
            .put(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_SESSION, id), Vec::new());
    }

    fn delete_session(&mut self, id: &str, record: &SessionRecord) {
        self.batch.delete(keys::session(id));
        self.batch.delete(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_SESSION, id));
        self.session_delta -= 1;
    }
}

/// Records a snapshot point: the applied state itself is the snapshot (its data is
/// encoded from the state when a follower needs it), so building one writes only its
/// metadata and makes the state durable before openraft purges the log behind it.
pub struct SnapshotBuilder {
    engine: Arc<dyn Engine>,
    durable: Arc<watch::Sender<u64>>,
    snapshots: Arc<dyn Tree>,
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
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
fn raise(durable: &watch::Sender<u64>, applied: Option<LogId<NodeId>>) {
    let index = applied.map_or(0, |log_id| log_id.index + 1);
    durable.send_if_modified(|durable| {
        let raised = index > *durable;
        *durable = (*durable).max(index);
        raised
    });
}

/// Returns the metadata of a snapshot of the state at `last_applied`, with a new id.
fn snapshot_meta(
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

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            responses.push(self.apply_entry(entry).await?);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            engine: self.engine.clone(),
            durable: self.durable.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        let signature = Some(meta.signature());
        // Keep the snapshot and mark the install first: if the node crashes while the
        // state is being replaced, the next start finishes the job from the stored copy.
        let mut begin = WriteBatch::new();
        begin.put(CURRENT_SNAPSHOT_KEY, codec::encode(&stored));
        begin.put(INSTALLING_KEY, Vec::new());
        let snapshot_lock = self.snapshot_lock.clone();
        let _writing = snapshot_lock.lock().await;
        self.snapshots
            .apply(begin)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        self.flush().await?;
        self.restore(&stored).await?;
        tracing::info!(snapshot = %meta, "installed raft snapshot");
        Ok(())
    }

    /// The last snapshot point's metadata, with the state encoded now: the state machine
    /// task calls this between applies, so the data is exactly the state at
    /// `last_applied`; when that moved past the recorded point, the snapshot is a newer
    /// one (new metadata), which a follower installs just as well.
    ///
    /// openraft's start-up calls this first and keeps only the metadata: that call gets
    /// no data, so a start does not encode the whole state for nothing.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let first_call = !std::mem::replace(&mut self.started, true);
        let Some(stored) = self.read_current_snapshot()? else { return Ok(None) };
        if first_call {
            return Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }));
        }
        let meta = if stored.meta.last_log_id == self.last_applied {
            stored.meta
        } else {
            snapshot_meta(self.last_applied, &self.membership)
        };
        let state = self.state.clone();
        let copy = tokio::task::spawn_blocking(move || {
            state
                .range(Bound::Unbounded, Bound::Unbounded)
                .filter(|pair| !matches!(pair, Ok((key, _)) if key.starts_with(keys::META_PREFIX)))
                .collect::<shoal_storage::Result<Vec<KeyValue>>>()
        })
        .await;
        let signature = Some(meta.signature());
        let pairs = copy
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        let data = codec::encode(&pairs);
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
