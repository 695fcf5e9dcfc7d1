//! The Raft log, the vote and the commit index in redb. Every append and vote is committed
//! with fsync (redb's `Durability::Immediate`) before openraft is told it is durable.

use super::{blocking, Entry, LogId, MemberId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Log entries by index, as JSON.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `vote`, `committed`, `last_purged`, as JSON.
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}
fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(LOG_META)?;
        txn.commit()?;
        Ok(LogStore { db })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        name: &str,
    ) -> Result<Option<T>, StorageError> {
        let txn = db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG_META).map_err(read_err)?;
        match table.get(name).map_err(read_err)? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(bytes.value()).map_err(read_err)?,
            )),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(
        db: &Database,
        name: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StorageError> {
        let mut txn = db.begin_write().map_err(write_err)?;
        if !durable {
            // Losing it only means re-applying a little more of the log after a crash.
            txn.set_durability(redb::Durability::None)
                .map_err(write_err)?;
        }
        {
            let mut table = txn.open_table(LOG_META).map_err(write_err)?;
            let bytes = serde_json::to_vec(value).map_err(write_err)?;
            table.insert(name, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        blocking(move || {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let mut entries = Vec::new();
            for item in table.range::<u64>((start, end)).map_err(read_err)? {
                let (_, value) = item.map_err(read_err)?;
                entries.push(serde_json::from_slice(value.value()).map_err(read_err)?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged_log_id: Option<LogId> = Self::read_meta(&db, "last_purged")?;
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, value)) => Some(
                    serde_json::from_slice::<Entry>(value.value())
                        .map_err(read_err)?
                        .log_id,
                ),
                None => None,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id: last.or(last_purged_log_id),
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        let (db, vote) = (self.db.clone(), *vote);
        blocking(move || {
            Self::write_meta(&db, "vote", &vote, true)
                .map_err(|e| StorageIOError::write_vote(&e).into())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::read_meta(&db, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || Self::write_meta(&db, "committed", &committed, false)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(Self::read_meta::<Option<LogId>>(&db, "committed")?.flatten())).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let db = self.db.clone();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = blocking(move || {
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(write_err)?;
                for entry in &entries {
                    let bytes = serde_json::to_vec(entry).map_err(write_err)?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(write_err)?;
                }
            }
            txn.commit().map_err(write_err)
        })
        .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(write_err)?;
            txn.open_table(LOG)
                .map_err(write_err)?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut meta = txn.open_table(LOG_META).map_err(write_err)?;
                let bytes = serde_json::to_vec(&log_id).map_err(write_err)?;
                meta.insert("last_purged", bytes.as_slice())
                    .map_err(write_err)?;
                txn.open_table(LOG)
                    .map_err(write_err)?
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
    }
}
