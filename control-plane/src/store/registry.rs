//! The registry's part of the store: manifests and tags, written by the Raft state machine
//! (so every member serves the same ones) and read by the registry's HTTP handlers. Blobs
//! are not here: they are files, by digest, on each member (see `crate::registry`).

use super::apply::{RegistryChanges, StoredManifest};
use super::tables::{storage, ObjectStore, ReadError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::BTreeSet;

/// Manifests by `repository@sha256:<hex>`, as JSON [`StoredManifest`]s.
pub(crate) const MANIFESTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("registry_manifests");
/// Tags by `repository:tag`, each the digest it points at. (`@` and `:` never occur in a
/// repository name, so a repository's keys are exactly those with its prefix.)
pub(crate) const TAGS: TableDefinition<&str, &str> = TableDefinition::new("registry_tags");

fn manifest_key(repository: &str, digest: &str) -> String {
    format!("{repository}@{digest}")
}

fn tag_key(repository: &str, tag: &str) -> String {
    format!("{repository}:{tag}")
}

fn decode(bytes: &[u8]) -> Result<StoredManifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The keys of `table` that start with `prefix`, with their values, in key order.
fn with_prefix<V: redb::Value + 'static, T: ReadableTable<&'static str, V>, R>(
    table: &T,
    prefix: &str,
    mut each: impl FnMut(&str, V::SelfType<'_>) -> R,
) -> Result<Vec<R>, redb::StorageError> {
    let mut out = Vec::new();
    for entry in table.range(prefix..)? {
        let (key, value) = entry?;
        let Some(rest) = key.value().strip_prefix(prefix) else {
            break;
        };
        out.push(each(rest, value.value()));
    }
    Ok(out)
}

/// The registry's rows of a Raft snapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegistrySnapshot {
    pub manifests: Vec<(String, StoredManifest)>,
    pub tags: Vec<(String, String)>,
}

impl ObjectStore {
    /// The manifest `reference` (a tag or a digest) names in `repository`, with its digest.
    pub fn registry_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<(String, StoredManifest)>, ReadError> {
        let txn = self.db().begin_read().map_err(storage)?;
        let digest = if reference.contains(':') {
            reference.to_string()
        } else {
            let tags = txn.open_table(TAGS).map_err(storage)?;
            match tags
                .get(tag_key(repository, reference).as_str())
                .map_err(storage)?
            {
                Some(digest) => digest.value().to_string(),
                None => return Ok(None),
            }
        };
        let manifests = txn.open_table(MANIFESTS).map_err(storage)?;
        let stored = manifests
            .get(manifest_key(repository, &digest).as_str())
            .map_err(storage)?;
        match stored {
            Some(bytes) => Ok(Some((digest, decode(bytes.value()).map_err(storage)?))),
            None => Ok(None),
        }
    }

    /// The tags of `repository` in lexical order; `None` if the repository holds no manifest.
    pub fn registry_tags(&self, repository: &str) -> Result<Option<Vec<String>>, ReadError> {
        let txn = self.db().begin_read().map_err(storage)?;
        let manifests = txn.open_table(MANIFESTS).map_err(storage)?;
        let prefix = format!("{repository}@");
        let known = manifests
            .range(prefix.as_str()..)
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?
            .is_some_and(|(key, _)| key.value().starts_with(&prefix));
        if !known {
            return Ok(None);
        }
        let tags = txn.open_table(TAGS).map_err(storage)?;
        let tags = with_prefix(&tags, &format!("{repository}:"), |tag, _| tag.to_string())
            .map_err(storage)?;
        Ok(Some(tags))
    }

    /// Every repository that holds a manifest, in lexical order.
    pub fn registry_repositories(&self) -> Result<Vec<String>, ReadError> {
        let txn = self.db().begin_read().map_err(storage)?;
        let manifests = txn.open_table(MANIFESTS).map_err(storage)?;
        let mut repositories = BTreeSet::new();
        for entry in manifests.iter().map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            if let Some((repository, _)) = key.value().split_once('@') {
                repositories.insert(repository.to_string());
            }
        }
        Ok(repositories.into_iter().collect())
    }
}

/// Creates the registry tables if they do not exist yet.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(MANIFESTS)?;
    txn.open_table(TAGS)?;
    Ok(())
}

pub(crate) fn export(txn: &redb::ReadTransaction) -> Result<RegistrySnapshot, ReadError> {
    let manifests = txn.open_table(MANIFESTS).map_err(storage)?;
    let mut snapshot = RegistrySnapshot::default();
    for entry in manifests.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let manifest = decode(value.value()).map_err(storage)?;
        snapshot.manifests.push((key.value().to_string(), manifest));
    }
    let tags = txn.open_table(TAGS).map_err(storage)?;
    for entry in tags.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        snapshot
            .tags
            .push((key.value().to_string(), value.value().to_string()));
    }
    Ok(snapshot)
}

pub(crate) fn import(
    txn: &WriteTransaction,
    snapshot: &RegistrySnapshot,
) -> Result<(), redb::Error> {
    txn.delete_table(MANIFESTS)?;
    txn.delete_table(TAGS)?;
    let mut manifests = txn.open_table(MANIFESTS)?;
    for (key, manifest) in &snapshot.manifests {
        let bytes = serde_json::to_vec(manifest).expect("manifests serialise");
        manifests.insert(key.as_str(), bytes.as_slice())?;
    }
    let mut tags = txn.open_table(TAGS)?;
    for (key, digest) in &snapshot.tags {
        tags.insert(key.as_str(), digest.as_str())?;
    }
    Ok(())
}

