//! The Raft log and the vote in redb, written by one writer thread that commits in groups.
//!
//! ```text
//!  openraft ── append / truncate / purge / save_vote ──▶ writer thread ──▶ redb (fsync)
//!      ▲                     │ entries readable at once                      │
//!      └── log readers ◀── pending (in memory) ◀── dropped once durable ─────┘
//! ```
//!
//! openraft 0.9 appends one entry per client write; an fsync'd redb commit per entry would cap
//! the store at one write per fsync. The writer thread instead drains every operation queued
//! while the previous commit ran and makes them durable in one transaction, then tells
//! openraft (the `LogFlushed` callbacks). Entries are readable from the moment `append`
//! returns, as openraft requires: until their commit they are served from `pending`.
//!
//! **The leader's own entries** are reported flushed at once, before their fsync. openraft
//! 0.9 waits for the flush inside its core before replicating, so otherwise every write
//! would pay the leader's fsync and then the followers' one after the other. Raft allows the
//! leader to write its log in parallel with replicating (Ongaro's thesis §10.2.1, as etcd
//! does) provided a commit decided before the leader's copy is durable is revealed to no one
//! until it is: [`Durable`] gates the two places it could leave this member, the commit index
//! sent to followers (`network.rs`) and the state machine (`state_machine.rs`). A follower's
//! append is only ever reported once durable, since its answer counts toward the quorum.

use super::{blocking, Entry, LogId, MemberId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// Log entries by index, in `codec`'s binary encoding (JSON in logs of earlier versions).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `vote`, `committed` and `last_purged`, as JSON.
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

/// The most operations one commit takes; bounds the latency of the first of them.
const MAX_GROUP: usize = 1024;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries not yet durable, by index.
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    writer: mpsc::Sender<Op>,
    me: MemberId,
    /// The vote last saved: tells the leader's own appends from a follower's.
    vote: Arc<Mutex<Option<Vote<MemberId>>>>,
    durable: Durable,
}

/// How far this member's log is durable: the last index of the log as of its newest commit.
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

type Done = oneshot::Sender<Result<(), String>>;

/// A write, in the order openraft asked for it.
enum Op {
    /// Entries, and openraft's callback unless it was already told (the leader's own).
    Append(Vec<Entry>, Option<LogFlushed<TypeConfig>>),
    Truncate(u64, Done),
    Purge(LogId, Done),
    SaveVote(Vote<MemberId>, Done),
    SaveCommitted(Option<LogId>, Done),
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}
fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(openraft::AnyError::error(e)).into()
}

impl LogStore {
    /// The log of member `me`.
    pub fn new(db: Arc<Database>, me: MemberId) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(LOG_META)?;
        txn.commit()?;
        let last = {
            let txn = db.begin_read()?;
            let log = txn.open_table(LOG)?;
            let last = log.last()?.map(|(index, _)| index.value());
            last.unwrap_or(0)
        };
        let vote = Self::read_meta(&db, "vote")
            .map_err(|e| redb::Error::Corrupted(format!("reading the vote: {e}")))?;
        let (durable_tx, durable) = tokio::sync::watch::channel(last);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (writer, ops) = mpsc::channel();
        let (thread_db, thread_pending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(&thread_db, &thread_pending, &durable_tx, ops))
            .map_err(redb::Error::Io)?;
        Ok(LogStore {
            db,
            pending,
            writer,
            me,
            vote: Arc::new(Mutex::new(vote)),
            durable: Durable(durable),
        })
    }

    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Entries this member made as leader in its current term: only a leader appends those.
    fn are_own_as_leader(&self, entries: &[Entry]) -> bool {
        let vote = *self.vote.lock().expect("vote lock");
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

    /// Hands an operation to the writer and waits until it is durable.
    async fn write(&self, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        self.writer
            .send(op(done))
            .map_err(|_| write_err("the log writer has stopped"))?;
        result
            .await
            .map_err(|_| write_err("the log writer has stopped"))?
            .map_err(write_err)
    }
}

