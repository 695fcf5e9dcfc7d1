//! Container log files, in the Kubernetes CRI log format.
//!
//! ```text
//!  container stdout/stderr ──pipe──▶ shim: LogWriter ──▶ <log>  (rotated to <log>.1 .. <log>.N-1)
//!                                                          │
//!  berth logs POD [-c] [--tail] [-f] ◀── agent: read / follow ◀┘
//! ```
//!
//! One record per line: `<RFC3339Nano UTC time> <stdout|stderr> <F|P> <content>\n`. `P` marks a
//! partial line: a piece of a line longer than [`MAX_LINE`], or the unterminated bytes a
//! container left when it exited; `F` ends a line. The writer runs in the single-threaded shim
//! (no tokio); each batch of records goes out with one `write(2)` and nothing is buffered across
//! calls, so a SIGKILLed shim loses no complete line.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The longest content of one record; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// How often [`follow`] looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Which of the container's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writes one container's log file (used by the shim).
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: File,
    /// Bytes in `file`.
    size: u64,
    /// The unterminated tail of each stream, waiting for its newline.
    pending: [Vec<u8>; 2],
    /// Records of the current `write` call, written out before returning.
    out: Vec<u8>,
}

impl LogWriter {
    /// Appends to `path`; when the file would grow past `max_bytes`, it is rotated:
    /// path -> path.1 -> ... -> path.<max_files-1>, the oldest dropped. A record larger than
    /// `max_bytes` still goes whole into a fresh file. `max_files` 0 counts as 1 (no history).
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            max_bytes,
            max_files: max_files.max(1),
            file,
            size,
            pending: [Vec::new(), Vec::new()],
            out: Vec::new(),
        })
    }

    /// Bytes as read from a pipe: split into lines; an unterminated tail is kept (per stream)
    /// until its newline arrives.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let now = Timestamp::now();
        let mut pending = std::mem::take(&mut self.pending[stream.index()]);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline;
            self.push_line(now, stream, &pending[start..end])?;
            start = end + 1;
        }
        // No newline yet: a line already past the limit is cut into partial records now rather
        // than held without bound.
        while pending.len() - start > MAX_LINE {
            self.push_record(now, stream, true, &pending[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        pending.drain(..start);
        self.pending[stream.index()] = pending;
        self.flush_out()
    }

    /// At exit: writes buffered partial lines (tag P) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        let now = Timestamp::now();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let pending = std::mem::take(&mut self.pending[stream.index()]);
            if !pending.is_empty() {
                self.push_record(now, stream, true, &pending)?;
            }
        }
        self.flush_out()?;
        self.file.flush()
    }

    /// A complete line (without its newline): `P` pieces of [`MAX_LINE`], then the `F` rest.
    fn push_line(&mut self, time: Timestamp, stream: Stream, mut line: &[u8]) -> io::Result<()> {
        while line.len() > MAX_LINE {
            self.push_record(time, stream, true, &line[..MAX_LINE])?;
            line = &line[MAX_LINE..];
        }
        self.push_record(time, stream, false, line)
    }

    fn push_record(
        &mut self,
        time: Timestamp,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let header = format!(
            "{time} {} {} ",
            stream.as_str(),
            if partial { 'P' } else { 'F' }
        );
        let len = (header.len() + content.len() + 1) as u64;
        let used = self.size + self.out.len() as u64;
        if used > 0 && used + len > self.max_bytes {
            self.flush_out()?;
            self.rotate()?;
        }
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(content);
        self.out.push(b'\n');
        Ok(())
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.file.write_all(&self.out)?;
            self.size += self.out.len() as u64;
            self.out.clear();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            remove_if_exists(&self.path)?;
        } else {
            // rename(2) replaces its target, so the oldest file is dropped by the first rename.
            for i in (1..self.max_files - 1).rev() {
                rename_if_exists(&rotated(&self.path, i), &rotated(&self.path, i + 1))?;
            }
            rename_if_exists(&self.path, &rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// One parsed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: Timestamp,
    pub stream: Stream,
    pub partial: bool,
    pub content: Vec<u8>,
}

impl LogLine {
    /// The record as written to the file, newline included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} {} ",
            self.time,
            self.stream.as_str(),
            if self.partial { 'P' } else { 'F' }
        )
        .into_bytes();
        out.extend_from_slice(&self.content);
        out.push(b'\n');
        out
    }
}

