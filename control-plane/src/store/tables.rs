//! The object store's redb tables, written by the Raft state machine inside its transactions
//! and read by the API server.

use super::allocation;
use super::apply::{self, Command, CommandResult, Outcome, RegistryChanges, StoreError};
use super::registry::{self, RegistrySnapshot, RegistryTables};
use berth_proto::{Kind, ObjectKey, DEFAULT_NAMESPACE};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// Objects by storage key (`Kind/namespace/name`), as JSON.
pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Changes by revision, as JSON [`StoredEvent`]s; the oldest are dropped past the retention.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// The store's own counters: `revision`, `compacted` (newest revision no longer in EVENTS).
pub(crate) const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object, as watches see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub revision: u64,
    #[serde(rename = "type")]
    pub event_type: WatchEventType,
    pub key: ObjectKey,
    pub object: Value,
}

impl StoredEvent {
    /// The event's JSON, as serde writes it, with `object` (this event's object, already
    /// serialized) spliced in rather than serialized a second time.
    fn to_json_with_object(&self, object: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(object.len() + 128);
        out.extend_from_slice(b"{\"revision\":");
        out.extend_from_slice(self.revision.to_string().as_bytes());
        out.extend_from_slice(b",\"type\":");
        serde_json::to_writer(&mut out, &self.event_type).expect("event types serialise");
        out.extend_from_slice(b",\"key\":");
        serde_json::to_writer(&mut out, &self.key).expect("keys serialise");
        out.extend_from_slice(b",\"object\":");
        out.extend_from_slice(object);
        out.push(b'}');
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("store read failed: {0}")]
    Storage(String),
    #[error(
        "expired: relist (revision {requested} is older than the oldest retained change, {oldest})"
    )]
    Expired { requested: u64, oldest: u64 },
}

pub(crate) fn storage<E: std::fmt::Display>(e: E) -> ReadError {
    ReadError::Storage(e.to_string())
}

/// Read access to the objects, plus the write steps the state machine runs.
#[derive(Clone)]
pub struct ObjectStore {
    db: Arc<Database>,
    /// How many revisions of change history watches can resume from.
    retention: u64,
}

impl ObjectStore {
    pub fn new(db: Arc<Database>, retention: u64) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(STORE_META)?;
        registry::create_tables(&txn)?;
        txn.commit()?;
        Ok(ObjectStore {
            db,
            retention: retention.max(1),
        })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, ReadError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(OBJECTS).map_err(storage)?;
        Ok(table
            .get(key.storage_key().as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    /// Objects of one kind, in one namespace or all (`None`), sorted by namespace and name,
    /// with the revision they were read at.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Vec<u8>>, u64), ReadError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(OBJECTS).map_err(storage)?;
        let prefix = match namespace.filter(|_| kind.namespaced()) {
            Some(ns) => format!("{}/{}/", kind.as_str(), ns),
            None => format!("{}/", kind.as_str()),
        };
        let mut objects = Vec::new();
        for entry in table.range(prefix.as_str()..).map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            objects.push(value.value().to_vec());
        }
        let meta = txn.open_table(STORE_META).map_err(storage)?;
        let revision = counter(&meta, "revision").map_err(storage)?;
        Ok((objects, revision))
    }

    pub fn revision(&self) -> Result<u64, ReadError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(STORE_META).map_err(storage)?;
        counter(&meta, "revision").map_err(storage)
    }

    /// Changes after `from` (exclusive), oldest first; `Expired` when some of them are no
    /// longer retained.
    pub fn events_since(&self, from: u64) -> Result<Vec<StoredEvent>, ReadError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(STORE_META).map_err(storage)?;
        let compacted = counter(&meta, "compacted").map_err(storage)?;
        if from < compacted {
            return Err(ReadError::Expired {
                requested: from,
                oldest: compacted + 1,
            });
        }
        let table = txn.open_table(EVENTS).map_err(storage)?;
        let mut events = Vec::new();
        for entry in table.range(from + 1..).map_err(storage)? {
            let (_, value) = entry.map_err(storage)?;
            events.push(serde_json::from_slice(value.value()).map_err(storage)?);
        }
        Ok(events)
    }

    /// Applies one command inside the state machine's transaction; returns its result and the
    /// changes it made (for watches).
    pub fn apply(
        &self,
        txn: &WriteTransaction,
        command: Command,
    ) -> Result<(CommandResult, Vec<StoredEvent>), redb::Error> {
        let mut writer = Writer::open(txn)?;
        let result = writer.run(command)?;
        writer.finish(self.retention)?;
        Ok((result, writer.events))
    }

    /// Every object and the revision as of `txn`, for a Raft snapshot.
    pub fn export(&self, txn: &redb::ReadTransaction) -> Result<StoreSnapshot, ReadError> {
        let table = txn.open_table(OBJECTS).map_err(storage)?;
        let mut objects = Vec::with_capacity(table.len().map_err(storage)? as usize);
        for entry in table.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            objects.push((
                key.value().to_string(),
                serde_json::from_slice(value.value()).map_err(storage)?,
            ));
        }
        let meta = txn.open_table(STORE_META).map_err(storage)?;
        let revision = counter(&meta, "revision").map_err(storage)?;
        let registry = registry::export(txn)?;
        Ok(StoreSnapshot {
            revision,
            objects,
            registry,
        })
    }

    /// Replaces everything with a snapshot's content. The change history is dropped: watches
    /// from before the snapshot must relist.
    pub fn import(
        &self,
        txn: &WriteTransaction,
        snapshot: &StoreSnapshot,
    ) -> Result<(), redb::Error> {
        txn.delete_table(OBJECTS)?;
        txn.delete_table(EVENTS)?;
        let mut objects = txn.open_table(OBJECTS)?;
        txn.open_table(EVENTS)?;
        for (key, value) in &snapshot.objects {
            objects.insert(
                key.as_str(),
                serde_json::to_vec(value)
                    .expect("JSON values serialise")
                    .as_slice(),
            )?;
        }
        let mut meta = txn.open_table(STORE_META)?;
        meta.insert("revision", snapshot.revision)?;
        meta.insert("compacted", snapshot.revision)?;
        registry::import(txn, &snapshot.registry)?;
        Ok(())
    }
}

