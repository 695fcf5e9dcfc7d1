//! What a write does to the store, decided without IO.
//!
//! The API server turns a request into a [`Command`] (uid and timestamp chosen there, so that
//! every Raft member applies the same bytes to the same result); the state machine asks
//! [`decide_apply`] / [`decide_delete`] what to write and stores that. The registry's
//! manifests and tags follow the same pattern ([`decide_put_manifest`] and the deletes).

use berth_proto::{Kind, ObjectKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// One entry of the Raft log's application data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or update an object (kubectl apply). A `metadata.resourceVersion` in the object
    /// makes the update conditional on it.
    Apply {
        object: Value,
        /// The uid the object gets if this creates it.
        uid: String,
        /// RFC 3339 time of the request, for creationTimestamp.
        now: String,
    },
    /// Delete an object; with a resource version, only if it is still that version.
    Delete {
        key: ObjectKey,
        resource_version: Option<u64>,
    },
    /// Replace an object's status (the status subresource: what agents and controllers
    /// report). Spec, metadata and generation stay as they are.
    UpdateStatus {
        key: ObjectKey,
        status: Value,
        /// Only if the object is still this version.
        resource_version: Option<u64>,
        /// Only if the object is still this one, not a namesake made since.
        #[serde(default)]
        uid: Option<String>,
    },
    /// Place a pending pod on a node (the scheduler's write): sets `spec.nodeName` if the pod
    /// is still this one (`uid`) and still unbound.
    Bind {
        key: ObjectKey,
        uid: String,
        node: String,
    },
    /// Several commands proposed together (one Raft entry, one fsync), applied in order, each
    /// with its own result.
    Batch(Vec<Command>),
    /// Store a registry manifest (its exact bytes) in a repository, and point `tag` at it.
    /// Proposed only once every blob it references is held by a majority of the members.
    RegistryPutManifest {
        repository: String,
        /// `sha256:<hex>` of `content`.
        digest: String,
        media_type: String,
        /// Manifests are JSON, so UTF-8: kept as a string, byte for byte.
        content: String,
        tag: Option<String>,
    },
    /// Remove a manifest from a repository, with every tag that points at it.
    RegistryDeleteManifest { repository: String, digest: String },
    /// Remove one tag; the manifest stays, reachable by digest.
    RegistryDeleteTag { repository: String, tag: String },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Apply { object, .. } => {
                let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                write!(f, "apply {kind}/{name}")
            }
            Command::Delete { key, .. } => write!(f, "delete {}", key.storage_key()),
            Command::UpdateStatus { key, .. } => write!(f, "status {}", key.storage_key()),
            Command::Bind { key, node, .. } => write!(f, "bind {} to {node}", key.storage_key()),
            Command::Batch(commands) => write!(f, "batch of {}", commands.len()),
            Command::RegistryPutManifest {
                repository,
                digest,
                tag,
                ..
            } => match tag {
                Some(tag) => write!(f, "registry put {repository}:{tag}@{digest}"),
                None => write!(f, "registry put {repository}@{digest}"),
            },
            Command::RegistryDeleteManifest { repository, digest } => {
                write!(f, "registry delete {repository}@{digest}")
            }
            Command::RegistryDeleteTag { repository, tag } => {
                write!(f, "registry delete {repository}:{tag}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    /// kubectl's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// What applying one log entry produced; returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Entries that carry no command (blank, membership).
    None,
    Applied {
        outcome: Outcome,
        object: Value,
    },
    Deleted {
        object: Value,
    },
    Failed(StoreError),
    /// The results of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResult>),
    /// A registry command succeeded; `changed` is false when it found everything as asked
    /// (the same manifest pushed again).
    Registry {
        changed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {key} was modified (resourceVersion {actual}, not {expected}); get it again and reapply your change")]
    Conflict {
        key: ObjectKey,
        expected: u64,
        actual: u64,
    },
    #[error("conflict: {key} does not exist any more (the update was based on resourceVersion {expected})")]
    Gone { key: ObjectKey, expected: u64 },
    #[error("{key} not found")]
    NotFound { key: ObjectKey },
    #[error("namespace {namespace:?} not found: create it first (kind: Namespace)")]
    NamespaceNotFound { namespace: String },
    #[error("{key} is already bound to node {node}")]
    AlreadyBound { key: ObjectKey, node: String },
    #[error("invalid object: {0}")]
    Invalid(String),
    /// A Service's clusterIP or nodePort refused (see [`super::allocation`]).
    #[error("{key} is invalid:\n{problem}")]
    ServiceField {
        key: ObjectKey,
        problem: Box<super::allocation::FieldProblem>,
    },
    #[error("manifest {repository}:{reference} not found")]
    ManifestUnknown {
        repository: String,
        reference: String,
    },
}

/// Fields the server owns: a client's values for them are ignored on update.
/// Annotation prefixes the controllers write on objects users apply.
const CONTROLLER_ANNOTATIONS: &[&str] = &["deployment.kubernetes.io/"];

const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// Kinds whose metadata.generation counts changes to their spec.
fn has_generation(kind: Kind) -> bool {
    !matches!(kind, Kind::ConfigMap | Kind::Secret | Kind::Event)
}

/// The object a status update stores, or `None` when the status is already that.
pub fn decide_update_status(
    key: &ObjectKey,
    existing: Option<&Value>,
    status: Value,
    expected: Option<u64>,
    uid: Option<&str>,
    revision: u64,
) -> Result<Option<Value>, StoreError> {
    let Some(existing) = existing else {
        return Err(StoreError::NotFound { key: key.clone() });
    };
    // The object reported on was deleted and a namesake created: for the reporter, it is gone.
    if uid.is_some_and(|uid| existing.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid))
    {
        return Err(StoreError::NotFound { key: key.clone() });
    }
    let actual = resource_version(existing);
    if let Some(expected) = expected.filter(|e| *e != actual) {
        return Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual,
        });
    }
    if !status.is_object() {
        return Err(StoreError::Invalid("status must be an object".into()));
    }
    if eq_without_nulls(&status, existing.get("status").unwrap_or(&Value::Null)) {
        return Ok(None);
    }
    let mut updated = existing.clone();
    updated["status"] = status;
    metadata_mut(&mut updated).insert("resourceVersion".into(), revision.to_string().into());
    Ok(Some(updated))
}

