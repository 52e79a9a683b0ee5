//! The node's data directory: the storage engine, the Raft log and the identity kept
//! beside them.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{bail, Context};

use crate::config::StorageEngine;

const NODE_ID_FILE: &str = "node_id";
/// Where each engine keeps its files inside the data dir.
const ENGINE_DIRS: [(StorageEngine, &str); 2] =
    [(StorageEngine::Sled, "db"), (StorageEngine::Redb, "redb")];
const SIGNING_KEY_FILE: &str = "signing.key";
/// Where the Raft log's segment files are kept.
const RAFT_LOG_DIR: &str = "raft-log";
/// Present after `shoal reset-replica`: the id of the member this node rejoins in place of.
const REPLACES_FILE: &str = "replaces_node";

/// Returns the directory of the Raft log inside the data dir.
pub fn raft_log(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(RAFT_LOG_DIR)
}

/// Creates the data directory if needed and returns the path of `engine`'s files inside
/// it; refuses a data dir another engine wrote, whose state `engine` would not see.
pub fn prepare(data_dir: &Path, engine: StorageEngine) -> anyhow::Result<std::path::PathBuf> {
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let dir_of = |wanted| ENGINE_DIRS.iter().find(|(engine, _)| *engine == wanted).map(|e| e.1);
    let path = data_dir.join(dir_of(engine).expect("every engine has a dir"));
    if !path.exists() {
        if let Some((other, _)) =
            ENGINE_DIRS.iter().find(|(other, dir)| *other != engine && data_dir.join(dir).exists())
        {
            let name = |engine: StorageEngine| format!("{engine:?}").to_lowercase();
            bail!(
                "the data dir {} holds a {} database; start with --storage-engine {} \
                 (or use a new --data-dir for {})",
                data_dir.display(),
                name(*other),
                name(*other),
                name(engine)
            );
        }
    }
    Ok(path)
}

