//! The Raft log and the vote: held in memory from the last purge on, written to the
//! write-ahead log (`wal`) by one writer thread that syncs in groups.
//!
//! ```text
//!  openraft ── append / truncate / purge / save_vote ──▶ writer thread ──▶ wal (fdatasync)
//!      ▲                     │ in memory at once                              │
//!      └── log readers ◀── Log (entries, vote, commit index) ◀── callbacks ───┘
//! ```
//!
//! openraft 0.9 appends one entry per client write; a sync per entry would cap the store at
//! one write per sync. The writer thread instead drains every operation queued while the
//! previous sync ran and makes them durable with one `fdatasync`, then tells openraft (the
//! `LogFlushed` callbacks). Entries are readable from memory from the moment `append` returns,
//! as openraft requires, with no disk read on the replication path. Memory holds the entries
//! since the last purge: at most the snapshot threshold plus the entries kept after a
//! snapshot (as etcd's in-memory raft log does).
//!
//! **The leader's own entries** are reported flushed at once, before their sync. openraft
//! 0.9 waits for the flush inside its core before replicating, so otherwise every write
//! would pay the leader's sync and then the followers' one after the other. Raft allows the
//! leader to write its log in parallel with replicating (Ongaro's thesis §10.2.1, as etcd
//! does) provided a commit decided before the leader's copy is durable is revealed to no one
//! until it is: [`Durable`] gates the two places it could leave this member, the commit index
//! sent to followers (`network.rs`) and the state machine (`state_machine.rs`). A follower's
//! append is only ever reported once durable, since its answer counts toward the quorum.
//!
//! A failed write or sync stops the process (as etcd does): the file's state after it is
//! unknown, and carrying on could acknowledge what is not durable.

use super::wal::{Log, Record, Wal};
use super::{Entry, LogId, MemberId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// Where versions before the write-ahead log kept the log: tables of the store file.
const LEGACY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LEGACY_LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

/// The most operations one sync takes; bounds the latency of the first of them.
const MAX_GROUP: usize = 1024;

#[derive(Clone)]
pub struct LogStore {
    /// The log as openraft sees it: every write is here before it is durable.
    log: Arc<Mutex<Log>>,
    writer: mpsc::Sender<Op>,
    me: MemberId,
    durable: Durable,
}

/// How far this member's log is durable: the last index of the log as of its newest sync.
#[derive(Clone)]
pub struct Durable(tokio::sync::watch::Receiver<u64>);

impl Durable {
    /// Waits until the log is durable up to `index`.
    pub async fn reached(&self, index: u64) {
        let mut durable = self.0.clone();
        // The writer thread only stops with the process (or on a failed write, which aborts).
        let _ = durable.wait_for(|d| *d >= index).await;
    }
}

type Done = oneshot::Sender<()>;

/// A write, in the order openraft asked for it.
enum Op {
    /// Entries, and openraft's callback unless it was already told (the leader's own).
    Append(Vec<Entry>, Option<LogFlushed<TypeConfig>>),
    Truncate(u64, Done),
    Purge(LogId, Done),
    SaveVote(Vote<MemberId>, Done),
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(openraft::AnyError::error(e)).into()
}

impl LogStore {
    /// The log of member `me`, in directory `dir`. A log that `store` holds (versions before
    /// the write-ahead log kept it there) is moved into `dir` first.
    pub fn open(dir: &Path, me: MemberId, store: &Database) -> std::io::Result<Self> {
        let (mut wal, mut log) = Wal::open(dir)?;
        move_from_store(store, &mut wal, &mut log)?;
        let last = log.entries.keys().next_back().copied().unwrap_or(0);
        let (durable_tx, durable) = tokio::sync::watch::channel(last);
        let (writer, ops) = mpsc::channel();
        let log = Arc::new(Mutex::new(log));
        let shared = log.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(wal, &shared, &durable_tx, ops))?;
        Ok(LogStore {
            log,
            writer,
            me,
            durable: Durable(durable),
        })
    }

    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("raft log lock")
    }

    /// Entries this member made as leader in its current term: only a leader appends those.
    fn are_own_as_leader(&self, entries: &[Entry]) -> bool {
        let vote = self.log().vote;
        let Some(vote) =
            vote.filter(|v| v.is_committed() && v.leader_id().voted_for() == Some(self.me))
        else {
            return false;
        };
        !entries.is_empty()
            && entries
                .iter()
                .all(|e| e.log_id.leader_id == *vote.leader_id())
    }

    /// Hands an operation to the writer and waits until it is durable.
    async fn write(&self, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.writer
            .send(op(done))
            .map_err(|_| write_err("the log writer has stopped"))?;
        result
            .await
            .map_err(|_| write_err("the log writer has stopped"))
    }
}