/// The pod a bind stores: `existing` with `spec.nodeName` set to `node`. Fails (for this
/// binding only) if the pod is gone, was replaced by a namesake, or is bound already: the
/// scheduler decided from a snapshot that may be a little behind.
pub fn decide_bind(
    key: &ObjectKey,
    existing: Option<&Value>,
    uid: &str,
    node: &str,
    revision: u64,
) -> Result<Value, StoreError> {
    let not_found = || StoreError::NotFound { key: key.clone() };
    let existing = existing.ok_or_else(not_found)?;
    if key.kind != Kind::Pod {
        return Err(StoreError::Invalid(format!(
            "only pods are bound to nodes, not {}",
            key.kind.as_str()
        )));
    }
    if node.is_empty() {
        return Err(StoreError::Invalid("a binding needs a node name".into()));
    }
    if existing.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
        return Err(not_found());
    }
    if let Some(bound) = existing
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(StoreError::AlreadyBound {
            key: key.clone(),
            node: bound.to_string(),
        });
    }
    let mut bound = existing.clone();
    let root = bound.as_object_mut().expect("objects are maps");
    let spec = root
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    if !spec.is_object() {
        *spec = Value::Object(Default::default());
    }
    spec.as_object_mut()
        .expect("just made a map")
        .insert("nodeName".into(), node.into());
    metadata_mut(&mut bound).insert("resourceVersion".into(), revision.to_string().into());
    Ok(bound)
}