/// Returns this node's id: the one kept in the data dir, else `requested`, else a new
/// random one. The id is written once; a different `requested` id is an error.
pub fn node_id(data_dir: &Path, requested: Option<u64>) -> anyhow::Result<u64> {
    let path = data_dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u64 = text.trim().parse().with_context(|| {
                format!("{} is corrupt: expected a node id, found {text:?}", path.display())
            })?;
            if let Some(requested) = requested.filter(|requested| *requested != stored) {
                bail!(
                    "the data dir {} belongs to node {stored}, not --node-id {requested}; \
                     use another --data-dir or drop --node-id",
                    data_dir.display()
                );
            }
            Ok(stored)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            // Random ids keep nodes started without --node-id from colliding; the top bit
            // is cleared so that ids stay readable in JSON consumers that use doubles.
            let id = requested.unwrap_or_else(|| (rand::random::<u64>() >> 12).max(1));
            write_durably(&path, id.to_string().as_bytes())?;
            Ok(id)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What [`reset_replica`] did.
#[derive(Debug)]
pub struct Reset {
    /// The member the node was, which the cluster replaces by the node's new id.
    pub old_node_id: u64,
    /// Where the old replica's files went.
    pub moved_to: std::path::PathBuf,
    pub moved: Vec<String>,
}

/// Drops the local replica of a stopped node so that it rejoins its cluster as a new
/// member and catches up by snapshot: moves the Raft log, the database and the node id
/// into `damaged-<unix seconds>/` (nothing is deleted) and records the old id, which the
/// leader replaces by the new one once it has caught up (`gossip/membership.rs`).
///
/// A new id, not the old one: the old replica may have voted in terms it no longer
/// remembers, and a member that votes twice in a term can elect two leaders.
pub fn reset_replica(data_dir: &Path) -> anyhow::Result<Reset> {
    let id_path = data_dir.join(NODE_ID_FILE);
    let text = fs::read_to_string(&id_path).with_context(|| {
        format!("{} holds no node id: is this a shoal data dir?", data_dir.display())
    })?;
    let old_node_id: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{} is corrupt: expected a node id", id_path.display()))?;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let moved_to = data_dir.join(format!("damaged-{seconds}"));
    fs::create_dir(&moved_to).with_context(|| format!("cannot create {}", moved_to.display()))?;
    let mut moved = Vec::new();
    let names = [RAFT_LOG_DIR, "db", "redb", NODE_ID_FILE];
    for name in names.iter().filter(|name| data_dir.join(name).exists()) {
        fs::rename(data_dir.join(name), moved_to.join(name))
            .with_context(|| format!("cannot move {name} into {}", moved_to.display()))?;
        moved.push(name.to_string());
    }
    write_durably(&data_dir.join(REPLACES_FILE), old_node_id.to_string().as_bytes())?;
    Ok(Reset { old_node_id, moved_to, moved })
}

/// A slot of a shared data dir (`--shared-data-dir`), held by this process until it exits.
#[derive(Debug)]
pub struct Slot {
    pub path: std::path::PathBuf,
    /// The locked `lock` file: the slot stays this node's while the file is open.
    _lock: fs::File,
}

/// The prefix of the slots of a shared data dir: `node-0`, `node-1`, ...
const SLOT_PREFIX: &str = "node-";
const SLOT_LOCK_FILE: &str = "lock";

/// Takes a slot of the data dir `shared` that several nodes share (the replicas of a
/// compose service on one volume): the first free slot that holds a node's data, else
/// the first free empty one, else a new one. A slot is free when no process holds the
/// lock on its `lock` file; the kernel drops the lock when its holder exits, however it
/// exits.
///
/// Slots with data come first, so that after `docker compose down` and `up` the new
/// containers take the members' replicas back before any empty slot (that of a node
/// that left the cluster).
pub fn claim_slot(shared: &Path) -> anyhow::Result<Slot> {
    fs::create_dir_all(shared)
        .with_context(|| format!("cannot create the data dir {}", shared.display()))?;
    loop {
        let mut slots: Vec<(bool, u32, std::path::PathBuf)> = Vec::new();
        for entry in fs::read_dir(shared)
            .with_context(|| format!("cannot list the data dir {}", shared.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|name| name.strip_prefix(SLOT_PREFIX))
                .and_then(|number| number.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let empty = !path.join(NODE_ID_FILE).exists();
            slots.push((empty, number, path));
        }
        slots.sort();
        for (_, _, path) in &slots {
            if let Some(slot) = try_slot(path)? {
                return Ok(slot);
            }
        }
        let next = slots.iter().map(|(_, number, _)| number + 1).max().unwrap_or(0);
        let path = shared.join(format!("{SLOT_PREFIX}{next}"));
        match fs::create_dir(&path) {
            Ok(()) => {}
            // Another node made it just now: look again.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot create {}", path.display()))
            }
        }
        if let Some(slot) = try_slot(&path)? {
            return Ok(slot);
        }
    }
}

/// Locks the slot at `path`, or returns `None` when another process holds it.
fn try_slot(path: &Path) -> anyhow::Result<Option<Slot>> {
    let lock_path = path.join(SLOT_LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Slot { path: path.to_path_buf(), _lock: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}

/// Present once a node has left its cluster for good and until its replica is deleted:
/// a node killed in between deletes it when it starts again.
const LEFT_FILE: &str = "left_cluster";

/// Records that this node has left its cluster (see [`forget_replica`]).
pub fn mark_left(data_dir: &Path) -> anyhow::Result<()> {
    write_durably(&data_dir.join(LEFT_FILE), b"this node left its cluster; its replica goes\n")
}

/// Returns whether the node of `data_dir` left its cluster and its replica remains.
pub fn left(data_dir: &Path) -> bool {
    data_dir.join(LEFT_FILE).exists()
}

/// Deletes the replica of a node that left its cluster for good (`--leave-on-shutdown`):
/// its log, its database and its id, so that a node started on this data dir later joins
/// as a new member. The cluster holds every acknowledged write without it.
pub fn forget_replica(data_dir: &Path) -> anyhow::Result<()> {
    let engine_dirs = ENGINE_DIRS.iter().map(|(_, dir)| *dir);
    let names = [NODE_ID_FILE, REPLACES_FILE, RAFT_LOG_DIR].into_iter().chain(engine_dirs);
    // The mark goes last: a node killed half way deletes the rest at its next start.
    for name in names.chain([LEFT_FILE]) {
        let path = data_dir.join(name);
        let removed =
            if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match removed {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot delete {}", path.display()))
            }
            _ => {}
        }
    }
    if let Ok(dir) = fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Returns the member this node rejoins in place of, after `shoal reset-replica`.
pub fn replaces(data_dir: &Path) -> anyhow::Result<Option<u64>> {
    let path = data_dir.join(REPLACES_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} is corrupt: expected a node id", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Forgets the member this node replaced, once the cluster no longer has it.
pub fn replaced(data_dir: &Path) -> anyhow::Result<()> {
    match fs::remove_file(data_dir.join(REPLACES_FILE)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(error).context("cannot remove the replaces_node file")
        }
        _ => Ok(()),
    }
}

/// Returns the key that signs download links: generated once from the CSPRNG and kept
/// in the data dir (a cluster derives it from its shared secret instead).
pub fn signing_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => shoal_raft::auth::unhex(text.trim())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .with_context(|| format!("{} is corrupt: expected 64 hex digits", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            write_durably(&path, shoal_raft::auth::hex(&key).as_bytes())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            }
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename).
pub fn write_durably(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        io::Write::write_all(&mut file, contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        if let Some(parent) = path.parent() {
            fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sharing_a_data_dir_take_slots_with_data_first() {
        let shared = tempfile::tempdir().unwrap();
        let first = claim_slot(shared.path()).unwrap();
        let second = claim_slot(shared.path()).unwrap();
        assert_ne!(first.path, second.path, "a held slot is never given twice");
        // The second node had data; the first node's slot is empty again (it left).
        node_id(&second.path, None).unwrap();
        let (first_path, second_path) = (first.path.clone(), second.path.clone());
        drop((first, second));
        let again = claim_slot(shared.path()).unwrap();
        assert_eq!(again.path, second_path, "the slot holding a member's data comes first");
        let next = claim_slot(shared.path()).unwrap();
        assert_eq!(next.path, first_path);
    }

    #[test]
    fn a_forgotten_replica_starts_over_with_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = node_id(dir.path(), None).unwrap();
        fs::create_dir_all(raft_log(dir.path()).join("segments")).unwrap();
        fs::create_dir_all(dir.path().join("redb")).unwrap();
        mark_left(dir.path()).unwrap();
        assert!(left(dir.path()));
        forget_replica(dir.path()).unwrap();
        assert!(!left(dir.path()), "the mark goes last, with the replica");
        assert!(!raft_log(dir.path()).exists() && !dir.path().join("redb").exists());
        assert_ne!(node_id(dir.path(), None).unwrap(), id);
    }

    #[test]
    fn node_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = node_id(dir.path(), None).unwrap();
        assert!(id > 0 && id < (1 << 53));
        assert_eq!(node_id(dir.path(), None).unwrap(), id);
        assert_eq!(node_id(dir.path(), Some(id)).unwrap(), id);
        let error = node_id(dir.path(), Some(id + 1)).unwrap_err().to_string();
        assert!(error.contains("belongs to node"), "{error}");
    }

    #[test]
    fn signing_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing_key(dir.path()).unwrap();
        assert_eq!(signing_key(dir.path()).unwrap(), key);
        assert_ne!(key, [0; 32]);
    }

    #[test]
    fn a_data_dir_keeps_the_engine_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        let redb = prepare(dir.path(), StorageEngine::Redb).unwrap();
        assert!(redb.ends_with("redb"));
        fs::create_dir_all(&redb).unwrap();
        assert_eq!(prepare(dir.path(), StorageEngine::Redb).unwrap(), redb);
        let error = prepare(dir.path(), StorageEngine::Sled).unwrap_err().to_string();
        assert!(
            error.contains("holds a redb database; start with --storage-engine redb"),
            "{error}"
        );

        let old = tempfile::tempdir().unwrap();
        fs::create_dir_all(old.path().join("db")).unwrap();
        let error = prepare(old.path(), StorageEngine::Redb).unwrap_err().to_string();
        assert!(error.contains("--storage-engine sled"), "{error}");
        assert!(!old.path().join("redb").exists(), "nothing created on a refusal");
    }

    #[test]
    fn a_reset_moves_the_replica_aside_and_a_new_id_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let old = node_id(dir.path(), None).unwrap();
        fs::create_dir_all(raft_log(dir.path())).unwrap();
        fs::write(raft_log(dir.path()).join("00000000000000000001.seg"), b"x").unwrap();
        fs::write(dir.path().join("redb"), b"db").unwrap();
        let reset = reset_replica(dir.path()).unwrap();
        assert_eq!(reset.old_node_id, old);
        assert_eq!(reset.moved, ["raft-log", "redb", "node_id"]);
        assert!(reset.moved_to.join("raft-log/00000000000000000001.seg").exists());
        assert!(!raft_log(dir.path()).exists() && !dir.path().join("redb").exists());
        assert_eq!(replaces(dir.path()).unwrap(), Some(old));
        assert_ne!(node_id(dir.path(), None).unwrap(), old);
        replaced(dir.path()).unwrap();
        assert_eq!(replaces(dir.path()).unwrap(), None);
        assert!(reset_replica(&dir.path().join("nothing")).is_err());
    }

    #[test]
    fn requested_id_is_used_for_a_new_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(node_id(dir.path(), Some(7)).unwrap(), 7);
        assert_eq!(node_id(dir.path(), None).unwrap(), 7);
    }
}
