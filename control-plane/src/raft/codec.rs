//! Binary encodings of Raft log entries and of the AppendEntries RPC.
//!
//! A client command is serialized once, where it is proposed (the JSON of a [`Command`], held
//! as an [`EncodedCommand`]), and those bytes travel unchanged: into the leader's log, to the
//! followers in AppendEntries, into their logs, and in a follower's forward to the leader.
//! Only the state machine parses them. openraft's own fields around them (log ids, votes) take
//! a fixed little-endian layout, so a payload is copied, never re-encoded.
//!
//! ```text
//! entry      B1 | term u64 | node u64 | index u64 | kind u8 | payload (to the end)
//!                 kind 0: blank; 1: normal, the command's JSON; 2: membership, as JSON
//! append     B1 | vote | prev_log_id opt | leader_commit opt | count u32 | (len u32 | entry)*
//! response   B1 | 0 | kind u8 (0 success, 1 partial + log_id opt, 2 conflict, 3 higher + vote)
//!            B1 | 1 | openraft's RaftError as JSON
//! vote       term u64 | node u64 | committed u8        opt: 0 | 1 value
//! ```
//!
//! Every record starts with [`TAG`]: JSON never starts with 0xB1, so log entries written as
//! JSON by earlier versions still read (see [`decode_stored_entry`]).

use super::{Entry, LogId, MemberId, TypeConfig};
use crate::store::Command;
use bytes::{BufMut, Bytes};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, Vote};
use std::fmt;

/// First byte of every binary record.
pub const TAG: u8 = 0xB1;

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