/// Parses one record; a trailing newline is optional. `None` when it is not a CRI log record.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = fields.next().unwrap_or_default().to_vec();
    Some(LogLine {
        time,
        stream,
        partial,
        content,
    })
}

/// The last `tail` lines (all when None) across the rotated files, oldest first.
/// A missing log file reads as no lines.
pub fn read(path: &Path, tail: Option<usize>) -> io::Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    if let Some(mut file) = open_existing(path)? {
        read_complete_lines(&mut file, &mut Vec::new(), &mut lines)?;
    }
    prepend_rotated(path, None, tail, &mut lines)?;
    Ok(keep_tail(lines, tail))
}

/// The last `tail` lines, then new lines as they are written, until `done` resolves and
/// everything written before it was read. Rotation is followed: when the file was renamed, the
/// rest of the old one is read, then the rotated files written since, then the new one. A log
/// file that does not exist yet is waited for. Polls every 100 ms; needs a tokio runtime.
/// Lazy: the tail is taken when the stream is first polled.
///
/// The stream ends after yielding an error. Dropping it stops following.
pub fn follow(
    path: PathBuf,
    tail: Option<usize>,
    done: impl Future<Output = ()> + Send + 'static,
) -> BoxStream<'static, io::Result<LogLine>> {
    struct State {
        path: PathBuf,
        tail: Option<usize>,
        follower: Option<Follower>,
        queue: VecDeque<LogLine>,
        done: Pin<Box<dyn Future<Output = ()> + Send>>,
        done_fired: bool,
        ended: bool,
    }
    let state = State {
        path,
        tail,
        follower: None,
        queue: VecDeque::new(),
        done: Box::pin(done),
        done_fired: false,
        ended: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(line) = s.queue.pop_front() {
                return Some((Ok(line), s));
            }
            if s.ended {
                return None;
            }
            let result = match s.follower.take() {
                None => {
                    let (path, tail) = (s.path.clone(), s.tail);
                    blocking(move || Follower::start(path, tail)).await
                }
                Some(mut follower) => {
                    if !s.done_fired {
                        tokio::select! {
                            _ = &mut s.done => s.done_fired = true,
                            _ = tokio::time::sleep(FOLLOW_POLL) => {}
                        }
                    }
                    // Once `done` fired, this last poll reads what was written before it.
                    s.ended = s.done_fired;
                    blocking(move || follower.poll().map(|lines| (follower, lines))).await
                }
            };
            match result {
                Ok((follower, lines)) => {
                    s.follower = Some(follower);
                    s.queue.extend(lines);
                }
                Err(e) => {
                    s.ended = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Identifies a file across renames: (device, inode).
type FileId = (u64, u64);

/// The reading side of [`follow`]: an open log file and the bytes past its last newline.
struct Follower {
    path: PathBuf,
    current: Option<(File, FileId)>,
    partial: Vec<u8>,
}

impl Follower {
    /// Opens the log file (if it exists yet) and returns the last `tail` lines written so far.
    fn start(path: PathBuf, tail: Option<usize>) -> io::Result<(Follower, Vec<LogLine>)> {
        let mut follower = Follower {
            path,
            current: None,
            partial: Vec::new(),
        };
        let mut lines = Vec::new();
        let mut current_id = None;
        if let Some(file) = open_existing(&follower.path)? {
            let id = file_id(&file.metadata()?);
            follower.current = Some((file, id));
            current_id = Some(id);
            follower.drain(&mut lines)?;
        }
        prepend_rotated(&follower.path, current_id, tail, &mut lines)?;
        Ok((follower, keep_tail(lines, tail)))
    }

    /// The lines written since the last call, following rotations.
    fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut lines = Vec::new();
        let Some((_, old_id)) = self.current else {
            if let Some(file) = open_existing(&self.path)? {
                let id = file_id(&file.metadata()?);
                self.current = Some((file, id));
                self.drain(&mut lines)?;
            }
            return Ok(lines);
        };
        // Look before draining: once a new file is at `path`, the writer is done with ours, so
        // draining it afterwards reads all of it.
        let now_at_path = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(file_id(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.drain(&mut lines)?;
        if now_at_path.is_none() || now_at_path == Some(old_id) {
            return Ok(lines);
        }
        let Some(file) = open_existing(&self.path)? else {
            return Ok(lines);
        };
        let new_id = file_id(&file.metadata()?);
        self.current = Some((file, new_id));
        self.partial.clear();
        // Several rotations may have happened since the last poll: the files rotated after
        // ours (lower numbers than ours; all of them if ours was dropped) come first.
        let rotated = rotated_files(&self.path)?;
        let ours = rotated.iter().position(|(_, id)| *id == old_id);
        let newer = &rotated[..ours.unwrap_or(rotated.len())];
        for (path, id) in newer.iter().rev() {
            if *id == new_id {
                continue;
            }
            if let Some(mut file) = open_existing(path)? {
                read_complete_lines(&mut file, &mut Vec::new(), &mut lines)?;
            }
        }
        self.drain(&mut lines)?;
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<LogLine>) -> io::Result<()> {
        match &mut self.current {
            Some((file, _)) => read_complete_lines(file, &mut self.partial, lines),
            None => Ok(()),
        }
    }
}

/// Reads `file` to its end and parses the complete records; bytes after the last newline (a
/// record being written) stay in `partial` for the next read.
fn read_complete_lines(
    file: &mut File,
    partial: &mut Vec<u8>,
    lines: &mut Vec<LogLine>,
) -> io::Result<()> {
    file.read_to_end(partial)?;
    let Some(last_newline) = partial.iter().rposition(|&b| b == b'\n') else {
        return Ok(());
    };
    lines.extend(
        partial[..last_newline]
            .split(|&b| b == b'\n')
            .filter_map(parse_line),
    );
    partial.drain(..=last_newline);
    Ok(())
}

/// Puts lines from the rotated files (newest first) before `lines` until `tail` are there,
/// skipping the file `skip` (the current one, if a rotation moved it meanwhile).
fn prepend_rotated(
    path: &Path,
    skip: Option<FileId>,
    tail: Option<usize>,
    lines: &mut Vec<LogLine>,
) -> io::Result<()> {
    for (rotated_path, id) in rotated_files(path)? {
        if tail.is_some_and(|tail| lines.len() >= tail) {
            break;
        }
        if Some(id) == skip {
            continue;
        }
        let Some(mut file) = open_existing(&rotated_path)? else {
            continue;
        };
        let mut older = Vec::new();
        read_complete_lines(&mut file, &mut Vec::new(), &mut older)?;
        older.append(lines);
        *lines = older;
    }
    Ok(())
}

/// `path.1`, `path.2`, ... (newest first) up to the first missing one.
fn rotated_files(path: &Path) -> io::Result<Vec<(PathBuf, FileId)>> {
    let mut files = Vec::new();
    for i in 1.. {
        let rotated_path = rotated(path, i);
        match std::fs::metadata(&rotated_path) {
            Ok(meta) => files.push((rotated_path, file_id(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

fn keep_tail(mut lines: Vec<LogLine>, tail: Option<usize>) -> Vec<LogLine> {
    if let Some(tail) = tail {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    lines
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(lines: &[LogLine]) -> Vec<(Stream, bool, String)> {
        lines
            .iter()
            .map(|l| {
                let text = String::from_utf8(l.content.clone()).unwrap();
                (l.stream, l.partial, text)
            })
            .collect()
    }

    fn full(stream: Stream, text: &str) -> (Stream, bool, String) {
        (stream, false, text.to_string())
    }

    fn log_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("c.log")
    }

    #[test]
    fn lines_split_across_writes_and_interleaved_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut w = LogWriter::open(&path, 1 << 20, 3).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\nwar").unwrap();
        w.write(Stream::Stdout, b"lo\n\nworld\nbye").unwrap();
        w.write(Stream::Stderr, b"ning\n").unwrap();
        assert_eq!(
            contents(&read(&path, None).unwrap()),
            vec![
                full(Stream::Stderr, "oops"),
                full(Stream::Stdout, "hello"),
                full(Stream::Stdout, ""),
                full(Stream::Stdout, "world"),
                full(Stream::Stderr, "warning"),
            ]
        );
        // The unterminated "bye" is written at exit, as a partial line.
        w.finish().unwrap();
        let lines = read(&path, Some(1)).unwrap();
        assert_eq!(contents(&lines), vec![(Stream::Stdout, true, "bye".into())]);
    }

    #[test]
    fn long_lines_become_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut w = LogWriter::open(&path, 1 << 20, 1).unwrap();
        let long = vec![b'a'; 2 * MAX_LINE + 10];
        w.write(Stream::Stdout, &long).unwrap();
        // Two pieces are out already; the last 10 bytes wait for their newline.
        assert_eq!(read(&path, None).unwrap().len(), 2);
        w.write(Stream::Stdout, b"\n").unwrap();
        let lines = read(&path, None).unwrap();
        let shape: Vec<_> = lines.iter().map(|l| (l.partial, l.content.len())).collect();
        assert_eq!(shape, vec![(true, MAX_LINE), (true, MAX_LINE), (false, 10)]);
        // A line of exactly MAX_LINE bytes stays one record.
        w.write(Stream::Stderr, &[b'b'; MAX_LINE]).unwrap();
        w.write(Stream::Stderr, b"\n").unwrap();
        let last = read(&path, Some(1)).unwrap();
        assert_eq!((last[0].partial, last[0].content.len()), (false, MAX_LINE));
    }

    #[test]
    fn rotation_keeps_max_files_and_tail_spans_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        // A record here is ~45 bytes: about two per file.
        let mut w = LogWriter::open(&path, 100, 3).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        w.finish().unwrap();
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [&path, &rotated(&path, 1), &rotated(&path, 2)] {
            assert!(std::fs::metadata(p).unwrap().len() <= 100);
        }
        let all = read(&path, None).unwrap();
        let texts: Vec<_> = contents(&all).into_iter().map(|(_, _, t)| t).collect();
        assert!(texts.len() >= 4 && texts.len() < 20);
        assert_eq!(texts.last().unwrap(), "line 19");
        // Consecutive and oldest first across the three files.
        let first: usize = texts[0][5..].parse().unwrap();
        let expected: Vec<_> = (first..20).map(|i| format!("line {i:02}")).collect();
        assert_eq!(texts, expected);
        let tail = read(&path, Some(3)).unwrap();
        assert_eq!(
            contents(&tail),
            vec![
                full(Stream::Stdout, "line 17"),
                full(Stream::Stdout, "line 18"),
                full(Stream::Stdout, "line 19"),
            ]
        );
        // Reopening appends to the existing file and keeps rotating.
        let mut w = LogWriter::open(&path, 100, 3).unwrap();
        w.write(Stream::Stderr, b"again\n").unwrap();
        assert_eq!(
            contents(&read(&path, Some(2)).unwrap()),
            vec![
                full(Stream::Stdout, "line 19"),
                full(Stream::Stderr, "again")
            ]
        );
    }

    #[test]
    fn single_file_rotation_drops_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut w = LogWriter::open(&path, 60, 1).unwrap();
        for i in 0..5 {
            w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        assert!(!rotated(&path, 1).exists());
        assert_eq!(
            contents(&read(&path, None).unwrap()),
            vec![full(Stream::Stdout, "4")]
        );
    }

    #[test]
    fn parse_round_trip() {
        let line = LogLine {
            time: "2024-05-01T12:34:56.123456789Z".parse().unwrap(),
            stream: Stream::Stderr,
            partial: true,
            content: b"a b  c\x00\xff".to_vec(),
        };
        let bytes = line.to_bytes();
        assert!(bytes.starts_with(b"2024-05-01T12:34:56.123456789Z stderr P a b"));
        assert_eq!(parse_line(&bytes), Some(line));
        let empty = parse_line(b"2024-05-01T12:34:56Z stdout F ").unwrap();
        assert!(empty.content.is_empty() && !empty.partial);
        // What other CRI runtimes write parses too.
        let other = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F hi\n").unwrap();
        assert_eq!(other.content, b"hi");
        for bad in [
            &b""[..],
            b"garbage",
            b"2024-05-01T12:34:56Z stdin F x",
            b"2024-05-01T12:34:56Z stdout X x",
            b"yesterday stdout F x",
        ] {
            assert_eq!(parse_line(bad), None);
        }
    }

    #[test]
    fn written_timestamps_are_utc_rfc3339() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let before = Timestamp::now();
        let mut w = LogWriter::open(&path, 1 << 20, 1).unwrap();
        w.write(Stream::Stdout, b"x\n").unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        let (time, _) = raw.split_once(' ').unwrap();
        assert!(time.ends_with('Z'), "{raw}");
        let line = &read(&path, None).unwrap()[0];
        assert!(line.time >= before && line.time <= Timestamp::now());
    }

    async fn next_text(stream: &mut BoxStream<'static, io::Result<LogLine>>) -> String {
        let line = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a line within 5s")
            .expect("stream open")
            .expect("no error");
        String::from_utf8(line.content).unwrap()
    }

    #[tokio::test]
    async fn follow_sees_new_lines_across_rotation_and_ends_after_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut w = LogWriter::open(&path, 120, 4).unwrap();
        for i in 0..5 {
            w.write(Stream::Stdout, format!("old {i}\n").as_bytes())
                .unwrap();
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let mut lines = follow(path.clone(), Some(2), async {
            let _ = done_rx.await;
        });
        assert_eq!(next_text(&mut lines).await, "old 3");
        assert_eq!(next_text(&mut lines).await, "old 4");

        w.write(Stream::Stderr, b"new 0\n").unwrap();
        assert_eq!(next_text(&mut lines).await, "new 0");
        // Many rotations between two polls: nothing is lost, nothing repeated.
        for i in 1..6 {
            w.write(Stream::Stdout, format!("new {i}\n").as_bytes())
                .unwrap();
        }
        for i in 1..6 {
            assert_eq!(next_text(&mut lines).await, format!("new {i}"));
        }
        // Written before `done`: still delivered; then the stream ends.
        w.write(Stream::Stdout, b"last\n").unwrap();
        done_tx.send(()).unwrap();
        assert_eq!(next_text(&mut lines).await, "last");
        let end = tokio::time::timeout(Duration::from_secs(5), lines.next()).await;
        assert!(matches!(end, Ok(None)));
    }

    #[tokio::test]
    async fn follow_waits_for_the_file_and_without_tail_reads_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut lines = follow(path.clone(), None, futures::future::pending());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, b"one\ntwo\n").unwrap();
        assert_eq!(next_text(&mut lines).await, "one");
        assert_eq!(next_text(&mut lines).await, "two");
    }

    #[tokio::test]
    async fn follow_with_zero_tail_only_sees_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(&dir);
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let mut lines = follow(path.clone(), Some(0), async {
            let _ = done_rx.await;
        });
        // The first poll starts following; no history with a zero tail.
        let first = tokio::time::timeout(Duration::from_millis(300), lines.next()).await;
        assert!(first.is_err());
        w.write(Stream::Stdout, b"after\n").unwrap();
        done_tx.send(()).unwrap();
        let rest: Vec<_> = lines.collect().await;
        let texts: Vec<_> = rest
            .into_iter()
            .map(|l| String::from_utf8(l.unwrap().content).unwrap())
            .collect();
        assert_eq!(texts, vec!["after"]);
    }
}
