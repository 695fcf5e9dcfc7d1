//! The write-ahead log the Raft log lives in: append-only segment files of checksummed
//! records, made durable with one `fdatasync` per group of writes (etcd's WAL design).
//!
//! ```text
//!  raft-log/LOCK                       held by the one writer
//!  raft-log/0000000000000001.wal       [len u32][crc32 u32][kind u8, body]...
//!  raft-log/0000000000000002.wal       starts with the vote, commit index and purge point
//! ```
//!
//! A record is an entry (codec's binary encoding), a truncation (entries from an index on are
//! gone), a purge point, the vote, or the commit index. Replaying every segment in order gives
//! the log. A segment past [`SEGMENT_BYTES`] is closed and the next one begins with the current
//! vote, commit index and purge point, so a closed segment is deleted once every entry in it is
//! purged. A record cut short or failing its checksum at the end of the newest segment is a
//! write the crash interrupted (never acknowledged: acknowledgements follow the sync) and is cut
//! off; anywhere else it is corruption, and the log refuses to open.
//!
//! Why not redb, which holds the rest of the store: a redb commit of one small entry took
//! 0.7 to 0.95 ms here (page copies, two syncs), a bare `fdatasync` 0.15 ms, and on a
//! follower that sync is on every write's path.
//!
//! Space is allocated ahead of the writes, [`ALLOCATE_AHEAD`] at a time (etcd preallocates
//! too): an `fdatasync` after an append that grows the file also commits the new size to the
//! filesystem's journal, and measured here (`bench/wal-fsync.py`) that took 190–280 µs
//! against 125–160 µs for the same write into allocated space. The allocated tail reads as
//! zeros, which no record starts with, so replay stops there.

use super::{Entry, LogId, MemberId};
use openraft::Vote;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A segment is closed once it grows past this.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// How much file space is allocated at a time, ahead of the writes that fill it.
pub const ALLOCATE_AHEAD: u64 = 8 << 20;
const HEADER: usize = 8;

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 4;
const COMMITTED: u8 = 5;

/// One write to the log.
pub enum Record<'a> {
    Entry(&'a Entry),
    /// Entries from this index on are gone.
    Truncate(u64),
    Purge(LogId),
    Vote(Vote<MemberId>),
    Committed(Option<LogId>),
}