/// Copies a log kept in the store file into the write-ahead log (one sync), then drops it
/// from the store. A crash in between leaves both; the next open finds the write-ahead log
/// holding the vote and only drops the old tables.
fn move_from_store(store: &Database, wal: &mut Wal, log: &mut Log) -> std::io::Result<()> {
    let read = store.begin_read().map_err(moving)?;
    let old_log = match read.open_table(LEGACY_LOG) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(moving(e)),
    };
    if log.vote.is_none() {
        let old_meta = match read.open_table(LEGACY_LOG_META) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(moving(e)),
        };
        let meta = |name: &str| -> std::io::Result<Option<Vec<u8>>> {
            match &old_meta {
                Some(table) => Ok(table.get(name).map_err(moving)?.map(|v| v.value().to_vec())),
                None => Ok(None),
            }
        };
        let purged: Option<LogId> = meta("last_purged")?.map(|b| parse_json(&b)).transpose()?;
        if let Some(purged) = purged {
            wal.push(Record::Purge(purged))?;
            log.purge(purged);
        }
        for row in old_log.iter().map_err(moving)? {
            let (_, record) = row.map_err(moving)?;
            let entry = super::codec::decode_stored_entry(record.value()).map_err(moving)?;
            wal.push(Record::Entry(&entry))?;
            log.entries.insert(entry.log_id.index, entry);
        }
        let committed: Option<Option<LogId>> =
            meta("committed")?.map(|b| parse_json(&b)).transpose()?;
        if let Some(committed) = committed {
            wal.push(Record::Committed(committed))?;
            log.committed = committed;
        }
        // Last: its presence tells a finished move.
        let vote: Option<Vote<MemberId>> = meta("vote")?.map(|b| parse_json(&b)).transpose()?;
        if let Some(vote) = vote {
            wal.push(Record::Vote(vote))?;
            log.vote = Some(vote);
        }
        wal.sync()?;
        tracing::info!(
            entries = log.entries.len(),
            "moved the Raft log out of the store file"
        );
    }
    drop(old_log);
    drop(read);
    let txn = store.begin_write().map_err(moving)?;
    txn.delete_table(LEGACY_LOG).map_err(moving)?;
    txn.delete_table(LEGACY_LOG_META).map_err(moving)?;
    txn.commit().map_err(moving)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(bytes).map_err(moving)
}

fn moving(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("moving the Raft log: {e}"))
}