const LOG_ID_BYTES: usize = 24;
/// Tag, log id, kind.
const ENTRY_HEADER: usize = 1 + LOG_ID_BYTES + 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed Raft record: {0}")]
    Malformed(&'static str),
    #[error("malformed Raft record: {0}")]
    Json(#[from] serde_json::Error),
}

/// A [`Command`] as the JSON it was proposed as: the application data of berth's log entries.
/// Cloning shares the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedCommand(Bytes);

impl EncodedCommand {
    pub fn new(command: &Command) -> Self {
        // Commands hold JSON values and strings only: serializing them cannot fail.
        EncodedCommand(Bytes::from(
            serde_json::to_vec(command).expect("commands serialize"),
        ))
    }

    /// Bytes received from another member (a forward), taken as they are: bytes that are not
    /// a command fail where they are applied, alike on every member.
    pub fn from_bytes(bytes: Bytes) -> Self {
        EncodedCommand(bytes)
    }

    /// The encoding of `Command::Batch` of these commands, built from their bytes.
    pub fn batch(commands: &[EncodedCommand]) -> Self {
        const OPEN: &[u8] = b"{\"Batch\":[";
        const CLOSE: &[u8] = b"]}";
        let len = commands.iter().map(|c| c.0.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(OPEN.len() + len + CLOSE.len());
        out.extend_from_slice(OPEN);
        for (i, command) in commands.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&command.0);
        }
        out.extend_from_slice(CLOSE);
        EncodedCommand(Bytes::from(out))
    }

    pub fn decode(&self) -> Result<Command, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<Command> for EncodedCommand {
    fn from(command: Command) -> Self {
        EncodedCommand::new(&command)
    }
}

impl fmt::Debug for EncodedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 200;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        write!(f, "{}", String::from_utf8_lossy(shown))?;
        if self.0.len() > SHOWN {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

// openraft requires serde for its application data; berth's own encodings above do not use it.
impl serde::Serialize for EncodedCommand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EncodedCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EncodedCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the bytes of a command")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(EncodedCommand(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(EncodedCommand(Bytes::from(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(EncodedCommand(Bytes::from(bytes)))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

// ---- writing ----

fn put_log_id(out: &mut Vec<u8>, log_id: &LogId) {
    out.put_u64_le(log_id.leader_id.term);
    out.put_u64_le(log_id.leader_id.node_id);
    out.put_u64_le(log_id.index);
}

fn put_opt_log_id(out: &mut Vec<u8>, log_id: &Option<LogId>) {
    match log_id {
        None => out.put_u8(0),
        Some(log_id) => {
            out.put_u8(1);
            put_log_id(out, log_id);
        }
    }
}

fn put_vote(out: &mut Vec<u8>, vote: &Vote<MemberId>) {
    out.put_u64_le(vote.leader_id.term);
    out.put_u64_le(vote.leader_id.node_id);
    out.put_u8(vote.committed as u8);
}

/// Bytes an entry takes, roughly (membership JSON is guessed).
fn entry_len(entry: &Entry) -> usize {
    ENTRY_HEADER
        + match &entry.payload {
            EntryPayload::Normal(command) => command.0.len(),
            _ => 64,
        }
}

pub(crate) fn put_entry(out: &mut Vec<u8>, entry: &Entry) -> Result<(), CodecError> {
    out.put_u8(TAG);
    put_log_id(out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.put_u8(BLANK),
        EntryPayload::Normal(command) => {
            out.put_u8(NORMAL);
            out.extend_from_slice(&command.0);
        }
        EntryPayload::Membership(membership) => {
            out.put_u8(MEMBERSHIP);
            serde_json::to_writer(&mut *out, membership)?;
        }
    }
    Ok(())
}

/// An entry as the log stores it.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(entry_len(entry));
    put_entry(&mut out, entry)?;
    Ok(out)
}

pub fn encode_append_request(
    request: &AppendEntriesRequest<TypeConfig>,
) -> Result<Vec<u8>, CodecError> {
    let entries_len: usize = request.entries.iter().map(|e| 4 + entry_len(e)).sum();
    let mut out = Vec::with_capacity(1 + 17 + 2 * (1 + LOG_ID_BYTES) + 4 + entries_len);
    out.put_u8(TAG);
    put_vote(&mut out, &request.vote);
    put_opt_log_id(&mut out, &request.prev_log_id);
    put_opt_log_id(&mut out, &request.leader_commit);
    let count = u32::try_from(request.entries.len())
        .map_err(|_| CodecError::Malformed("too many entries"))?;
    out.put_u32_le(count);
    for entry in &request.entries {
        let at = out.len();
        out.put_u32_le(0);
        put_entry(&mut out, entry)?;
        let len = u32::try_from(out.len() - at - 4)
            .map_err(|_| CodecError::Malformed("entry too large"))?;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    Ok(out)
}

pub fn encode_append_response(
    result: &Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(2 + 1 + 1 + LOG_ID_BYTES);
    out.put_u8(TAG);
    match result {
        Ok(response) => {
            out.put_u8(0);
            match response {
                AppendEntriesResponse::Success => out.put_u8(0),
                AppendEntriesResponse::PartialSuccess(matching) => {
                    out.put_u8(1);
                    put_opt_log_id(&mut out, matching);
                }
                AppendEntriesResponse::Conflict => out.put_u8(2),
                AppendEntriesResponse::HigherVote(vote) => {
                    out.put_u8(3);
                    put_vote(&mut out, vote);
                }
            }
        }
        Err(error) => {
            out.put_u8(1);
            serde_json::to_writer(&mut out, error)?;
        }
    }
    Ok(out)
}

// ---- reading ----

/// Reads a record front to back; every read checks that the bytes are there.
struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::Malformed("truncated"));
        }
        Ok(self.bytes.split_to(n))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b[..].try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b[..].try_into().expect("8 bytes")))
    }

    fn tag(&mut self) -> Result<(), CodecError> {
        match self.u8()? {
            TAG => Ok(()),
            _ => Err(CodecError::Malformed("not a binary record")),
        }
    }

    fn log_id(&mut self) -> Result<LogId, CodecError> {
        let (term, node, index) = (self.u64()?, self.u64()?, self.u64()?);
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId>, CodecError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.log_id()?)),
            _ => Err(CodecError::Malformed("bad option")),
        }
    }

    fn vote(&mut self) -> Result<Vote<MemberId>, CodecError> {
        let (term, node) = (self.u64()?, self.u64()?);
        match self.u8()? {
            0 => Ok(Vote::new(term, node)),
            1 => Ok(Vote::new_committed(term, node)),
            _ => Err(CodecError::Malformed("bad vote")),
        }
    }

    fn entry(&mut self) -> Result<Entry, CodecError> {
        self.tag()?;
        let log_id = self.log_id()?;
        let kind = self.u8()?;
        let rest = std::mem::take(&mut self.bytes);
        let payload = match kind {
            BLANK => EntryPayload::Blank,
            NORMAL => EntryPayload::Normal(EncodedCommand(rest)),
            MEMBERSHIP => EntryPayload::Membership(serde_json::from_slice(&rest)?),
            _ => return Err(CodecError::Malformed("unknown entry kind")),
        };
        Ok(Entry { log_id, payload })
    }

    fn end(&self) -> Result<(), CodecError> {
        match self.bytes.is_empty() {
            true => Ok(()),
            false => Err(CodecError::Malformed("trailing bytes")),
        }
    }
}

