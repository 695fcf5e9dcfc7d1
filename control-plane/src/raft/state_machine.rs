//! The Raft state machine: applies committed [`Command`]s to the object store, builds and
//! installs snapshots.
//!
//! Commands arrive as the bytes they were proposed as (see codec.rs) and are parsed here, the
//! one place that needs them parsed.
//!
//! A write's answer does not wait for redb's commit. A small apply runs in the *open*
//! transaction (beginning one if none is open) and hands openraft its results at once. A task
//! of its own (`commit_loop`) commits the open transaction [`COMMIT_WITHIN`] after it was
//! opened, or at once when a reader asks; then publishes the changes to watches and advances
//! [`Visible`]. Applies that come meanwhile join the transaction, so one commit serves many.
//! Nothing reads an uncommitted apply: linearizable reads wait for `Visible` to reach their
//! read index, and the proposals of the leader's own loops wait for it too (see
//! `Proposer::propose`), both asking for the commit; so do stale reads, for everything this
//! member has applied ([`Visible::settled`]): a member's reads never miss a write it answered.
//! Watches see a change when it commits, at most about `COMMIT_WITHIN` after its answer. (A
//! commit is ~30 µs of the ~90 µs an apply took at 1 client; run right after the apply in a
//! task of its own, it still came before the answer.)
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

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

/// How long an open transaction waits for its commit unless a reader asks for it: how late
/// watches may see a change.
const COMMIT_WITHIN: Duration = Duration::from_millis(1);

/// How long a reader waits for a commit before giving up: only a state machine that stopped
/// (its apply or commit failed, and openraft stops with it) takes that long.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId>,
    membership: Membership,
    store: StoreSnapshot,
}

/// The transaction of the newest applies, while it is not committed.
struct Open {
    txn: redb::WriteTransaction,
    /// What its applies changed: published once it commits.
    events: Vec<StoredEvent>,
    /// The last log index applied in it.
    index: u64,
}

/// How far this member's store is readable: the last log index whose apply has committed.
#[derive(Clone)]
pub struct Visible {
    index: watch::Receiver<u64>,
    /// The last log index applied here, committed or not.
    applied: Arc<AtomicU64>,
    /// Asks the commit task to commit now.
    wanted: Arc<Notify>,
}

/// Why a reader stopped waiting for a commit.
#[derive(Debug, thiserror::Error)]
pub enum NotVisible {
    #[error("this member's state machine has stopped")]
    Stopped,
    #[error("this member's store did not show log index {0} within {VISIBLE_WITHIN:?}")]
    TimedOut(u64),
}

impl Visible {
    /// Waits until the applies up to `index` are committed, asking for their commit.
    pub async fn reached(&self, index: u64) -> Result<(), NotVisible> {
        let mut visible = self.index.clone();
        let wait = async {
            loop {
                if *visible.borrow_and_update() >= index {
                    return Ok(());
                }
                self.wanted.notify_one();
                if visible.changed().await.is_err() {
                    return Err(NotVisible::Stopped);
                }
            }
        };
        tokio::time::timeout(VISIBLE_WITHIN, wait)
            .await
            .unwrap_or(Err(NotVisible::TimedOut(index)))
    }

    /// Waits until everything applied here so far is committed: a read then shows every
    /// write this member has answered.
    pub async fn settled(&self) -> Result<(), NotVisible> {
        self.reached(self.applied.load(Ordering::Acquire)).await
    }
}

/// What commits the open transaction: shared by the state machine and its commit task.
struct Committer {
    open: Mutex<Option<Open>>,
    hub: WatchHub,
    visible: watch::Sender<u64>,
    applied: Arc<AtomicU64>,
    /// Readers ask the commit task to commit now.
    wanted: Arc<Notify>,
    /// Held until the commit task ends, so that the database counts as open (see
    /// `Member::shutdown`) while a transaction of its may be.
    _db: Arc<Database>,
}

impl Committer {
    /// Commits the open transaction, if one is open, then publishes its changes and makes
    /// them visible. Holds the lock throughout: changes are published in commit order.
    fn commit_open(&self, durability: redb::Durability) -> Result<(), StorageError> {
        let mut open = self.open.lock().expect("open transaction lock");
        self.commit_locked(&mut open, durability)
    }

    fn commit_locked(
        &self,
        open: &mut Option<Open>,
        durability: redb::Durability,
    ) -> Result<(), StorageError> {
        let Some(mut current) = open.take() else {
            return Ok(());
        };
        super::stamp("sm.apply.commit", current.index);
        current.txn.set_durability(durability).map_err(sm_write)?;
        current.txn.commit().map_err(sm_write)?;
        super::stamp("sm.apply.committed", current.index);
        self.hub.publish(current.events);
        self.advance_visible(current.index);
        Ok(())
    }

