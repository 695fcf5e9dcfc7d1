//! The Raft state machine: applies committed [`Command`]s to the object store, builds and
//! installs snapshots.
//!
//! Commands arrive as the bytes they were proposed as (see codec.rs) and are parsed here, the
//! one place that needs them parsed.
//!
//! Applies commit without fsync: they are re-derivable from the log (a file of its own, whose
//! appends do fsync). The state machine's file is made durable by building or installing a
//! snapshot, which comes before the log is purged up to it, and by one apply every
//! [`DURABLE_EVERY`] (redb persists every earlier commit with the next durable one, and only
//! then reuses the pages they freed). After a crash the state machine is at some earlier
//! applied index, consistent with itself, and openraft re-applies the rest of the log.

use super::log_store::Durable;
use super::{blocking, Entry, LogId, MemberId, StorageError, TypeConfig};
use crate::store::{CommandResult, ObjectStore, StoreError, StoreSnapshot, StoredEvent, WatchHub};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `last_applied` and `membership`, as JSON.
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine_meta");
/// The current snapshot: `meta` and `data`.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

type Membership = StoredMembership<MemberId, BasicNode>;

/// How often an apply commits durably; bounds the log replayed after a crash and the file's
/// growth between snapshots.
const DURABLE_EVERY: Duration = Duration::from_secs(10);

/// Applies of at most this many command bytes run on the runtime's thread (see `apply`).
const INLINE_APPLY_BYTES: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId>,
    membership: Membership,
    store: StoreSnapshot,
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    store: ObjectStore,
    hub: WatchHub,
    durable: Option<Durable>,
    /// When an apply last committed durably.
    last_durable: Arc<Mutex<Instant>>,
    /// Held by the snapshot builder while it writes (a durable commit, concurrent with
    /// applies): an apply that finds it taken goes to the blocking pool rather than wait for
    /// redb's write lock on a runtime thread.
    snapshot_writing: Arc<Mutex<()>>,
}

fn sm_read(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(openraft::AnyError::error(e)).into()
}
fn sm_write(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(openraft::AnyError::error(e)).into()
}
fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, openraft::AnyError::error(e)).into()
}

impl StateMachine {
    pub fn new(db: Arc<Database>, store: ObjectStore, hub: WatchHub) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(SM_META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(StateMachine {
            db,
            store,
            hub,
            durable: None,
            last_durable: Arc::new(Mutex::new(Instant::now())),
            snapshot_writing: Arc::default(),
        })
    }

    /// Applies an entry only once this member's log holds it durably: the leader's own
    /// entries may be committed before that (see log_store.rs).
    pub fn applying_only_durable(mut self, durable: Durable) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Durable every [`DURABLE_EVERY`], else not: see the module's docs.
    fn durability(&self) -> redb::Durability {
        let mut last = self.last_durable.lock().expect("durable lock");
        if last.elapsed() >= DURABLE_EVERY {
            *last = Instant::now();
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        }
    }

    /// Applies `entries` in one transaction: each entry's result, and the changes watches see.
    fn apply_in_txn(
        &self,
        entries: &[Entry],
        durability: redb::Durability,
    ) -> Result<(Vec<CommandResult>, Vec<StoredEvent>), StorageError> {
        let last_index = entries.last().map(|e| e.log_id.index).unwrap_or(0);
        super::stamp("sm.apply.txn", last_index);
        let mut txn = self.db.begin_write().map_err(sm_write)?;
        super::stamp("sm.apply.locked", last_index);
        txn.set_durability(durability).map_err(sm_write)?;
        let mut results = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        {
            let mut meta = txn.open_table(SM_META).map_err(sm_write)?;
            for entry in entries {
                put_json(&mut meta, "last_applied", &Some(entry.log_id))?;
                match &entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::None),
                    EntryPayload::Normal(encoded) => match encoded.decode() {
                        Ok(command) => {
                            let (result, changes) =
                                self.store.apply(&txn, command).map_err(sm_write)?;
                            results.push(result);
                            events.extend(changes);
                        }
                        // The same bytes fail alike on every member: the entry is a no-op,
                        // not a reason to stop applying.
                        Err(error) => results.push(CommandResult::Failed(StoreError::Invalid(
                            format!("undecodable command: {error}"),
                        ))),
                    },
                    EntryPayload::Membership(membership) => {
                        put_json(
                            &mut meta,
                            "membership",
                            &Membership::new(Some(entry.log_id), membership.clone()),
                        )?;
                        results.push(CommandResult::None);
                    }
                }
            }
        }
        super::stamp("sm.apply.commit", last_index);
        txn.commit().map_err(sm_write)?;
        super::stamp("sm.apply.committed", last_index);
        Ok((results, events))
    }

    fn read_applied(
        txn: &redb::ReadTransaction,
    ) -> Result<(Option<LogId>, Membership), StorageError> {
        let table = txn.open_table(SM_META).map_err(sm_read)?;
        let last_applied = match table.get("last_applied").map_err(sm_read)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(sm_read)?,
            None => None,
        };
        let membership = match table.get("membership").map_err(sm_read)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(sm_read)?,
            None => Membership::default(),
        };
        Ok((last_applied, membership))
    }
}