/// An entry as [`encode_entry`] wrote it; the payload shares `record`.
pub fn decode_entry(record: Bytes) -> Result<Entry, CodecError> {
    Reader { bytes: record }.entry()
}

/// A log entry as stored: binary, or the JSON that versions before the binary encoding wrote.
pub fn decode_stored_entry(record: &[u8]) -> Result<Entry, CodecError> {
    if record.first() == Some(&TAG) {
        return decode_entry(Bytes::copy_from_slice(record));
    }
    let legacy: LegacyEntry = serde_json::from_slice(record)?;
    let payload = match legacy.payload {
        LegacyPayload::Blank => EntryPayload::Blank,
        LegacyPayload::Normal(command) => {
            EntryPayload::Normal(EncodedCommand(Bytes::from(serde_json::to_vec(&command)?)))
        }
        LegacyPayload::Membership(membership) => EntryPayload::Membership(membership),
    };
    Ok(Entry {
        log_id: legacy.log_id,
        payload,
    })
}

/// Only the log id of a stored entry (either encoding).
pub fn decode_stored_log_id(record: &[u8]) -> Result<LogId, CodecError> {
    if record.first() == Some(&TAG) {
        let mut reader = Reader {
            bytes: Bytes::copy_from_slice(&record[..record.len().min(1 + LOG_ID_BYTES)]),
        };
        reader.tag()?;
        return reader.log_id();
    }
    Ok(decode_stored_entry(record)?.log_id)
}

/// openraft's `Entry` as serde_json wrote it, its command a JSON value.
#[derive(serde::Deserialize)]
struct LegacyEntry {
    log_id: LogId,
    payload: LegacyPayload,
}

#[derive(serde::Deserialize)]
enum LegacyPayload {
    Blank,
    Normal(serde_json::Value),
    Membership(Membership<MemberId, BasicNode>),
}

/// The request; the entries' payloads share `message`.
pub fn decode_append_request(
    message: Bytes,
) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    let mut reader = Reader { bytes: message };
    reader.tag()?;
    let vote = reader.vote()?;
    let prev_log_id = reader.opt_log_id()?;
    let leader_commit = reader.opt_log_id()?;
    let count = reader.u32()? as usize;
    // Each entry takes at least its header: a bogus count cannot make a huge allocation.
    let mut entries = Vec::with_capacity(count.min(reader.bytes.len() / ENTRY_HEADER));
    for _ in 0..count {
        let len = reader.u32()? as usize;
        entries.push(decode_entry(reader.take(len)?)?);
    }
    reader.end()?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        leader_commit,
        entries,
    })
}