/// The network all nodes' pod subnets come from (Kubernetes' default), one /24 per node.
pub const POD_NETWORK: (u8, u8) = (10, 244);

/// The lowest /24 of the pod network no node has yet, as `10.244.N.0/24`.
pub fn allocate_pod_cidr<'a>(used: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let used: std::collections::BTreeSet<&str> = used.into_iter().collect();
    (0..=255u16)
        .map(|n| format!("{}.{}.{n}.0/24", POD_NETWORK.0, POD_NETWORK.1))
        .find(|cidr| !used.contains(cidr.as_str()))
}

/// The object an apply stores, or `None` when it changes nothing (`unchanged`).
///
/// `existing` is the stored object, `incoming` the client's (namespace already defaulted),
/// `revision` the store revision this write will get if it writes.
pub fn decide_apply(
    key: &ObjectKey,
    existing: Option<&Value>,
    mut incoming: Value,
    uid: &str,
    now: &str,
    revision: u64,
) -> Result<(Outcome, Option<Value>), StoreError> {
    let expected = incoming
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                StoreError::Invalid(format!(
                    "metadata.resourceVersion: {v:?} is not a resource version"
                ))
            })
        })
        .transpose()?;
    let Some(existing) = existing else {
        if let Some(expected) = expected {
            return Err(StoreError::Gone {
                key: key.clone(),
                expected,
            });
        }
        let meta = metadata_mut(&mut incoming);
        for field in SERVER_METADATA {
            meta.remove(*field);
        }
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), now.into());
        if has_generation(key.kind) {
            meta.insert("generation".into(), 1.into());
        }
        meta.insert("resourceVersion".into(), revision.to_string().into());
        return Ok((Outcome::Created, Some(incoming)));
    };

    let actual = resource_version(existing);
    if let Some(expected) = expected {
        if expected != actual {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            });
        }
    }
    // Server-owned metadata and status come from what is stored; everything else from the client.
    let existing_meta = existing
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = metadata_mut(&mut incoming);
    for field in SERVER_METADATA {
        match existing_meta.get(*field) {
            Some(value) => meta.insert(field.to_string(), value.clone()),
            None => meta.remove(*field),
        };
    }
    // Annotations the controllers own (a Deployment's revision) survive an apply that does
    // not name them, as kubectl apply's merge keeps them; otherwise every re-apply of an
    // unchanged manifest would be a change.
    let owned: Vec<(String, Value)> = existing_meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| CONTROLLER_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !owned.is_empty() {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if !annotations.is_object() {
            *annotations = Value::Object(Default::default());
        }
        let annotations = annotations.as_object_mut().expect("made an object");
        for (k, v) in owned {
            annotations.entry(k).or_insert(v);
        }
    }
    match existing.get("status") {
        Some(status) => incoming
            .as_object_mut()
            .expect("objects are maps")
            .insert("status".into(), status.clone()),
        None => incoming
            .as_object_mut()
            .expect("objects are maps")
            .remove("status"),
    };
    if eq_without_nulls(&incoming, existing) {
        return Ok((Outcome::Unchanged, None));
    }
    if has_generation(key.kind) && !eq_without_nulls(&incoming["spec"], &existing["spec"]) {
        let generation = existing
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(&mut incoming).insert("generation".into(), (generation + 1).into());
    }
    metadata_mut(&mut incoming).insert("resourceVersion".into(), revision.to_string().into());
    Ok((Outcome::Configured, Some(incoming)))
}

/// Checks a delete against the stored object.
pub fn decide_delete(
    key: &ObjectKey,
    existing: Option<&Value>,
    expected: Option<u64>,
) -> Result<(), StoreError> {
    let existing = existing.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
    let actual = resource_version(existing);
    match expected {
        Some(expected) if expected != actual => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// A registry manifest as stored: its media type and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredManifest {
    pub media_type: String,
    pub content: String,
}

/// What a registry command changes in one repository.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegistryChanges {
    /// Store this manifest under the command's digest.
    pub manifest: Option<StoredManifest>,
    /// Point this tag at the command's digest.
    pub tag: Option<String>,
    /// Remove these tags.
    pub untag: Vec<String>,
    /// Remove the manifest with the command's digest.
    pub remove_manifest: bool,
}