fn put_json<T: Serialize>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(sm_write)?;
    table.insert(key, bytes.as_slice()).map_err(sm_write)?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        blocking(move || {
            // One read transaction, so objects and applied index agree even while applies go on.
            let txn = this.db.begin_read().map_err(sm_read)?;
            let (last_applied, membership) = Self::read_applied(&txn)?;
            let store = this.store.export(&txn).map_err(sm_read)?;
            drop(txn);
            let data = serde_json::to_vec(&SnapshotData {
                last_applied,
                membership: membership.clone(),
                store,
            })
            .map_err(snap_err)?;
            let snapshot_id = match last_applied {
                Some(id) => format!(
                    "{}-{}-{}",
                    id.leader_id.term,
                    id.index,
                    jiff::Timestamp::now().as_millisecond()
                ),
                None => format!("empty-{}", jiff::Timestamp::now().as_millisecond()),
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            };
            let writing = this.snapshot_writing.lock().expect("snapshot lock");
            let txn = this.db.begin_write().map_err(snap_err)?;
            {
                let mut table = txn.open_table(SNAPSHOT).map_err(snap_err)?;
                put_json(&mut table, "meta", &meta)?;
                table.insert("data", data.as_slice()).map_err(snap_err)?;
            }
            txn.commit().map_err(snap_err)?;
            drop(writing);
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let db = self.db.clone();
        blocking(move || Self::read_applied(&db.begin_read().map_err(sm_read)?)).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        tracing::trace!(entries = entries.len(), "apply");
        let last_index = entries.last().map(|e| e.log_id.index).unwrap_or(0);
        super::stamp("sm.apply.start", last_index);
        if let (Some(durable), Some(last)) = (&self.durable, entries.last()) {
            durable.reached(last.log_id.index).await;
        }
        super::stamp("sm.apply.durable", last_index);
        // Small applies that need no fsync run right here: a hop to the blocking pool costs
        // more than the transaction (tens of µs, and a thread wake-up). Large batches, the
        // periodic durable commit, and applies during a snapshot's write (redb's write lock
        // is taken) go to the blocking pool, off the runtime's threads.
        let bytes: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(encoded) => encoded.as_bytes().len(),
                _ => 0,
            })
            .sum();
        let durability = self.durability();
        let small = bytes <= INLINE_APPLY_BYTES && matches!(durability, redb::Durability::None);
        let inline = match small
            .then(|| self.snapshot_writing.try_lock().ok())
            .flatten()
        {
            Some(_no_snapshot_writing) => Some(self.apply_in_txn(&entries, durability)?),
            None => None,
        };
        let (results, events) = match inline {
            Some(applied) => applied,
            None => {
                let this = self.clone();
                blocking(move || this.apply_in_txn(&entries, durability)).await?
            }
        };
        self.hub.publish(events);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        blocking(move || {
            let data = snapshot.into_inner();
            let content: SnapshotData = serde_json::from_slice(&data).map_err(snap_err)?;
            let txn = this.db.begin_write().map_err(snap_err)?;
            this.store.import(&txn, &content.store).map_err(snap_err)?;
            {
                let mut sm = txn.open_table(SM_META).map_err(snap_err)?;
                put_json(&mut sm, "last_applied", &meta.last_log_id)?;
                put_json(&mut sm, "membership", &meta.last_membership)?;
                let mut table = txn.open_table(SNAPSHOT).map_err(snap_err)?;
                put_json(&mut table, "meta", &meta)?;
                table.insert("data", data.as_slice()).map_err(snap_err)?;
            }
            txn.commit().map_err(snap_err)
        })
        .await?;
        self.hub.reset();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read().map_err(sm_read)?;
            let table = txn.open_table(SNAPSHOT).map_err(sm_read)?;
            let (Some(meta), Some(data)) = (
                table.get("meta").map_err(sm_read)?,
                table.get("data").map_err(sm_read)?,
            ) else {
                return Ok(None);
            };
            let meta: SnapshotMeta<MemberId, BasicNode> =
                serde_json::from_slice(meta.value()).map_err(sm_read)?;
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data.value().to_vec())),
            }))
        })
        .await
    }
}
