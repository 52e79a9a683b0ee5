//! The replicated state machine on an [`Engine`] tree: this file applies entries and
//! answers openraft; each record kind is applied by its own module (`sessions.rs`,
//! `crate::progress`, `crate::blob`, `crate::once`), expiry by `expiry.rs`, snapshots by
//! `snapshot.rs`, and reads go through `reader.rs`.
//!
//! Contract: applying the same entries in the same order gives the same state on every
//! replica. Each entry is applied as one atomic batch together with `last_applied`, so
//! after a crash the tree is at some entry boundary and openraft re-applies the rest
//! from the log.
//!
//! Durability: applies are written without fsync; every 200 ms ([`DURABLE_INTERVAL`]) a
//! flush on a blocking thread makes what was applied durable while applies go on, and
//! every snapshot point is made durable before openraft purges the log behind it.
//! The durable applied index ([`StateMachineStore::durable_index`]) tells the log store
//! how far it may purge.

mod expiry;
mod reader;
mod sessions;
mod snapshot;

use std::io::Cursor;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, LogId, OptionalSend, StorageIOError, StoredMembership};
use serde::de::DeserializeOwned;
use shoal_storage::{codec, Engine, KeyValue, Tree, WriteBatch};
use tokio::sync::watch;

use crate::blob;
use crate::progress;
use crate::types::{Command, Entry, Node, NodeId, Request, Response, SessionRecord, TypeConfig};
use crate::{keys, kv, once};

pub use reader::{Namespace, ScanPage, StateReader, POSITION_BYTES};
pub use snapshot::SnapshotBuilder;
pub(crate) use snapshot::StoredSnapshot;
use snapshot::{raise, snapshot_meta};

const STATE_TREE: &str = "state";
const SNAPSHOT_TREE: &str = "snapshot";
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";
/// Present while a received snapshot is being installed; found at start, the install is redone.
const INSTALLING_KEY: &[u8] = b"installing";
/// How often an apply is committed durably (with everything applied before it).
pub const DURABLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

type StorageError = openraft::StorageError<NodeId>;
type Membership = StoredMembership<NodeId, Node>;

/// openraft's [`RaftStateMachine`] for shoal.
#[derive(Debug)]
pub struct StateMachineStore {
    engine: Arc<dyn Engine>,
    state: Arc<dyn Tree>,
    snapshots: Arc<dyn Tree>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    num_sessions: Arc<AtomicU64>,
    /// The number of plain keys and the state's clock (see [`keys::CLOCK`]).
    kv: Arc<KvCounters>,
    gate: Arc<RwLock<()>>,
    /// The applied index plus one (0: nothing applied).
    applied: watch::Sender<u64>,
    /// The applied index plus one that is durable, for the log store's purge guard.
    durable: Arc<watch::Sender<u64>>,
    /// When the last durable flush began.
    durable_at: std::time::Instant,
    /// True while a flush of [`Self::flush_in_background`] runs.
    flushing: Arc<AtomicBool>,
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
            kv: Arc::default(),
            gate: Arc::default(),
            applied: watch::Sender::new(0),
            durable: Arc::new(watch::Sender::new(0)),
            durable_at: std::time::Instant::now(),
            flushing: Arc::default(),
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
            kv: self.kv.clone(),
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

    /// Every [`DURABLE_INTERVAL`], makes the state durable up to `applied` (and what
    /// applies meanwhile) on a blocking thread while applies go on, then raises the
    /// durable index to it. One flush at a time; a failed one leaves the index where it
    /// was (the log is not purged past it) and the next interval tries again.
    fn flush_in_background(&mut self, applied: LogId<NodeId>) {
        if self.durable_at.elapsed() < DURABLE_INTERVAL
            || self.flushing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.durable_at = std::time::Instant::now();
        let (engine, durable, flushing) =
            (self.engine.clone(), self.durable.clone(), self.flushing.clone());
        tokio::task::spawn_blocking(move || {
            match engine.flush() {
                Ok(()) => raise(&durable, Some(applied)),
                Err(error) => tracing::error!(%error, "cannot make the applied state durable"),
            }
            flushing.store(false, Ordering::Release);
        });
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
        let num_kv: u64 = read(state, keys::NUM_KV, "kv count").map_err(read_error)?.unwrap_or(0);
        self.kv.keys.store(num_kv, Ordering::Relaxed);
        let clock_ms: u64 = read(state, keys::CLOCK, "clock").map_err(read_error)?.unwrap_or(0);
        self.kv.clock_ms.store(clock_ms, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(())
    }

    async fn apply_entry(&mut self, entry: Entry) -> Result<Response, StorageError> {
        let log_id = entry.log_id;
        let mut change = Change::default();
        let mut clock_ms = None;
        let response = match entry.payload {
            EntryPayload::Blank => Response::Empty,
            EntryPayload::Normal(request) => {
                let now_ms = request.now_ms;
                if now_ms > self.kv.clock_ms.load(Ordering::Relaxed) {
                    change.batch.put(keys::CLOCK, codec::encode(&now_ms));
                    clock_ms = Some(now_ms);
                }
                self.apply_request(request, &mut change)
                    .map_err(|e| StorageIOError::apply(log_id, &e))?
            }
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
        let num_kv = (change.kv_delta != 0).then(|| {
            let count = self.kv.keys.load(Ordering::Relaxed).saturating_add_signed(change.kv_delta);
            change.batch.put(keys::NUM_KV, codec::encode(&count));
            count
        });
        self.state.apply(change.batch).map_err(|e| StorageIOError::apply(log_id, &e))?;
        self.set_last_applied(Some(log_id));
        self.flush_in_background(log_id);
        if let Some(count) = num_sessions {
            self.num_sessions.store(count, Ordering::Relaxed);
        }
        if let Some(count) = num_kv {
            self.kv.keys.store(count, Ordering::Relaxed);
        }
        if let Some(clock_ms) = clock_ms {
            self.kv.clock_ms.store(clock_ms, Ordering::Relaxed);
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
                sessions::create(state, change, now_ms, id, data, ttl_ms)?
            }
            Command::UpdateSession { id, change: session_change, if_version, max_data_bytes } => {
                let update = (session_change, if_version, max_data_bytes);
                sessions::update(state, change, now_ms, id, update)?
            }
            Command::DeleteSession { id, if_version } => {
                sessions::delete(state, change, now_ms, id, if_version)?
            }
            Command::Touch { ids } => sessions::touch(state, change, now_ms, ids)?,
            Command::Expire => expiry::expire(state, change, now_ms)?,
            Command::Once { key, deadline_ms, command } => {
                if let Some(refused) = once::expired(now_ms, deadline_ms) {
                    return Ok(refused);
                }
                let live = |id: &str| {
                    Ok(reader::read_session(state, id)?.filter(|record| !record.is_expired(now_ms)))
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
            Command::Kv(command) => {
                kv::apply(state, now_ms, command, &mut change.batch, &mut change.kv_delta)?
            }
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

/// What reads of plain keys need besides the tree, kept as each entry applies.
#[derive(Debug, Default)]
pub(crate) struct KvCounters {
    /// How many plain keys are stored (expired ones count until the next expiry).
    pub keys: AtomicU64,
    /// The largest leader clock of an applied command (see [`keys::CLOCK`]).
    pub clock_ms: AtomicU64,
}

/// The writes of one applied entry.
#[derive(Default)]
struct Change {
    batch: WriteBatch,
    session_delta: i64,
    kv_delta: i64,
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
