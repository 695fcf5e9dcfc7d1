//! openraft's storage conformance suite against berth's log (write-ahead log) and state
//! machine (redb).

use berth_control_plane::raft::log_store::LogStore;
use berth_control_plane::raft::state_machine::StateMachine;
use berth_control_plane::raft::{StorageError, TypeConfig};
use berth_control_plane::store::{ObjectStore, WatchHub};
use openraft::testing::{StoreBuilder, Suite};
use std::sync::Arc;
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db =
            Arc::new(redb::Database::create(dir.path().join("berth.redb")).expect("create redb"));
        let store = ObjectStore::new(db.clone(), 1000).expect("object store");
        let log = LogStore::open(&dir.path().join("raft-log"), 1, &db).expect("log store");
        let sm = StateMachine::new(db, store, WatchHub::new(16)).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn redb_store_passes_openraft_suite() {
    if let Err(error) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}
