//! openraft's storage conformance suite on the log store and shoal's state machine, on
//! each storage engine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use shoal_raft::{NodeId, StateMachineStore, TypeConfig};
use shoal_storage::{Engine, LogStore, RedbEngine, SledEngine};
use tempfile::TempDir;

/// Builds the stores on a fresh engine in a temporary directory, kept while they live.
struct Stores(fn(&TempDir) -> Arc<dyn Engine>);

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachineStore, TempDir> for Stores {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let engine = (self.0)(&dir);
        let log_store =
            LogStore::open(&dir.path().join("raft-log"), Some(&*engine)).expect("log store opens");
        let state_machine = StateMachineStore::open(engine).await?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sled() {
    let sled = |dir: &TempDir| -> Arc<dyn Engine> {
        Arc::new(SledEngine::open_with_cache(dir.path(), 1 << 24).expect("sled opens"))
    };
    Suite::test_all(Stores(sled)).expect("storage suite");
}

#[test]
fn openraft_storage_suite_passes_on_redb() {
    let redb = |dir: &TempDir| -> Arc<dyn Engine> {
        Arc::new(RedbEngine::open_with_cache(dir.path(), 1 << 24).expect("redb opens"))
    };
    Suite::test_all(Stores(redb)).expect("storage suite");
}