    fn advance_visible(&self, index: u64) {
        self.applied.fetch_max(index, Ordering::AcqRel);
        self.visible.send_if_modified(|visible| {
            let advanced = index > *visible;
            *visible = (*visible).max(index);
            advanced
        });
    }
}

/// Commits each transaction an inline apply opened, `COMMIT_WITHIN` later or when a reader
/// asks. Ends with the last state machine handle. openraft already has the results of the
/// applies it commits and carries on from them: a failed commit would lose them from under
/// it, so it stops the process (as a failed log write does); a restart applies them again.
async fn commit_loop(committer: Arc<Committer>, mut opened: mpsc::UnboundedReceiver<()>) {
    while opened.recv().await.is_some() {
        tokio::select! {
            _ = tokio::time::sleep(COMMIT_WITHIN) => {}
            _ = committer.wanted.notified() => {}
        }
        // The lock is taken for long only by a commit that syncs (the periodic durable one,
        // on the blocking pool): this runtime thread does not wait for it.
        let inline = match committer.open.try_lock() {
            Ok(mut open) => Some(committer.commit_locked(&mut open, redb::Durability::None)),
            Err(_) => None,
        };
        let committed = match inline {
            Some(committed) => committed,
            None => {
                let committer = committer.clone();
                tokio::task::spawn_blocking(move || committer.commit_open(redb::Durability::None))
                    .await
                    .unwrap_or_else(|e| Err(sm_write(e)))
            }
        };
        if let Err(error) = committed {
            tracing::error!("the state machine's commit failed, stopping: {error}");
            std::process::abort();
        }
    }
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    store: ObjectStore,
    durable: Option<Durable>,
    /// When an apply last committed durably.
    last_durable: Arc<Mutex<Instant>>,
    /// Held by the snapshot builder while it writes (a durable commit, concurrent with
    /// applies): an apply that finds it taken goes to the blocking pool rather than wait for
    /// redb's write lock on a runtime thread.
    snapshot_writing: Arc<Mutex<()>>,
    /// Applies not committed yet, and what commits them (see the module's docs).
    committer: Arc<Committer>,
    /// Tells the commit task that an inline apply opened a transaction.
    opened: mpsc::UnboundedSender<()>,
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
    /// Starts the commit task: call within a tokio runtime.
    pub fn new(db: Arc<Database>, store: ObjectStore, hub: WatchHub) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(SM_META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        let committer = Arc::new(Committer {
            open: Mutex::new(None),
            hub,
            // openraft reads the applied state first thing, which sets it (`applied_state`).
            visible: watch::channel(0).0,
            applied: Arc::default(),
            wanted: Arc::default(),
            _db: db.clone(),
        });
        let (opened, opens) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(committer.clone(), opens));
        Ok(StateMachine {
            db,
            store,
            durable: None,
            last_durable: Arc::new(Mutex::new(Instant::now())),
            snapshot_writing: Arc::default(),
            committer,
            opened,
        })
    }

    /// How far this member's store is readable.
    pub fn visible(&self) -> Visible {
        Visible {
            index: self.committer.visible.subscribe(),
            applied: self.committer.applied.clone(),
            wanted: self.committer.wanted.clone(),
        }
    }

    fn commit_open(&self, durability: redb::Durability) -> Result<(), StorageError> {
        self.committer.commit_open(durability)
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

    /// Applies `entries` in the open transaction, beginning one if none is open: each
    /// entry's result, and whether it began one. On an error the open transaction is dropped
    /// with the earlier applies in it: openraft stops on the error, and a restart applies
    /// them again from the log.
    fn apply_open(&self, entries: &[Entry]) -> Result<(Vec<CommandResult>, bool), StorageError> {
        let last_index = entries.last().map(|e| e.log_id.index).unwrap_or(0);
        let mut open = self.committer.open.lock().expect("open transaction lock");
        let began = open.is_none();
        let mut current = match open.take() {
            Some(current) => current,
            None => {
                super::stamp("sm.apply.txn", last_index);
                let mut txn = self.db.begin_write().map_err(sm_write)?;
                super::stamp("sm.apply.locked", last_index);
                txn.set_durability(redb::Durability::None)
                    .map_err(sm_write)?;
                Open {
                    txn,
                    events: Vec::new(),
                    index: 0,
                }
            }
        };
        let mut results = Vec::with_capacity(entries.len());
        {
            let mut meta = current.txn.open_table(SM_META).map_err(sm_write)?;
            for entry in entries {
                put_json(&mut meta, "last_applied", &Some(entry.log_id))?;
                match &entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::None),
                    EntryPayload::Normal(encoded) => match encoded.decode() {
                        Ok(command) => {
                            let (result, changes) =
                                self.store.apply(&current.txn, command).map_err(sm_write)?;
                            results.push(result);
                            current.events.extend(changes);
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
        current.index = current.index.max(last_index);
        self.committer
            .applied
            .fetch_max(current.index, Ordering::AcqRel);
        *open = Some(current);
        super::stamp("sm.apply.end", last_index);
        Ok((results, began))
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
            // Everything applied so far, in one read transaction, so objects and applied index
            // agree even while applies go on.
            this.commit_open(redb::Durability::None)?;
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
        let this = self.clone();
        let (applied, membership) = blocking(move || {
            this.commit_open(redb::Durability::None)?;
            Self::read_applied(&this.db.begin_read().map_err(sm_read)?)
        })
        .await?;
        self.committer
            .advance_visible(applied.map(|id| id.index).unwrap_or(0));
        Ok((applied, membership))
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
        // more than the apply (tens of µs, and a thread wake-up), and the commit task commits
        // them later (see the module's docs). Large batches, the periodic durable commit, and
        // applies during a snapshot's write (redb's write lock is taken) go to the blocking
        // pool, off the runtime's threads, and commit there.
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
            Some(_no_snapshot_writing) => Some(self.apply_open(&entries)?),
            None => None,
        };
        match inline {
            Some((results, began)) => {
                if began {
                    self.opened
                        .send(())
                        .map_err(|_| sm_write("the state machine's commit task has stopped"))?;
                }
                super::stamp("sm.apply.return", last_index);
                Ok(results)
            }
            None => {
                let this = self.clone();
                blocking(move || {
                    let (results, _) = this.apply_open(&entries)?;
                    this.commit_open(durability)?;
                    Ok(results)
                })
                .await
            }
        }
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
        let installed = meta.last_log_id.map(|id| id.index).unwrap_or(0);
        let meta = meta.clone();
        blocking(move || {
            let data = snapshot.into_inner();
            let content: SnapshotData = serde_json::from_slice(&data).map_err(snap_err)?;
            this.commit_open(redb::Durability::None)?;
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
        self.committer.hub.reset();
        self.committer.advance_visible(installed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EncodedCommand;
    use crate::store::{Command, Notice};
    use berth_proto::{Kind, ObjectKey};
    use openraft::CommittedLeaderId;

    fn entry(index: u64, name: &str) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(EncodedCommand::new(&Command::Apply {
                object: serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                uid: format!("uid-{name}"),
                now: "2026-01-01T00:00:00Z".into(),
            })),
        }
    }

    /// An apply answers before its commit; applies that come meanwhile join its transaction;
    /// a reader waiting for `Visible` gets the commit at once (not after `COMMIT_WITHIN`), and
    /// the changes reach watches only then. The runtime has one thread (the commit task runs
    /// only while the test awaits) and its clock only moves when every task waits on a timer.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn applies_answer_before_their_commit_and_readers_ask_for_it() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = Arc::new(Database::create(dir.path().join("berth.redb")).expect("redb"));
        let hub = WatchHub::new(16);
        let store = ObjectStore::new(db.clone(), 100).expect("store");
        let mut sm = StateMachine::new(db, store.clone(), hub.clone()).expect("state machine");
        sm.applied_state().await.expect("applied state");
        let visible = sm.visible();
        let mut changes = hub.subscribe();
        let key = |name: &str| ObjectKey::new(Kind::Namespace, "", name);

        let results = sm.apply([entry(1, "a")]).await.expect("apply");
        assert!(
            matches!(results[..], [CommandResult::Applied { .. }]),
            "{results:?}"
        );
        sm.apply([entry(2, "b")]).await.expect("apply");
        assert!(
            store.get(&key("a")).expect("read").is_none(),
            "not committed yet"
        );
        assert!(
            changes.try_recv().is_err(),
            "nothing published before the commit"
        );

        let asked = tokio::time::Instant::now();
        visible.reached(2).await.expect("visible");
        assert_eq!(asked, tokio::time::Instant::now(), "committed when asked");
        assert!(store.get(&key("a")).expect("read").is_some());
        assert!(store.get(&key("b")).expect("read").is_some());
        for name in ["a", "b"] {
            match changes.try_recv() {
                Ok(Notice::Change(event)) => assert_eq!(event.key, key(name)),
                _ => panic!("the change to {name} is published after the commit"),
            }
        }

        // Without a reader asking, the commit comes by itself.
        sm.apply([entry(3, "c")]).await.expect("apply");
        tokio::time::sleep(COMMIT_WITHIN * 20).await;
        assert!(store.get(&key("c")).expect("read").is_some());
        let (applied, _) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied.map(|id| id.index), Some(3));
    }
}