impl RegistryChanges {
    pub fn is_empty(&self) -> bool {
        *self == RegistryChanges::default()
    }
}

/// What storing a manifest changes. The API server has validated the manifest; the rules a
/// log entry must meet whatever proposed it (names, and content matching the digest) are
/// checked again here.
pub fn decide_put_manifest(
    repository: &str,
    digest: &str,
    media_type: &str,
    content: &str,
    tag: Option<&str>,
    stored: Option<&StoredManifest>,
    tagged: Option<&str>,
) -> Result<RegistryChanges, StoreError> {
    if !crate::registry::names::valid_repository(repository) {
        return Err(StoreError::Invalid(format!(
            "{repository:?} is not a valid repository name"
        )));
    }
    if let Some(tag) = tag.filter(|t| !crate::registry::names::valid_tag(t)) {
        return Err(StoreError::Invalid(format!("{tag:?} is not a valid tag")));
    }
    let actual = berth_image::store::digest_of(content.as_bytes());
    if actual.to_string() != digest {
        return Err(StoreError::Invalid(format!(
            "manifest content has digest {actual}, not {digest}"
        )));
    }
    Ok(RegistryChanges {
        manifest: stored.is_none().then(|| StoredManifest {
            media_type: media_type.to_string(),
            content: content.to_string(),
        }),
        tag: tag.filter(|_| tagged != Some(digest)).map(str::to_string),
        ..RegistryChanges::default()
    })
}

/// Removing a manifest removes the tags that point at it: a tag never dangles.
/// `tags` are the repository's tags and the digests they point at.
pub fn decide_delete_manifest(
    repository: &str,
    digest: &str,
    stored: bool,
    tags: &[(String, String)],
) -> Result<RegistryChanges, StoreError> {
    if !stored {
        return Err(StoreError::ManifestUnknown {
            repository: repository.to_string(),
            reference: digest.to_string(),
        });
    }
    Ok(RegistryChanges {
        untag: tags
            .iter()
            .filter(|(_, target)| target == digest)
            .map(|(tag, _)| tag.clone())
            .collect(),
        remove_manifest: true,
        ..RegistryChanges::default()
    })
}

/// Removing a tag leaves its manifest in place.
pub fn decide_delete_tag(
    repository: &str,
    tag: &str,
    tagged: Option<&str>,
) -> Result<RegistryChanges, StoreError> {
    if tagged.is_none() {
        return Err(StoreError::ManifestUnknown {
            repository: repository.to_string(),
            reference: tag.to_string(),
        });
    }
    Ok(RegistryChanges {
        untag: vec![tag.to_string()],
        ..RegistryChanges::default()
    })
}

pub fn resource_version(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    let root = object.as_object_mut().expect("objects are maps");
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    meta.as_object_mut().expect("just made a map")
}