/// The registry tables inside one state-machine transaction.
pub(crate) struct RegistryTables<'t> {
    manifests: redb::Table<'t, &'static str, &'static [u8]>,
    tags: redb::Table<'t, &'static str, &'static str>,
}

impl<'t> RegistryTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(RegistryTables {
            manifests: txn.open_table(MANIFESTS)?,
            tags: txn.open_table(TAGS)?,
        })
    }

    pub(crate) fn manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<StoredManifest>, redb::Error> {
        match self
            .manifests
            .get(manifest_key(repository, digest).as_str())?
        {
            Some(bytes) => Ok(Some(
                decode(bytes.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub(crate) fn tag(&self, repository: &str, tag: &str) -> Result<Option<String>, redb::Error> {
        Ok(self
            .tags
            .get(tag_key(repository, tag).as_str())?
            .map(|digest| digest.value().to_string()))
    }

    /// The repository's tags and the digests they point at.
    pub(crate) fn tags(&self, repository: &str) -> Result<Vec<(String, String)>, redb::Error> {
        Ok(with_prefix(
            &self.tags,
            &format!("{repository}:"),
            |tag, digest| (tag.to_string(), digest.to_string()),
        )?)
    }

    pub(crate) fn write(
        &mut self,
        repository: &str,
        digest: &str,
        changes: &RegistryChanges,
    ) -> Result<(), redb::Error> {
        let key = manifest_key(repository, digest);
        if let Some(manifest) = &changes.manifest {
            let bytes = serde_json::to_vec(manifest).expect("manifests serialise");
            self.manifests.insert(key.as_str(), bytes.as_slice())?;
        }
        if let Some(tag) = &changes.tag {
            self.tags
                .insert(tag_key(repository, tag).as_str(), digest)?;
        }
        for tag in &changes.untag {
            self.tags.remove(tag_key(repository, tag).as_str())?;
        }
        if changes.remove_manifest {
            self.manifests.remove(key.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Command, CommandResult};
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("store.redb")).unwrap();
        (dir, ObjectStore::new(Arc::new(db), 100).unwrap())
    }

    fn run(store: &ObjectStore, command: Command) -> CommandResult {
        let txn = store.db().begin_write().unwrap();
        let (result, events) = store.apply(&txn, command).unwrap();
        txn.commit().unwrap();
        assert!(events.is_empty(), "registry writes are not object changes");
        result
    }

    fn put(repository: &str, content: &str, tag: &str) -> Command {
        Command::RegistryPutManifest {
            repository: repository.into(),
            digest: berth_image::store::digest_of(content.as_bytes()).to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: content.into(),
            tag: Some(tag.into()),
        }
    }

    #[test]
    fn manifests_and_tags_are_applied_read_and_carried_by_snapshots() {
        let (_dir, source) = store();
        assert_eq!(
            run(&source, put("a", "{}", "v1")),
            CommandResult::Registry { changed: true }
        );
        assert_eq!(
            run(&source, put("a", "{}", "v1")),
            CommandResult::Registry { changed: false }
        );
        run(&source, put("a/b", "[]", "latest"));
        run(&source, put("a-c", "{}", "x"));
        assert_eq!(
            source.registry_repositories().unwrap(),
            vec!["a".to_string(), "a-c".into(), "a/b".into()]
        );
        assert_eq!(source.registry_tags("a").unwrap(), Some(vec!["v1".into()]));
        assert_eq!(source.registry_tags("nothing").unwrap(), None);
        let (digest, manifest) = source.registry_manifest("a/b", "latest").unwrap().unwrap();
        assert_eq!(manifest.content, "[]");
        assert_eq!(
            source.registry_manifest("a/b", &digest).unwrap().unwrap().1,
            manifest
        );
        assert_eq!(source.registry_manifest("a", &digest).unwrap(), None);

        let (_dir2, target) = store();
        run(&target, put("stale", "{}", "gone"));
        let snapshot = source.export(&source.db().begin_read().unwrap()).unwrap();
        let txn = target.db().begin_write().unwrap();
        target.import(&txn, &snapshot).unwrap();
        txn.commit().unwrap();
        assert_eq!(
            target.registry_repositories().unwrap(),
            source.registry_repositories().unwrap()
        );
        assert_eq!(
            target.registry_manifest("a/b", "latest").unwrap(),
            Some((digest.clone(), manifest))
        );

        // A deleted manifest takes its tags with it; a repository without manifests is gone.
        run(
            &target,
            Command::RegistryDeleteManifest {
                repository: "a/b".into(),
                digest,
            },
        );
        assert_eq!(target.registry_tags("a/b").unwrap(), None);
        assert!(matches!(
            run(
                &target,
                Command::RegistryDeleteTag {
                    repository: "a".into(),
                    tag: "nope".into()
                }
            ),
            CommandResult::Failed(crate::store::StoreError::ManifestUnknown { .. })
        ));
    }
}
