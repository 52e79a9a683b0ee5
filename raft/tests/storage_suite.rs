//! openraft's storage conformance suite on the sled log store and shoal's state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use shoal_raft::{NodeId, StateMachineStore, TypeConfig};
use shoal_storage::{LogStore, SledEngine};

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachineStore, ()> for SledStoreBuilder {
    async fn build(
        &self,
    ) -> Result<((), LogStore<TypeConfig>, StateMachineStore), StorageError<NodeId>> {
        let engine = Arc::new(SledEngine::temporary().expect("temporary sled database"));
        let log_store = LogStore::open(engine.clone()).expect("log store opens");
        let state_machine = StateMachineStore::open(engine).await?;
        Ok(((), log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sled() {
    Suite::test_all(SledStoreBuilder).expect("storage suite");
}