/// Kubernetes' types serialise absent optional fields as null in a few places: compares
/// objects as if those were absent. Without copying them: every apply compares.
fn eq_without_nulls(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let present = |map: &serde_json::Map<String, Value>| {
                map.values().filter(|v| !v.is_null()).count()
            };
            present(a) == present(b)
                && a.iter()
                    .filter(|(_, v)| !v.is_null())
                    .all(|(k, v)| b.get(k).is_some_and(|w| eq_without_nulls(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq_without_nulls(x, y))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Deployment, "default", "web")
    }

    fn deployment(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"replicas": replicas}})
    }

    #[test]
    fn nulls_compare_as_absent() {
        let same = [
            (json!({"a": 1, "b": null}), json!({"a": 1})),
            (json!({"a": {"b": null}}), json!({"a": {}})),
            (json!([{"a": null}, 2]), json!([{}, 2])),
            (json!(null), json!(null)),
        ];
        for (a, b) in same {
            assert!(
                eq_without_nulls(&a, &b) && eq_without_nulls(&b, &a),
                "{a} vs {b}"
            );
        }
        let different = [
            (json!({"a": 1}), json!({"a": 2})),
            (json!({"a": 1}), json!({"b": 1})),
            (json!({"a": 1, "b": null}), json!({"b": 1})),
            (json!({"a": {}}), json!({"a": null})),
            (json!([1]), json!([1, null])),
            (json!({"a": 1}), json!(null)),
            (json!(1), json!(1.0)),
        ];
        for (a, b) in different {
            assert!(
                !eq_without_nulls(&a, &b) && !eq_without_nulls(&b, &a),
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn create_sets_server_fields() {
        let (outcome, object) = decide_apply(
            &key(),
            None,
            deployment(1),
            "u-1",
            "2026-01-01T00:00:00Z",
            7,
        )
        .unwrap();
        let object = object.unwrap();
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(object["metadata"]["uid"], "u-1");
        assert_eq!(
            object["metadata"]["creationTimestamp"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(object["metadata"]["generation"], 1);
        assert_eq!(object["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn controller_annotations_survive_a_reapply() {
        let (_, stored) = decide_apply(&key(), None, deployment(1), "u-1", "t0", 7).unwrap();
        let mut stored = stored.unwrap();
        stored["metadata"]["annotations"] =
            serde_json::json!({"deployment.kubernetes.io/revision": "2"});
        let (outcome, object) =
            decide_apply(&key(), Some(&stored), deployment(1), "u-2", "t1", 8).unwrap();
        assert_eq!((outcome, object), (Outcome::Unchanged, None));
        let (_, object) =
            decide_apply(&key(), Some(&stored), deployment(3), "u-2", "t1", 8).unwrap();
        assert_eq!(
            object.unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
    }

    #[test]
    fn same_object_is_unchanged_and_spec_change_bumps_generation() {
        let (_, stored) = decide_apply(&key(), None, deployment(1), "u-1", "t0", 7).unwrap();
        let stored = stored.unwrap();
        let (outcome, object) =
            decide_apply(&key(), Some(&stored), deployment(1), "u-2", "t1", 8).unwrap();
        assert_eq!((outcome, object), (Outcome::Unchanged, None));

        let (outcome, object) =
            decide_apply(&key(), Some(&stored), deployment(3), "u-2", "t1", 8).unwrap();
        let object = object.unwrap();
        assert_eq!(outcome, Outcome::Configured);
        assert_eq!(object["metadata"]["uid"], "u-1", "uid survives updates");
        assert_eq!(object["metadata"]["creationTimestamp"], "t0");
        assert_eq!(object["metadata"]["generation"], 2);
        assert_eq!(object["metadata"]["resourceVersion"], "8");
    }

    #[test]
    fn label_change_configures_without_new_generation() {
        let (_, stored) = decide_apply(&key(), None, deployment(1), "u", "t", 3).unwrap();
        let mut relabelled = deployment(1);
        relabelled["metadata"]["labels"]["tier"] = json!("front");
        let (outcome, object) =
            decide_apply(&key(), stored.as_ref(), relabelled, "u", "t", 4).unwrap();
        assert_eq!(outcome, Outcome::Configured);
        assert_eq!(object.unwrap()["metadata"]["generation"], 1);
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let (_, stored) = decide_apply(&key(), None, deployment(1), "u", "t", 3).unwrap();
        let mut update = deployment(2);
        update["metadata"]["resourceVersion"] = json!("2");
        let error = decide_apply(&key(), stored.as_ref(), update.clone(), "u", "t", 4).unwrap_err();
        assert_eq!(
            error,
            StoreError::Conflict {
                key: key(),
                expected: 2,
                actual: 3
            }
        );
        update["metadata"]["resourceVersion"] = json!("3");
        assert!(decide_apply(&key(), stored.as_ref(), update.clone(), "u", "t", 4).is_ok());
        assert!(matches!(
            decide_apply(&key(), None, update, "u", "t", 4),
            Err(StoreError::Gone { .. })
        ));
    }

    #[test]
    fn status_update_replaces_status_only() {
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "4", "generation": 1}, "spec": {"nodeName": "n1"}});
        let updated =
            decide_update_status(&key, Some(&pod), json!({"phase": "Running"}), None, None, 5)
                .unwrap()
                .unwrap();
        assert_eq!(updated["status"]["phase"], "Running");
        assert_eq!(updated["spec"], pod["spec"]);
        assert_eq!(updated["metadata"]["resourceVersion"], "5");
        assert_eq!(updated["metadata"]["generation"], 1);
        // The same status again writes nothing; a stale version conflicts; a missing object is not found.
        assert_eq!(
            decide_update_status(
                &key,
                Some(&updated),
                json!({"phase": "Running"}),
                None,
                None,
                6
            ),
            Ok(None)
        );
        assert!(matches!(
            decide_update_status(&key, Some(&updated), json!({}), Some(4), None, 6),
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            decide_update_status(&key, None, json!({}), None, None, 6),
            Err(StoreError::NotFound { .. })
        ));
        // A namesake (another uid) is not the object the status was for.
        let pod =
            json!({"kind": "Pod", "metadata": {"name": "p", "uid": "new", "resourceVersion": "7"}});
        assert!(matches!(
            decide_update_status(&key, Some(&pod), json!({}), None, Some("old"), 8),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn bind_sets_node_name_once() {
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "uid": "u1", "resourceVersion": "4", "generation": 1},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let bound = decide_bind(&key, Some(&pod), "u1", "node-1", 5).unwrap();
        assert_eq!(bound["spec"]["nodeName"], "node-1");
        assert_eq!(bound["spec"]["containers"], pod["spec"]["containers"]);
        assert_eq!(bound["metadata"]["resourceVersion"], "5");
        assert_eq!(bound["metadata"]["generation"], 1);
        // Bound already (by another pass, or by hand): this binding fails, the first stands.
        assert_eq!(
            decide_bind(&key, Some(&bound), "u1", "node-2", 6),
            Err(StoreError::AlreadyBound {
                key: key.clone(),
                node: "node-1".into()
            })
        );
        // An empty nodeName is unbound.
        let mut unbound = pod.clone();
        unbound["spec"]["nodeName"] = json!("");
        assert!(decide_bind(&key, Some(&unbound), "u1", "node-2", 6).is_ok());
    }

    #[test]
    fn bind_needs_the_same_pod() {
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "uid": "new", "resourceVersion": "4"}, "spec": {}});
        assert_eq!(
            decide_bind(&key, None, "old", "node-1", 5),
            Err(StoreError::NotFound { key: key.clone() })
        );
        assert_eq!(
            decide_bind(&key, Some(&pod), "old", "node-1", 5),
            Err(StoreError::NotFound { key: key.clone() })
        );
        let config_map = ObjectKey::new(Kind::ConfigMap, "default", "p");
        assert!(matches!(
            decide_bind(&config_map, Some(&pod), "new", "node-1", 5),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn pod_cidrs_are_the_lowest_free_24s() {
        assert_eq!(allocate_pod_cidr([]).as_deref(), Some("10.244.0.0/24"));
        assert_eq!(
            allocate_pod_cidr(["10.244.0.0/24", "10.244.2.0/24"]).as_deref(),
            Some("10.244.1.0/24")
        );
        let all: Vec<String> = (0..=255).map(|n| format!("10.244.{n}.0/24")).collect();
        assert_eq!(allocate_pod_cidr(all.iter().map(String::as_str)), None);
    }

    #[test]
    fn client_cannot_overwrite_status_or_uid() {
        let mut created = deployment(1);
        created["status"] = json!({"replicas": 1});
        let (_, stored) = decide_apply(&key(), None, created, "u", "t", 3).unwrap();
        let mut update = deployment(1);
        update["status"] = json!({"replicas": 9});
        update["metadata"]["uid"] = json!("forged");
        let (outcome, _) = decide_apply(&key(), stored.as_ref(), update, "u2", "t", 4).unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
    }

    const MANIFEST: &str = r#"{"schemaVersion":2}"#;

    fn manifest_digest() -> String {
        berth_image::store::digest_of(MANIFEST.as_bytes()).to_string()
    }

    #[test]
    fn put_manifest_stores_new_content_and_moves_tags() {
        let digest = manifest_digest();
        let put = |stored, tagged| {
            decide_put_manifest(
                "team/app",
                &digest,
                "application/vnd.oci.image.manifest.v1+json",
                MANIFEST,
                Some("v1"),
                stored,
                tagged,
            )
        };
        let changes = put(None, None).unwrap();
        let stored = changes.manifest.clone().expect("a new manifest is stored");
        assert_eq!(stored.content, MANIFEST);
        assert_eq!(changes.tag.as_deref(), Some("v1"));
        // Pushed again: nothing to do. A tag that pointed elsewhere moves.
        assert!(put(Some(&stored), Some(&digest)).unwrap().is_empty());
        let moved = put(Some(&stored), Some("sha256:older")).unwrap();
        assert_eq!((moved.manifest, moved.tag.as_deref()), (None, Some("v1")));
    }

    #[test]
    fn put_manifest_refuses_what_no_member_may_store() {
        let digest = manifest_digest();
        let put = |repository, digest: &str, tag| {
            decide_put_manifest(repository, digest, "t", MANIFEST, tag, None, None)
        };
        assert!(matches!(
            put("Team/App", &digest, None),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            put("app", &digest, Some(".v1")),
            Err(StoreError::Invalid(_))
        ));
        let other = berth_image::store::digest_of(b"other").to_string();
        assert!(matches!(
            put("app", &other, None),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn deleting_a_manifest_takes_its_tags_only() {
        let tags = vec![
            ("v1".to_string(), "sha256:a".to_string()),
            ("latest".to_string(), "sha256:a".to_string()),
            ("v2".to_string(), "sha256:b".to_string()),
        ];
        let changes = decide_delete_manifest("app", "sha256:a", true, &tags).unwrap();
        assert!(changes.remove_manifest);
        assert_eq!(changes.untag, vec!["v1".to_string(), "latest".to_string()]);
        assert!(matches!(
            decide_delete_manifest("app", "sha256:c", false, &tags),
            Err(StoreError::ManifestUnknown { .. })
        ));
    }

    #[test]
    fn deleting_a_tag_keeps_the_manifest() {
        let changes = decide_delete_tag("app", "v1", Some("sha256:a")).unwrap();
        assert_eq!(changes.untag, vec!["v1".to_string()]);
        assert!(!changes.remove_manifest);
        assert_eq!(
            decide_delete_tag("app", "v9", None),
            Err(StoreError::ManifestUnknown {
                repository: "app".into(),
                reference: "v9".into()
            })
        );
    }

    #[test]
    fn delete_checks_existence_and_version() {
        let (_, stored) = decide_apply(&key(), None, deployment(1), "u", "t", 3).unwrap();
        assert!(decide_delete(&key(), stored.as_ref(), None).is_ok());
        assert!(decide_delete(&key(), stored.as_ref(), Some(3)).is_ok());
        assert!(matches!(
            decide_delete(&key(), stored.as_ref(), Some(2)),
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            decide_delete(&key(), None, None),
            Err(StoreError::NotFound { .. })
        ));
    }
}