/// The writer thread: one sync per group of queued operations. The commit index rides
/// along with each sync when it moved (read from `log`), rather than costing one of its own.
fn write_loop(
    mut wal: Wal,
    log: &Mutex<Log>,
    durable: &tokio::sync::watch::Sender<u64>,
    ops: mpsc::Receiver<Op>,
) {
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let committed = log.lock().expect("raft log lock").committed;
        let committed = (committed != wal.committed()).then_some(committed);
        let end_index = group.iter().fold(0, |end, op| match op {
            Op::Append(entries, _) => entries.last().map(|e| e.log_id.index).unwrap_or(end),
            _ => end,
        });
        super::stamp("log.commit.start", 0);
        let result = write_group(&mut wal, &group, committed);
        super::stamp("log.commit.end", end_index);
        if let Err(error) = result {
            tracing::error!("raft log write failed: {error}; stopping");
            std::process::abort();
        }
        // Where the log ends now; before any callback, so that what they release finds the
        // entries durable.
        let end = group.iter().fold(None, |end, op| match op {
            Op::Append(entries, _) => entries.last().map(|e| e.log_id.index).or(end),
            Op::Truncate(index, _) => Some(index.saturating_sub(1)),
            _ => end,
        });
        if let Some(end) = end {
            durable.send_replace(end);
        }
        for op in group {
            match op {
                Op::Append(_, Some(callback)) => callback.log_io_completed(Ok(())),
                Op::Append(_, None) => {}
                Op::Truncate(_, done) | Op::Purge(_, done) | Op::SaveVote(_, done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

fn write_group(
    wal: &mut Wal,
    group: &[Op],
    committed: Option<Option<LogId>>,
) -> std::io::Result<()> {
    for op in group {
        match op {
            Op::Append(entries, _) => {
                for entry in entries {
                    wal.push(Record::Entry(entry))?;
                }
            }
            Op::Truncate(index, _) => wal.push(Record::Truncate(*index))?,
            Op::Purge(log_id, _) => wal.push(Record::Purge(*log_id))?,
            Op::SaveVote(vote, _) => wal.push(Record::Vote(*vote))?,
        }
    }
    if let Some(committed) = committed {
        wal.push(Record::Committed(committed))?;
    }
    wal.sync()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .log()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.log();
        let last_purged_log_id = log.purged;
        let last_log_id = log
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.write(|done| Op::SaveVote(vote, done)).await?;
        self.log().vote = Some(vote);
        Ok(())
    }

    /// The commit index, so that a restarted member applies what it knew committed without
    /// waiting for a leader. Not waited for, nor worth waking the writer for: the writer
    /// takes it along with its next sync, and losing it costs only that wait (linearizable
    /// reads do not depend on it: see `leader::ReadBarrier`).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.log().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log().committed)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        Ok(self.log().vote)
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        super::stamp(
            "log.append",
            entries.last().map(|e| e.log_id.index).unwrap_or(0),
        );
        {
            let mut log = self.log();
            for entry in &entries {
                log.entries.insert(entry.log_id.index, entry.clone());
            }
        }
        let callback = if self.are_own_as_leader(&entries) {
            callback.log_io_completed(Ok(()));
            None
        } else {
            Some(callback)
        };
        self.writer
            .send(Op::Append(entries, callback))
            .map_err(|_| write_err("the log writer has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log().truncate(log_id.index);
        self.write(|done| Op::Truncate(log_id.index, done)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(|done| Op::Purge(log_id, done)).await?;
        self.log().purge(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EncodedCommand;
    use crate::store::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn command(name: &str) -> Command {
        Command::Apply {
            object: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
            uid: format!("uid-{name}"),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    /// A log that an earlier version kept in the store file, its entries as JSON, moves to
    /// the write-ahead log, reads, and takes new (binary) entries after them.
    #[tokio::test]
    async fn a_log_kept_in_the_store_file_moves_to_the_wal() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = Arc::new(Database::create(dir.path().join("berth.redb")).expect("redb"));
        let vote = Vote::new_committed(1, 1);
        {
            let txn = db.begin_write().expect("write");
            {
                let mut meta = txn.open_table(LEGACY_LOG_META).expect("meta table");
                let vote = serde_json::to_vec(&vote).expect("json");
                meta.insert("vote", vote.as_slice()).expect("insert");
                let mut log = txn.open_table(LEGACY_LOG).expect("log table");
                let blank = serde_json::json!({"log_id": log_id(1), "payload": "Blank"});
                let normal =
                    serde_json::json!({"log_id": log_id(2), "payload": {"Normal": command("old")}});
                for (index, record) in [(1, blank), (2, normal)] {
                    let record = serde_json::to_vec(&record).expect("json");
                    log.insert(index, record.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let wal = dir.path().join("raft-log");
        let mut store = LogStore::open(&wal, 1, &db).expect("log store opens");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(2)));
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        let txn = db.begin_read().expect("read");
        assert!(txn.open_table(LEGACY_LOG).is_err(), "the old table is gone");
        drop(txn);

        // As the leader appends its own entries (openraft's callback is not public).
        let new = Entry {
            log_id: log_id(3),
            payload: EntryPayload::Normal(EncodedCommand::new(&command("new"))),
        };
        store.log().entries.insert(3, new.clone());
        store
            .writer
            .send(Op::Append(vec![new], None))
            .expect("writer runs");
        store.durable().reached(3).await;

        let entries = store.try_get_log_entries(1..=3).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [1, 2, 3]);
        assert!(matches!(entries[0].payload, EntryPayload::Blank));
        let commands: Vec<Command> = entries[1..]
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(encoded) => encoded.decode().expect("command"),
                other => panic!("not a command: {other:?}"),
            })
            .collect();
        assert_eq!(commands, [command("old"), command("new")]);
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(3)));

        // The writer lets go of the files once the store is dropped; a reopen finds it all.
        drop(entries);
        drop(store);
        let mut store = tokio::task::spawn_blocking(move || LogStore::open(&wal, 1, &db))
            .await
            .expect("join")
            .expect("reopens");
        let entries = store.try_get_log_entries(1..=3).await.expect("entries");
        assert_eq!(entries.len(), 3);
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
    }
}