/// The log's contents: what replaying the files gives, and what `LogStore` keeps in memory.
#[derive(Default)]
pub struct Log {
    pub entries: BTreeMap<u64, Entry>,
    pub vote: Option<Vote<MemberId>>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl Log {
    /// Entries from `index` on are gone.
    pub fn truncate(&mut self, index: u64) {
        self.entries.split_off(&index);
    }

    /// Entries up to `log_id` are gone, and the log starts after it.
    pub fn purge(&mut self, log_id: LogId) {
        self.entries = self.entries.split_off(&(log_id.index + 1));
        self.purged = Some(log_id);
    }

    /// Replays one record; returns the index of an entry record.
    fn apply(&mut self, kind: u8, body: &[u8]) -> Result<u64, String> {
        match kind {
            ENTRY => {
                let entry = super::codec::decode_stored_entry(body).map_err(|e| e.to_string())?;
                let index = entry.log_id.index;
                self.entries.insert(index, entry);
                return Ok(index);
            }
            TRUNCATE => {
                self.truncate(u64::from_le_bytes(
                    body.try_into().map_err(|_| "truncate record")?,
                ));
            }
            PURGE => self.purge(serde_json::from_slice(body).map_err(|e| e.to_string())?),
            VOTE => self.vote = Some(serde_json::from_slice(body).map_err(|e| e.to_string())?),
            COMMITTED => {
                self.committed = serde_json::from_slice(body).map_err(|e| e.to_string())?
            }
            other => return Err(format!("unknown record kind {other}")),
        }
        Ok(0)
    }
}

/// A closed or open segment file.
struct Segment {
    seq: u64,
    path: PathBuf,
    /// The highest entry index written in it.
    max_index: u64,
}

/// The open log files; owned by the log's writer thread.
pub struct Wal {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: File,
    /// Where the open segment's records end (and the next write goes).
    size: u64,
    /// How far the open segment's file space reaches; `None` once the filesystem has refused
    /// to allocate ahead, and the file just grows.
    allocated: Option<u64>,
    /// A segment is closed once it grows past this.
    segment_bytes: u64,
    /// What the next segment starts with.
    vote: Option<Vote<MemberId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    buf: Vec<u8>,
    _lock: File,
}

fn corrupt(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// The commit index as last written.
    pub fn committed(&self) -> Option<LogId> {
        self.committed
    }

    /// Opens the log in `dir` (created if missing) and replays it. Waits up to 5 s for a
    /// writer of an earlier member in this process to let go of it.
    pub fn open(dir: &Path) -> io::Result<(Wal, Log)> {
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join("LOCK"))?;
        let mut attempts = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is in use by another process", dir.display()),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let mut seqs = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".wal")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut replayed = Log::default();
        let mut segments = Vec::new();
        let newest = seqs.last().copied();
        let mut end = 0;
        for seq in seqs {
            let path = segment_path(dir, seq);
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut max_index = 0;
            let mut at = 0;
            while at < bytes.len() {
                let torn = match read_record(&bytes[at..]) {
                    Some((kind, body, len)) => {
                        let index = replayed.apply(kind, body).map_err(|e| {
                            corrupt(format!("{} at byte {at}: {e}", path.display()))
                        })?;
                        max_index = max_index.max(index);
                        at += len;
                        continue;
                    }
                    None => at,
                };
                // Allocated space never written reads as zeros: the records end here.
                if bytes[torn..].iter().all(|&b| b == 0) {
                    break;
                }
                if Some(seq) != newest {
                    return Err(corrupt(format!(
                        "{}: a damaged record at byte {torn}, and newer segments follow",
                        path.display()
                    )));
                }
                tracing::warn!(
                    segment = %path.display(),
                    offset = torn,
                    dropped = bytes.len() - torn,
                    "cutting off a write interrupted by a crash"
                );
                // Cut, not overwritten later: a shorter record written over the damage could
                // otherwise line up with an intact unacknowledged one behind it.
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(torn as u64)?;
                file.sync_all()?;
                bytes.truncate(torn);
                break;
            }
            segments.push(Segment {
                seq,
                path,
                max_index,
            });
            end = at as u64;
        }
        let (file, size) = match segments.last() {
            Some(last) => (OpenOptions::new().write(true).open(&last.path)?, end),
            None => {
                let path = segment_path(dir, 1);
                let file = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)?;
                sync_dir(dir)?;
                segments.push(Segment {
                    seq: 1,
                    path,
                    max_index: 0,
                });
                (file, 0)
            }
        };
        let allocated = Some(file.metadata()?.len());
        let wal = Wal {
            dir: dir.to_path_buf(),
            segments,
            file,
            size,
            allocated,
            segment_bytes: SEGMENT_BYTES,
            vote: replayed.vote,
            committed: replayed.committed,
            purged: replayed.purged,
            buf: Vec::with_capacity(64 * 1024),
            _lock: lock,
        };
        Ok((wal, replayed))
    }

    /// Adds a record to the next [`Wal::sync`].
    pub fn push(&mut self, record: Record<'_>) -> io::Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        match record {
            Record::Entry(entry) => {
                self.buf.push(ENTRY);
                super::codec::put_entry(&mut self.buf, entry)
                    .map_err(|e| corrupt(e.to_string()))?;
                let last = self.segments.last_mut().expect("an open segment");
                last.max_index = last.max_index.max(entry.log_id.index);
            }
            Record::Truncate(index) => {
                self.buf.push(TRUNCATE);
                self.buf.extend_from_slice(&index.to_le_bytes());
            }
            Record::Purge(log_id) => {
                self.buf.push(PURGE);
                put_json(&mut self.buf, &log_id)?;
                self.purged = Some(log_id);
            }
            Record::Vote(vote) => {
                self.buf.push(VOTE);
                put_json(&mut self.buf, &vote)?;
                self.vote = Some(vote);
            }
            Record::Committed(committed) => {
                self.buf.push(COMMITTED);
                put_json(&mut self.buf, &committed)?;
                self.committed = committed;
            }
        }
        let body = &self.buf[start + HEADER..];
        let len = u32::try_from(body.len()).map_err(|_| corrupt("record too large".into()))?;
        let crc = crc32fast::hash(body);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Writes the pushed records and makes them durable; then closes a full segment and
    /// deletes those wholly purged.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.write_out()?;
        }
        if self.size >= self.segment_bytes {
            self.rotate()?;
        }
        self.delete_purged()
    }

    fn rotate(&mut self) -> io::Result<()> {
        // The closed segment gives back the space allocated past its records.
        self.file.set_len(self.size)?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.size = 0;
        self.allocated = self.allocated.map(|_| 0);
        self.segments.push(Segment {
            seq,
            path,
            max_index: 0,
        });
        if let Some(vote) = self.vote {
            self.push(Record::Vote(vote))?;
        }
        self.push(Record::Committed(self.committed))?;
        if let Some(purged) = self.purged {
            self.push(Record::Purge(purged))?;
        }
        self.write_out()
    }

    /// Writes the pushed records to the open segment and syncs it.
    fn write_out(&mut self) -> io::Result<()> {
        let end = self.size + self.buf.len() as u64;
        if let Some(allocated) = self.allocated.filter(|&a| a < end) {
            self.allocated = allocate(&self.file, allocated, end + ALLOCATE_AHEAD)?;
        }
        self.file.write_all_at(&self.buf, self.size)?;
        self.size = end;
        self.buf.clear();
        self.file.sync_data()
    }

    fn delete_purged(&mut self) -> io::Result<()> {
        let purged = self.purged.map_or(0, |p| p.index);
        let open = self.segments.len() - 1;
        let (closed, _) = self.segments.split_at(open);
        let gone = closed.iter().take_while(|s| s.max_index <= purged).count();
        if gone == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..gone) {
            std::fs::remove_file(&segment.path)?;
        }
        sync_dir(&self.dir)
    }
}