pub fn decode_append_response(
    message: Bytes,
) -> Result<Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>, CodecError> {
    let mut reader = Reader { bytes: message };
    reader.tag()?;
    if reader.u8()? == 1 {
        return Ok(Err(serde_json::from_slice(&reader.bytes)?));
    }
    let response = match reader.u8()? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(reader.opt_log_id()?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(reader.vote()?),
        _ => return Err(CodecError::Malformed("unknown append-entries response")),
    };
    reader.end()?;
    Ok(Ok(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::{Kind, ObjectKey};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn apply(name: &str) -> Command {
        Command::Apply {
            object: serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": {"value": "x\u{e9}\"\\", "n": 1.5},
            }),
            uid: format!("uid-{name}"),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn delete(name: &str) -> Command {
        Command::Delete {
            key: ObjectKey::new(Kind::ConfigMap, "default", name),
            resource_version: Some(7),
        }
    }

    fn membership() -> Membership<MemberId, BasicNode> {
        let nodes = BTreeMap::from([
            (1, BasicNode::new("127.0.0.1:1")),
            (2, BasicNode::new("127.0.0.1:2")),
        ]);
        Membership::new(vec![BTreeSet::from([1])], nodes)
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(2, 3, u64::MAX),
                payload: EntryPayload::Normal(EncodedCommand::new(&apply("a"))),
            },
        ]
    }

    #[test]
    fn a_batch_built_from_bytes_is_the_batch_command() {
        let parts = [apply("a"), delete("b"), Command::Batch(vec![apply("c")])];
        let encoded: Vec<EncodedCommand> = parts.iter().map(EncodedCommand::new).collect();
        let batch = EncodedCommand::batch(&encoded).decode().expect("decodes");
        assert_eq!(batch, Command::Batch(parts.to_vec()));
        let empty = EncodedCommand::batch(&[]).decode().expect("decodes");
        assert_eq!(empty, Command::Batch(Vec::new()));
    }

    #[test]
    fn entries_round_trip() {
        for entry in entries() {
            let record = encode_entry(&entry).expect("encodes");
            assert_eq!(record[0], TAG);
            let back = decode_stored_entry(&record).expect("decodes");
            assert_eq!(back, entry);
            assert_eq!(decode_stored_log_id(&record).expect("log id"), entry.log_id);
        }
    }

    /// A log written by the version that stored entries as serde_json of openraft's `Entry`
    /// with the command inline.
    #[test]
    fn json_entries_of_earlier_versions_still_read() {
        let command = apply("old");
        let stored = [
            (
                serde_json::json!({"log_id": log_id(3, 2, 9), "payload": {"Normal": command}}),
                EntryPayload::Normal(EncodedCommand::new(&command)),
            ),
            (
                serde_json::json!({"log_id": log_id(3, 2, 10), "payload": "Blank"}),
                EntryPayload::Blank,
            ),
            (
                serde_json::json!({"log_id": log_id(3, 2, 11), "payload": {"Membership": membership()}}),
                EntryPayload::Membership(membership()),
            ),
        ];
        for (json, payload) in stored {
            let record = serde_json::to_vec(&json).expect("json");
            let entry = decode_stored_entry(&record).expect("reads");
            assert_eq!(entry.log_id.leader_id.term, 3);
            if let (EntryPayload::Normal(read), EntryPayload::Normal(_)) =
                (&entry.payload, &payload)
            {
                assert_eq!(read.decode().expect("command"), command);
            } else {
                assert_eq!(entry.payload, payload);
            }
            let log_id = decode_stored_log_id(&record).expect("log id");
            assert_eq!(log_id, entry.log_id);
        }
    }

    #[test]
    fn append_requests_round_trip() {
        let mut vote = Vote::new(5, 2);
        let request = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            leader_commit: Some(log_id(4, 2, 17)),
            entries: entries(),
        };
        let back = decode_append_request(Bytes::from(encode_append_request(&request).unwrap()))
            .expect("decodes");
        assert_eq!(back.vote, request.vote);
        assert_eq!(back.prev_log_id, request.prev_log_id);
        assert_eq!(back.leader_commit, request.leader_commit);
        assert_eq!(back.entries, request.entries);

        vote.commit();
        let heartbeat = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(log_id(5, 2, 20)),
            leader_commit: None,
            entries: Vec::new(),
        };
        let back = decode_append_request(Bytes::from(encode_append_request(&heartbeat).unwrap()))
            .expect("decodes");
        assert_eq!(back.vote, vote);
        assert_eq!(back.prev_log_id, heartbeat.prev_log_id);
        assert!(back.entries.is_empty());
    }

    #[test]
    fn append_responses_round_trip() {
        let responses = || {
            [
                AppendEntriesResponse::Success,
                AppendEntriesResponse::PartialSuccess(None),
                AppendEntriesResponse::PartialSuccess(Some(log_id(1, 2, 3))),
                AppendEntriesResponse::Conflict,
                AppendEntriesResponse::HigherVote(Vote::new_committed(9, 3)),
            ]
        };
        for (response, expected) in responses().into_iter().zip(responses()) {
            let bytes = encode_append_response(&Ok(response)).unwrap();
            let back = decode_append_response(Bytes::from(bytes)).expect("decodes");
            assert_eq!(back.expect("ok"), expected);
        }
        let error = RaftError::Fatal(openraft::error::Fatal::Stopped);
        let bytes = encode_append_response(&Err(error.clone())).unwrap();
        let back = decode_append_response(Bytes::from(bytes)).expect("decodes");
        assert_eq!(back.expect_err("error"), error);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors_not_panics() {
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: entries(),
        };
        let bytes = encode_append_request(&request).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_append_request(Bytes::copy_from_slice(&bytes[..len])).is_err());
        }
        assert!(decode_append_request(Bytes::from_static(b"{\"vote\":1}")).is_err());
        assert!(decode_stored_entry(b"").is_err());
        assert!(decode_stored_entry(&[TAG, 1, 2]).is_err());
    }
}