/// The writer thread: one transaction per group of queued operations.
fn write_loop(
    db: &Database,
    pending: &Mutex<BTreeMap<u64, Entry>>,
    durable: &tokio::sync::watch::Sender<u64>,
    ops: mpsc::Receiver<Op>,
) {
    // The newest commit index not yet written: it rides along with the next commit rather
    // than costing an fsync of its own (which would also hold redb's one write lock while
    // the state machine waits to apply).
    let mut committed: Option<Op> = None;
    while let Ok(first) = ops.recv() {
        let mut group = Vec::new();
        let mut take = |op: Op, group: &mut Vec<Op>| match op {
            Op::SaveCommitted(..) => committed = Some(op),
            op => group.push(op),
        };
        take(first, &mut group);
        while group.len() < MAX_GROUP {
            match ops.try_recv() {
                Ok(op) => take(op, &mut group),
                Err(_) => break,
            }
        }
        if group.is_empty() {
            continue;
        }
        group.extend(committed.take());
        tracing::trace!(operations = group.len(), "log commit");
        super::stamp("log.commit.start", 0);
        let result = commit_group(db, &group).map_err(|e| e.to_string());
        super::stamp(
            "log.commit.end",
            group.iter().fold(0, |end, op| match op {
                Op::Append(entries, _) => entries.last().map(|e| e.log_id.index).unwrap_or(end),
                _ => end,
            }),
        );
        if let Err(error) = &result {
            tracing::error!("raft log write failed: {error}");
            if group.iter().any(|op| matches!(op, Op::Append(_, None))) {
                // openraft was told these entries were durable; continuing would break
                // that promise. A crash is what a failed fsync leaves anyway.
                tracing::error!("the leader's entries were reported durable: stopping");
                std::process::abort();
            }
        } else {
            // Where the log ends now; before any callback, so that what they release finds
            // the entries durable.
            let end = group.iter().fold(None, |end, op| match op {
                Op::Append(entries, _) => entries.last().map(|e| e.log_id.index).or(end),
                Op::Truncate(index, _) => Some(index.saturating_sub(1)),
                _ => end,
            });
            if let Some(end) = end {
                durable.send_replace(end);
            }
        }
        for op in group {
            match op {
                Op::Append(entries, callback) => {
                    if result.is_ok() {
                        // Durable now: readers find them in redb. Keep any that a later
                        // append replaced at the same index.
                        let mut pending = pending.lock().expect("pending log lock");
                        for entry in &entries {
                            if pending
                                .get(&entry.log_id.index)
                                .is_some_and(|p| p.log_id == entry.log_id)
                            {
                                pending.remove(&entry.log_id.index);
                            }
                        }
                    }
                    if let Some(callback) = callback {
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                }
                Op::Truncate(_, done)
                | Op::Purge(_, done)
                | Op::SaveVote(_, done)
                | Op::SaveCommitted(_, done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

fn commit_group(db: &Database, group: &[Op]) -> Result<(), redb::Error> {
    let txn: WriteTransaction = db.begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(LOG_META)?;
        for op in group {
            match op {
                Op::Append(entries, _) => {
                    for entry in entries {
                        let record = super::codec::encode_entry(entry)
                            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                        log.insert(entry.log_id.index, record.as_slice())?;
                    }
                }
                Op::Truncate(index, _) => log.retain_in(*index.., |_, _| false)?,
                Op::Purge(log_id, _) => {
                    meta.insert("last_purged", json(log_id)?.as_slice())?;
                    log.retain_in(..=log_id.index, |_, _| false)?;
                }
                Op::SaveVote(vote, _) => {
                    meta.insert("vote", json(vote)?.as_slice())?;
                }
                Op::SaveCommitted(committed, _) => {
                    meta.insert("committed", json(committed)?.as_slice())?;
                }
            }
        }
    }
    // Durability::Immediate (the default): fsync before anyone is told.
    txn.commit()?;
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, redb::Error> {
    serde_json::to_vec(value).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        super::stamp("log.read.start", 0);
        // Pending first: an entry that leaves `pending` is already in redb.
        let mut entries: BTreeMap<u64, Entry> = {
            let pending = self.pending.lock().expect("pending log lock");
            pending
                .range((start, end))
                .map(|(i, e)| (*i, e.clone()))
                .collect()
        };
        let db = self.db.clone();
        let stored = blocking(move || {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let mut stored = Vec::new();
            for item in table.range::<u64>((start, end)).map_err(read_err)? {
                let (index, value) = item.map_err(read_err)?;
                stored.push((
                    index.value(),
                    super::codec::decode_stored_entry(value.value()).map_err(read_err)?,
                ));
            }
            Ok(stored)
        })
        .await?;
        for (index, entry) in stored {
            entries.entry(index).or_insert(entry);
        }
        super::stamp(
            "log.read.end",
            entries.keys().next_back().copied().unwrap_or(0),
        );
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let pending_last = self
            .pending
            .lock()
            .expect("pending log lock")
            .values()
            .next_back()
            .map(|e| e.log_id);
        let db = self.db.clone();
        blocking(move || {
            let last_purged_log_id: Option<LogId> = Self::read_meta(&db, "last_purged")?;
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let stored_last = match table.last().map_err(read_err)? {
                Some((_, value)) => {
                    Some(super::codec::decode_stored_log_id(value.value()).map_err(read_err)?)
                }
                None => None,
            };
            let last_log_id = pending_last.max(stored_last).or(last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.write(|done| Op::SaveVote(vote, done)).await?;
        *self.vote.lock().expect("vote lock") = Some(vote);
        Ok(())
    }

    /// The commit index, so that a restarted member applies what it knew committed without
    /// waiting for a leader. Not waited for: it is made durable with the next append, and
    /// losing it costs only that wait (linearizable reads do not depend on it: see
    /// `leader::ReadBarrier`).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let (done, _) = oneshot::channel();
        self.writer
            .send(Op::SaveCommitted(committed, done))
            .map_err(|_| write_err("the log writer has stopped"))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(Self::read_meta::<Option<LogId>>(&db, "committed")?.flatten())).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::read_meta(&db, "vote")).await
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
            let mut pending = self.pending.lock().expect("pending log lock");
            for entry in &entries {
                pending.insert(entry.log_id.index, entry.clone());
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
        self.pending
            .lock()
            .expect("pending log lock")
            .retain(|index, _| *index < log_id.index);
        self.write(|done| Op::Truncate(log_id.index, done)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(|done| Op::Purge(log_id, done)).await
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

    /// A log whose entries an earlier version wrote as JSON opens, reads, and takes new
    /// (binary) entries after them.
    #[tokio::test]
    async fn a_log_of_json_entries_still_opens() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = Arc::new(Database::create(dir.path().join("berth.redb")).expect("redb"));
        {
            let txn = db.begin_write().expect("write");
            {
                let mut log = txn.open_table(LOG).expect("log table");
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
        let mut store = LogStore::new(db, 1).expect("log store opens");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(2)));

        // As the leader appends its own entries (openraft's callback is not public).
        let new = Entry {
            log_id: log_id(3),
            payload: EntryPayload::Normal(EncodedCommand::new(&command("new"))),
        };
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
    }
}