/// A counter in STORE_META; absent means 0.
fn counter(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, redb::StorageError> {
    Ok(table.get(name)?.map(|v| v.value()).unwrap_or(0))
}

/// The object store's part of a Raft snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub revision: u64,
    pub objects: Vec<(String, Value)>,
    /// Absent in snapshots taken before the registry existed.
    #[serde(default)]
    pub registry: RegistrySnapshot,
}

/// The tables of one state-machine transaction.
struct Writer<'t> {
    objects: redb::Table<'t, &'static str, &'static [u8]>,
    events_table: redb::Table<'t, u64, &'static [u8]>,
    meta: redb::Table<'t, &'static str, u64>,
    registry: RegistryTables<'t>,
    revision: u64,
    events: Vec<StoredEvent>,
}

type Decided = Result<CommandResult, StoreError>;

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        let meta = txn.open_table(STORE_META)?;
        let revision = counter(&meta, "revision")?;
        Ok(Writer {
            objects: txn.open_table(OBJECTS)?,
            events_table: txn.open_table(EVENTS)?,
            meta,
            registry: RegistryTables::open(txn)?,
            revision,
            events: Vec::new(),
        })
    }

    fn read(&self, key: &ObjectKey) -> Result<Option<Value>, redb::Error> {
        Ok(match self.objects.get(key.storage_key().as_str())? {
            Some(bytes) => Some(
                serde_json::from_slice(bytes.value())
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?,
            ),
            None => None,
        })
    }

    fn run(&mut self, command: Command) -> Result<CommandResult, redb::Error> {
        let decided = match command {
            Command::Apply { object, uid, now } => self.apply(object, &uid, &now)?,
            Command::Delete {
                key,
                resource_version,
            } => self.delete(&key, resource_version)?,
            Command::UpdateStatus {
                key,
                status,
                resource_version,
                uid,
            } => self.update_status(&key, status, resource_version, uid.as_deref())?,
            Command::Bind { key, uid, node } => {
                let existing = self.read(&key)?;
                match apply::decide_bind(&key, existing.as_ref(), &uid, &node, self.revision + 1) {
                    Err(error) => Err(error),
                    Ok(object) => {
                        self.write(&key, WatchEventType::Modified, &object)?;
                        Ok(CommandResult::Applied {
                            outcome: Outcome::Configured,
                            object,
                        })
                    }
                }
            }
            Command::Batch(commands) => {
                let results = commands
                    .into_iter()
                    .map(|c| self.run(c))
                    .collect::<Result<_, _>>()?;
                Ok(CommandResult::Batch(results))
            }
            Command::RegistryPutManifest {
                repository,
                digest,
                media_type,
                content,
                tag,
            } => {
                let stored = self.registry.manifest(&repository, &digest)?;
                let tagged = match &tag {
                    Some(tag) => self.registry.tag(&repository, tag)?,
                    None => None,
                };
                let decided = apply::decide_put_manifest(
                    &repository,
                    &digest,
                    &media_type,
                    &content,
                    tag.as_deref(),
                    stored.as_ref(),
                    tagged.as_deref(),
                );
                self.write_registry(&repository, &digest, decided)?
            }
            Command::RegistryDeleteManifest { repository, digest } => {
                let stored = self.registry.manifest(&repository, &digest)?.is_some();
                let tags = self.registry.tags(&repository)?;
                let decided = apply::decide_delete_manifest(&repository, &digest, stored, &tags);
                self.write_registry(&repository, &digest, decided)?
            }
            Command::RegistryDeleteTag { repository, tag } => {
                let tagged = self.registry.tag(&repository, &tag)?;
                let decided = apply::decide_delete_tag(&repository, &tag, tagged.as_deref());
                let digest = tagged.unwrap_or_default();
                self.write_registry(&repository, &digest, decided)?
            }
        };
        Ok(decided.unwrap_or_else(CommandResult::Failed))
    }

    fn write_registry(
        &mut self,
        repository: &str,
        digest: &str,
        decided: Result<RegistryChanges, StoreError>,
    ) -> Result<Decided, redb::Error> {
        let changes = match decided {
            Ok(changes) => changes,
            Err(error) => return Ok(Err(error)),
        };
        self.registry.write(repository, digest, &changes)?;
        Ok(Ok(CommandResult::Registry {
            changed: !changes.is_empty(),
        }))
    }

    fn update_status(
        &mut self,
        key: &ObjectKey,
        status: Value,
        expected: Option<u64>,
        uid: Option<&str>,
    ) -> Result<Decided, redb::Error> {
        let existing = self.read(key)?;
        let decided = apply::decide_update_status(
            key,
            existing.as_ref(),
            status,
            expected,
            uid,
            self.revision + 1,
        );
        Ok(match decided {
            Err(error) => Err(error),
            Ok(None) => Ok(CommandResult::Applied {
                outcome: Outcome::Unchanged,
                object: existing.expect("unchanged objects exist"),
            }),
            Ok(Some(object)) => {
                self.write(key, WatchEventType::Modified, &object)?;
                Ok(CommandResult::Applied {
                    outcome: Outcome::Configured,
                    object,
                })
            }
        })
    }

    /// A node registered without a pod subnet gets one: the one it had, or the lowest free.
    fn assign_pod_cidr(&self, key: &ObjectKey, object: &mut Value) -> Result<(), redb::Error> {
        let given = object.pointer("/spec/podCIDR").and_then(Value::as_str);
        if key.kind != Kind::Node || given.is_some_and(|c| !c.is_empty()) {
            return Ok(());
        }
        let existing = self.read(key)?;
        let kept = existing
            .as_ref()
            .and_then(|n| n.pointer("/spec/podCIDR"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let cidr = match kept {
            Some(cidr) => Some(cidr),
            None => {
                let prefix = format!("{}//", Kind::Node.as_str());
                let mut used = Vec::new();
                for entry in self.objects.range(prefix.as_str()..)? {
                    let (k, v) = entry?;
                    if !k.value().starts_with(&prefix) {
                        break;
                    }
                    let node: Value = serde_json::from_slice(v.value())
                        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    if let Some(c) = node.pointer("/spec/podCIDR").and_then(Value::as_str) {
                        used.push(c.to_string());
                    }
                }
                apply::allocate_pod_cidr(used.iter().map(String::as_str))
            }
        };
        if let Some(cidr) = cidr {
            if !object["spec"].is_object() {
                object["spec"] = serde_json::json!({});
            }
            object["spec"]["podCIDR"] = cidr.clone().into();
            object["spec"]["podCIDRs"] = serde_json::json!([cidr]);
        }
        Ok(())
    }

    fn apply(&mut self, mut object: Value, uid: &str, now: &str) -> Result<Decided, redb::Error> {
        let key = match object_key(&object) {
            Ok(key) => key,
            Err(error) => return Ok(Err(error)),
        };
        self.assign_pod_cidr(&key, &mut object)?;
        if key.kind.namespaced() && !self.namespace_exists(&key.namespace)? {
            return Ok(Err(StoreError::NamespaceNotFound {
                namespace: key.namespace,
            }));
        }
        let existing = self.read(&key)?;
        if key.kind == Kind::Service {
            // ClusterIPs and nodePorts: kept, and never two Services' (see store::allocation).
            let admitted =
                allocation::admit_stored(&self.objects, &key, existing.as_ref(), &mut object)?;
            if let Err(error) = admitted {
                return Ok(Err(error));
            }
        }
        let decided =
            apply::decide_apply(&key, existing.as_ref(), object, uid, now, self.revision + 1);
        Ok(match decided {
            Err(error) => Err(error),
            Ok((outcome, None)) => Ok(CommandResult::Applied {
                outcome,
                object: existing.expect("unchanged objects exist"),
            }),
            Ok((outcome, Some(object))) => {
                let event_type = if existing.is_some() {
                    WatchEventType::Modified
                } else {
                    WatchEventType::Added
                };
                self.write(&key, event_type, &object)?;
                Ok(CommandResult::Applied { outcome, object })
            }
        })
    }

    fn delete(&mut self, key: &ObjectKey, expected: Option<u64>) -> Result<Decided, redb::Error> {
        if key.kind == Kind::Namespace && key.name == DEFAULT_NAMESPACE {
            return Ok(Err(StoreError::Invalid(
                "the default namespace cannot be deleted".into(),
            )));
        }
        let existing = self.read(key)?;
        if let Err(error) = apply::decide_delete(key, existing.as_ref(), expected) {
            return Ok(Err(error));
        }
        if key.kind == Kind::Namespace {
            // A namespace takes its objects with it.
            for kind in Kind::ALL.iter().filter(|k| k.namespaced()) {
                let prefix = format!("{}/{}/", kind.as_str(), key.name);
                let mut doomed = Vec::new();
                for entry in self.objects.range(prefix.as_str()..)? {
                    let (stored_key, _) = entry?;
                    if !stored_key.value().starts_with(&prefix) {
                        break;
                    }
                    doomed.push(stored_key.value().to_string());
                }
                for stored_key in doomed {
                    let inner =
                        ObjectKey::from_storage_key(&stored_key).expect("stored keys parse");
                    let object = self.read(&inner)?.expect("listed just now");
                    self.remove(&inner, object)?;
                }
            }
        }
        let object = self.remove(key, existing.expect("decide_delete checked existence"))?;
        Ok(Ok(CommandResult::Deleted { object }))
    }

    fn namespace_exists(&self, namespace: &str) -> Result<bool, redb::Error> {
        Ok(self
            .objects
            .get(
                ObjectKey::new(Kind::Namespace, "", namespace)
                    .storage_key()
                    .as_str(),
            )?
            .is_some())
    }

    fn write(
        &mut self,
        key: &ObjectKey,
        event_type: WatchEventType,
        object: &Value,
    ) -> Result<(), redb::Error> {
        self.revision += 1;
        let bytes = serde_json::to_vec(object).expect("JSON values serialise");
        self.objects
            .insert(key.storage_key().as_str(), bytes.as_slice())?;
        self.record(key, event_type, object.clone(), Some(&bytes))
    }

    fn remove(&mut self, key: &ObjectKey, mut object: Value) -> Result<Value, redb::Error> {
        self.revision += 1;
        self.objects.remove(key.storage_key().as_str())?;
        // Like Kubernetes, the deleted object carries the revision of its deletion.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), self.revision.to_string().into());
        }
        self.record(key, WatchEventType::Deleted, object.clone(), None)?;
        Ok(object)
    }

    /// `object_json`: the object as JSON, if already serialized.
    fn record(
        &mut self,
        key: &ObjectKey,
        event_type: WatchEventType,
        object: Value,
        object_json: Option<&[u8]>,
    ) -> Result<(), redb::Error> {
        let event = StoredEvent {
            revision: self.revision,
            event_type,
            key: key.clone(),
            object,
        };
        let bytes = match object_json {
            Some(object) => event.to_json_with_object(object),
            None => serde_json::to_vec(&event).expect("events serialise"),
        };
        self.events_table.insert(self.revision, bytes.as_slice())?;
        self.events.push(event);
        Ok(())
    }

    fn finish(&mut self, retention: u64) -> Result<(), redb::Error> {
        self.meta.insert("revision", self.revision)?;
        let compacted = counter(&self.meta, "compacted")?;
        let keep_from = self.revision.saturating_sub(retention);
        // In steps of a sixteenth of the retention, not one change at a time: a range delete
        // costs about the same for one event as for many.
        if keep_from >= compacted + (retention / 16).max(1) {
            self.events_table.retain_in(..=keep_from, |_, _| false)?;
            self.meta.insert("compacted", keep_from)?;
        }
        Ok(())
    }
}

/// Where an incoming object goes; the API server has already validated and defaulted it.
fn object_key(object: &Value) -> Result<ObjectKey, StoreError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let kind = Kind::from_manifest(api_version, kind_name)
        .ok_or_else(|| StoreError::Invalid(format!("unknown kind {api_version}/{kind_name}")))?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(StoreError::Invalid("metadata.name is required".into()));
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE);
    Ok(ObjectKey::new(kind, namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_event_is_what_serde_writes() {
        let event = StoredEvent {
            revision: 42,
            event_type: WatchEventType::Modified,
            key: ObjectKey::new(Kind::ConfigMap, "default", "a\"b"),
            object: serde_json::json!({"metadata": {"name": "a\"b"}, "data": {"v": "\u{e9}"}}),
        };
        let object = serde_json::to_vec(&event.object).expect("object");
        let spliced = event.to_json_with_object(&object);
        assert_eq!(spliced, serde_json::to_vec(&event).expect("event"));
        let back: StoredEvent = serde_json::from_slice(&spliced).expect("parses");
        assert_eq!(back, event);
    }
}