/// Allocates the file's space from `from` to `to` (the file's size becomes `to`) and returns
/// how far it reaches now; `None` if the filesystem cannot, and the file will grow with each
/// write instead.
fn allocate(file: &File, from: u64, to: u64) -> io::Result<Option<u64>> {
    let (offset, len) = (from as libc::off_t, (to - from) as libc::off_t);
    // SAFETY: fallocate(2) on a file descriptor this `File` owns; no memory is passed.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
        return Ok(Some(to));
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            tracing::debug!(%error, "the filesystem does not allocate ahead; the log grows instead");
            Ok(None)
        }
        // A nearly full disk may still take the write itself; it fails there if not.
        Some(libc::ENOSPC) => Ok(Some(from)),
        _ => Err(error),
    }
}

/// One record at the start of `bytes`: its kind, body and whole length; `None` if cut short
/// or damaged.
fn read_record(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = bytes.get(HEADER..HEADER + len)?;
    if len == 0 || crc32fast::hash(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], HEADER + len))
}

fn put_json(buf: &mut Vec<u8>, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer(buf, value).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(replayed: &Log) -> Vec<(u64, u64)> {
        replayed
            .entries
            .values()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn replays_appends_truncations_purges_and_the_vote() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, replayed) = Wal::open(dir.path()).unwrap();
            assert!(replayed.entries.is_empty() && replayed.vote.is_none());
            for i in 1..=5 {
                wal.push(Record::Entry(&entry(1, i))).unwrap();
            }
            wal.push(Record::Vote(Vote::new(2, 2))).unwrap();
            wal.push(Record::Truncate(4)).unwrap();
            wal.push(Record::Entry(&entry(2, 4))).unwrap();
            wal.push(Record::Purge(entry(1, 1).log_id)).unwrap();
            wal.push(Record::Committed(Some(entry(1, 3).log_id)))
                .unwrap();
            wal.sync().unwrap();
        }
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), [(1, 2), (1, 3), (2, 4)]);
        assert_eq!(replayed.vote, Some(Vote::new(2, 2)));
        assert_eq!(replayed.committed, Some(entry(1, 3).log_id));
        assert_eq!(replayed.purged, Some(entry(1, 1).log_id));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_elsewhere_refused() {
        let dir = tempfile::tempdir().unwrap();
        let end = {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            for i in 1..=3 {
                wal.push(Record::Entry(&entry(1, i))).unwrap();
            }
            wal.sync().unwrap();
            wal.size as usize
        };
        let path = segment_path(dir.path(), 1);
        let mut whole = std::fs::read(&path).unwrap();
        assert!(whole.len() > end, "space is allocated ahead");
        assert!(whole[end..].iter().all(|&b| b == 0));
        // A crash in the middle of the third record's write: its second half never landed.
        let third = end - end / 3;
        whole[third + (end - third) / 2..end].fill(0);
        std::fs::write(&path, &whole).unwrap();
        {
            let (mut wal, replayed) = Wal::open(dir.path()).unwrap();
            assert_eq!(indexes(&replayed), [(1, 1), (1, 2)]);
            // Appending after the cut works, and replays.
            wal.push(Record::Entry(&entry(1, 3))).unwrap();
            wal.sync().unwrap();
        }
        let (wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), [(1, 1), (1, 2), (1, 3)]);
        drop(wal);

        // A flipped byte in a record that newer segments follow is corruption.
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        std::fs::write(segment_path(dir.path(), 2), b"").unwrap();
        let error = Wal::open(dir.path()).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn appends_go_after_the_records_not_after_the_allocated_space() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        for i in 1..=3 {
            let (mut wal, replayed) = Wal::open(dir.path()).unwrap();
            assert_eq!(replayed.entries.len() as u64, i - 1);
            wal.push(Record::Entry(&entry(1, i))).unwrap();
            wal.sync().unwrap();
            let allocated = std::fs::metadata(&path).unwrap().len();
            assert!(allocated > wal.size, "{allocated}");
        }
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), [(1, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn a_closed_segment_still_holding_its_allocated_space_replays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.segment_bytes = 100;
            for i in 1..=8 {
                wal.push(Record::Entry(&entry(1, i))).unwrap();
                wal.sync().unwrap();
            }
            assert!(wal.segments.len() > 1);
        }
        // A crash before the closed segment's size change reached the disk.
        let first = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(&first, &bytes).unwrap();
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            replayed.entries.keys().copied().collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn full_segments_close_and_purged_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count() - 1;
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.segment_bytes = 1000;
            wal.push(Record::Vote(Vote::new(1, 1))).unwrap();
            for i in 1..=150 {
                wal.push(Record::Entry(&entry(1, i))).unwrap();
                wal.sync().unwrap();
            }
            assert!(files() > 4, "{} segments", files());
            let before = files();
            wal.push(Record::Purge(entry(1, 100).log_id)).unwrap();
            wal.sync().unwrap();
            // Only segments holding entries after 100 (and the open one) are left.
            assert!(
                files() < before - 2,
                "{} of {before} segments left",
                files()
            );
            assert_eq!(wal.segments.first().map(|s| s.max_index > 100), Some(true));
        }
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(replayed.entries.len(), 50);
        assert_eq!(replayed.entries.keys().next(), Some(&101));
        assert_eq!(replayed.vote, Some(Vote::new(1, 1)));
        assert_eq!(replayed.purged, Some(entry(1, 100).log_id));
    }
}
