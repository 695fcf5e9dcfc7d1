//! A watch-fed cache (an informer) for the leader's loops: the objects of a few kinds, decoded
//! once and kept in memory, updated from the watch hub instead of listed and decoded again on
//! every pass.
//!
//! ```text
//!  becoming leader: read barrier ── subscribe to the hub ── list each kind (local store, at R_k)
//!  each pass, sync(): drain the subscription, apply each change newer than its kind's list
//!    lagged ── subscribe again ── catch up from the store's change history (since the last seen)
//!                                   └── history no longer reaches back ──▶ list again
//!    store replaced by a snapshot (Reset) ──────────────────────────────▶ list again
//! ```
//!
//! The state machine publishes a change only after its transaction commits, so a subscription
//! taken before a read misses nothing the read does not show, and a change the read already
//! shows is recognised by its revision and skipped. A leader's own proposal
//! (`Proposer::propose`) comes back after its changes were published: a loop that syncs after
//! awaiting its own writes sees them.
//!
//! The cache belongs to one loop and is dropped when its member stops leading: a follower keeps
//! nothing, and a new leader builds it after a read barrier (everything committed before its
//! term is applied locally, so the cache starts from at least what any earlier leader saw).

use crate::raft::leader::ReadBarrier;
use crate::raft::BerthRaft;
use crate::store::{Notice, ObjectStore, ReadError, StoredEvent, WatchEventType, WatchHub};
use berth_proto::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use berth_proto::k8s_openapi::api::core::v1::{Node, Pod, Service};
use berth_proto::k8s_openapi::api::discovery::v1::EndpointSlice;
use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use berth_proto::Kind;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("read barrier: {0}")]
    Barrier(String),
    #[error("the store's change feed is closed")]
    Closed,
    #[error("a store read task failed: {0}")]
    Task(String),
}

/// Objects of one kind by namespace and name (empty namespace for cluster-scoped kinds), in
/// the store's order.
pub type Objects<T> = BTreeMap<(String, String), T>;

/// The decoded objects of the kinds a loop asked for; the other maps stay empty.
#[derive(Default)]
pub struct CachedObjects {
    pub nodes: Objects<Node>,
    pub pods: Objects<Pod>,
    pub replica_sets: Objects<ReplicaSet>,
    pub deployments: Objects<Deployment>,
    pub services: Objects<Service>,
    pub endpoint_slices: Objects<EndpointSlice>,
}

/// Stores `object` under `key`, or removes the key when there is no object or it does not
/// decode (as a list would: an object that does not decode is not seen).
fn put<T: DeserializeOwned>(
    map: &mut Objects<T>,
    key: (String, String),
    object: Option<Result<T, serde_json::Error>>,
) {
    match object {
        Some(Ok(object)) => {
            map.insert(key, object);
        }
        Some(Err(error)) => {
            tracing::debug!(namespace = %key.0, name = %key.1, "cache: undecodable: {error}");
            map.remove(&key);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// Decodes stored bytes into a map keyed by namespace and name.
fn put_bytes<T: DeserializeOwned + berth_proto::k8s_openapi::Metadata<Ty = ObjectMeta>>(
    map: &mut Objects<T>,
    kind: Kind,
    bytes: &[u8],
) {
    match serde_json::from_slice::<T>(bytes) {
        Ok(object) => {
            let meta = object.metadata();
            let namespace = match kind.namespaced() {
                true => meta.namespace.clone().unwrap_or_default(),
                false => String::new(),
            };
            let key = (namespace, meta.name.clone().unwrap_or_default());
            map.insert(key, object);
        }
        Err(error) => tracing::debug!("cache: undecodable {}: {error}", kind.as_str()),
    }
}

impl CachedObjects {
    /// Applies one change (`None`: deleted).
    fn put(&mut self, kind: Kind, key: (String, String), object: Option<&serde_json::Value>) {
        fn decode<T: DeserializeOwned>(
            object: Option<&serde_json::Value>,
        ) -> Option<Result<T, serde_json::Error>> {
            object.map(T::deserialize)
        }
        match kind {
            Kind::Node => put(&mut self.nodes, key, decode(object)),
            Kind::Pod => put(&mut self.pods, key, decode(object)),
            Kind::ReplicaSet => put(&mut self.replica_sets, key, decode(object)),
            Kind::Deployment => put(&mut self.deployments, key, decode(object)),
            Kind::Service => put(&mut self.services, key, decode(object)),
            Kind::EndpointSlice => put(&mut self.endpoint_slices, key, decode(object)),
            _ => {}
        }
    }

    /// Adds one listed object.
    fn put_listed(&mut self, kind: Kind, bytes: &[u8]) {
        match kind {
            Kind::Node => put_bytes(&mut self.nodes, kind, bytes),
            Kind::Pod => put_bytes(&mut self.pods, kind, bytes),
            Kind::ReplicaSet => put_bytes(&mut self.replica_sets, kind, bytes),
            Kind::Deployment => put_bytes(&mut self.deployments, kind, bytes),
            Kind::Service => put_bytes(&mut self.services, kind, bytes),
            Kind::EndpointSlice => put_bytes(&mut self.endpoint_slices, kind, bytes),
            _ => {}
        }
    }
}

/// Which kinds changed in one [`Cache::sync`]: every kind, watched or not (a loop may only
/// need to know that something it does not keep changed).
#[derive(Debug, Default)]
pub struct Changed {
    kinds: HashSet<Kind>,
    /// The cache was rebuilt or caught up from history: anything may have changed.
    everything: bool,
}

impl Changed {
    pub fn any(&self) -> bool {
        self.everything || !self.kinds.is_empty()
    }

    pub fn kind(&self, kind: Kind) -> bool {
        self.everything || self.kinds.contains(&kind)
    }
}

/// See the module documentation.
pub struct Cache {
    store: ObjectStore,
    hub: WatchHub,
    changes: broadcast::Receiver<Notice>,
    /// The kinds kept, with the revision each was listed at: a change at or below it is in
    /// the list already.
    listed: HashMap<Kind, u64>,
    /// The newest revision seen on the feed (or the oldest list, after a rebuild): where a
    /// catch-up from history starts.
    revision: u64,
    /// Set by [`Cache::changed`] when the subscription lagged or the store was replaced;
    /// handled by the next [`Cache::sync`].
    lagged: bool,
    replaced: bool,
    /// What changed since the last [`Cache::sync`] returned.
    seen: Changed,
    pub objects: CachedObjects,
}

/// Kinds the cache can keep.
const KEPT: [Kind; 6] = [
    Kind::Node,
    Kind::Pod,
    Kind::ReplicaSet,
    Kind::Deployment,
    Kind::Service,
    Kind::EndpointSlice,
];

/// Waits until this member, as leader, has applied everything committed and its store shows
/// it (see [`ReadBarrier::as_leader`]). Fails if it does not lead.
async fn read_barrier(raft: &BerthRaft, barrier: &ReadBarrier) -> Result<(), CacheError> {
    barrier
        .as_leader(raft)
        .await
        .map_err(|e| CacheError::Barrier(e.to_string()))
}

impl Cache {
    /// Passes the read barrier, then lists `kinds` from the local store. Fails if this member
    /// does not lead.
    pub async fn build(
        raft: &BerthRaft,
        barrier: &ReadBarrier,
        store: ObjectStore,
        hub: WatchHub,
        kinds: &[Kind],
    ) -> Result<Cache, CacheError> {
        read_barrier(raft, barrier).await?;
        Cache::list(store, hub, kinds).await
    }

    /// Passes the read barrier: for a cache kept across a change of term. The next
    /// [`Cache::sync`] then brings the cache up to it.
    pub async fn barrier(&self, raft: &BerthRaft, barrier: &ReadBarrier) -> Result<(), CacheError> {
        read_barrier(raft, barrier).await
    }

    /// Lists `kinds` from the local store as it is now (no barrier).
    pub async fn list(
        store: ObjectStore,
        hub: WatchHub,
        kinds: &[Kind],
    ) -> Result<Cache, CacheError> {
        assert!(
            kinds.iter().all(|k| KEPT.contains(k)),
            "the cache keeps only {KEPT:?}"
        );
        let mut cache = Cache {
            changes: hub.subscribe(),
            store,
            hub,
            listed: kinds.iter().map(|&k| (k, 0)).collect(),
            revision: 0,
            lagged: false,
            replaced: false,
            seen: Changed::default(),
            objects: CachedObjects::default(),
        };
        cache.relist().await?;
        // A fresh cache reports changes from here on.
        cache.seen = Changed::default();
        Ok(cache)
    }

    /// Waits for the next change of a kept kind (applied at once), or a lag or a store
    /// replacement (handled by the next [`Cache::sync`]). Cancel-safe.
    pub async fn changed(&mut self) -> Result<(), CacheError> {
        loop {
            match self.changes.recv().await {
                Ok(Notice::Change(event)) => {
                    if self.apply(&event) {
                        return Ok(());
                    }
                }
                Ok(Notice::Reset) => {
                    self.replaced = true;
                    return Ok(());
                }
                Err(RecvError::Lagged(_)) => {
                    self.lagged = true;
                    return Ok(());
                }
                Err(RecvError::Closed) => return Err(CacheError::Closed),
            }
        }
    }

    /// Applies every change published so far; says which kinds changed.
    pub async fn sync(&mut self) -> Result<Changed, CacheError> {
        loop {
            if self.replaced {
                self.relist().await?;
            } else if self.lagged {
                self.catch_up().await?;
            }
            match self.changes.try_recv() {
                Ok(Notice::Change(event)) => {
                    self.apply(&event);
                }
                Ok(Notice::Reset) => self.replaced = true,
                Err(TryRecvError::Lagged(_)) => self.lagged = true,
                Err(TryRecvError::Empty) => return Ok(std::mem::take(&mut self.seen)),
                Err(TryRecvError::Closed) => return Err(CacheError::Closed),
            }
        }
    }

    /// Applies one change; whether it changed a kept kind.
    fn apply(&mut self, event: &StoredEvent) -> bool {
        if event.revision <= self.revision {
            return false; // seen already (before a resubscription)
        }
        self.revision = event.revision;
        let kind = event.key.kind;
        self.seen.kinds.insert(kind);
        match self.listed.get(&kind) {
            Some(&listed) if event.revision > listed => {}
            _ => return false,
        }
        let key = (event.key.namespace.clone(), event.key.name.clone());
        let object = match event.event_type {
            WatchEventType::Deleted => None,
            WatchEventType::Added | WatchEventType::Modified => Some(&event.object),
        };
        self.objects.put(kind, key, object);
        true
    }

    /// Rebuilds from a fresh subscription and lists.
    async fn relist(&mut self) -> Result<(), CacheError> {
        self.changes = self.hub.subscribe();
        self.lagged = false;
        self.replaced = false;
        let kinds: Vec<Kind> = self.listed.keys().copied().collect();
        let store = self.store.clone();
        let (objects, listed) = tokio::task::spawn_blocking(move || {
            let mut objects = CachedObjects::default();
            let mut listed = HashMap::new();
            for kind in kinds {
                let (list, revision) = store.list(kind, None)?;
                for bytes in &list {
                    objects.put_listed(kind, bytes);
                }
                listed.insert(kind, revision);
            }
            Ok::<_, ReadError>((objects, listed))
        })
        .await
        .map_err(|e| CacheError::Task(e.to_string()))??;
        self.revision = listed.values().copied().min().unwrap_or(0);
        self.seen.everything = true;
        self.listed = listed;
        self.objects = objects;
        tracing::debug!(revision = self.revision, "cache listed");
        Ok(())
    }

    /// After a lag: a fresh subscription, then the missed changes from the store's history;
    /// a list when the history no longer reaches back.
    async fn catch_up(&mut self) -> Result<(), CacheError> {
        self.changes = self.hub.subscribe();
        self.lagged = false;
        let store = self.store.clone();
        let from = self.revision;
        let missed = tokio::task::spawn_blocking(move || store.events_since(from))
            .await
            .map_err(|e| CacheError::Task(e.to_string()))?;
        match missed {
            Ok(events) => {
                tracing::debug!(from, events = events.len(), "cache caught up from history");
                self.seen.everything = true;
                for event in &events {
                    self.apply(event);
                }
                Ok(())
            }
            Err(ReadError::Expired { .. }) => self.relist().await,
            Err(error) => Err(error.into()),
        }
    }
}

/// A leader loop's cache: none while this member does not lead, built after a read barrier
/// when it starts leading, and passed through a read barrier again when the term changes
/// (leadership lost and won back between two looks).
pub struct LeaderCache {
    source: CacheSource,
    kinds: &'static [Kind],
    /// The cache and the term it was last brought up to date in.
    kept: Option<(Cache, u64)>,
}

/// What a leader loop's cache is built from: the member's Raft, read barrier, store and hub.
#[derive(Clone)]
pub struct CacheSource {
    pub raft: BerthRaft,
    pub barrier: ReadBarrier,
    pub store: ObjectStore,
    pub hub: WatchHub,
}

impl LeaderCache {
    pub fn new(source: CacheSource, kinds: &'static [Kind]) -> LeaderCache {
        LeaderCache {
            source,
            kinds,
            kept: None,
        }
    }

    /// Waits for a change of a kept kind; false once the hub is gone. Never returns while no
    /// cache is kept (this member does not lead): the loop's timer wakes it then.
    pub async fn changed(&mut self) -> bool {
        match &mut self.kept {
            Some((cache, _)) => !matches!(cache.changed().await, Err(CacheError::Closed)),
            None => std::future::pending().await,
        }
    }

    /// This member does not lead: drop the cache.
    pub fn stand_down(&mut self) {
        self.kept = None;
    }

    /// The cache with every change applied so far, and what changed since the last call
    /// (everything, when it was just built). Call only while leading.
    pub async fn up_to_date(&mut self) -> Result<(&Cache, Changed), CacheError> {
        let term = self.source.raft.metrics().borrow().current_term;
        let mut changed = Changed::default();
        match &mut self.kept {
            None => {
                let source = &self.source;
                let cache = Cache::build(
                    &source.raft,
                    &source.barrier,
                    source.store.clone(),
                    source.hub.clone(),
                    self.kinds,
                );
                self.kept = Some((cache.await?, term));
                changed.everything = true;
            }
            Some((cache, kept_term)) if *kept_term != term => {
                cache
                    .barrier(&self.source.raft, &self.source.barrier)
                    .await?;
                *kept_term = term;
            }
            Some(_) => {}
        }
        let (cache, _) = self.kept.as_mut().expect("kept above");
        match cache.sync().await {
            Ok(synced) => {
                changed.everything |= synced.everything;
                changed.kinds.extend(synced.kinds);
            }
            Err(error) => {
                self.kept = None;
                return Err(error);
            }
        }
        let (cache, _) = self.kept.as_ref().expect("kept above");
        Ok((cache, changed))
    }
}

#[cfg(test)]
mod tests {
    //! The cache against a real store and hub, written the way the state machine writes:
    //! commit, then publish.

    use super::*;
    use crate::store::Command;
    use redb::ReadableDatabase;
    use serde_json::json;
    use std::sync::Arc;

    struct Store {
        db: Arc<redb::Database>,
        store: ObjectStore,
        hub: WatchHub,
        _dir: tempfile::TempDir,
    }

    impl Store {
        /// A store keeping `history` revisions of changes, and a hub of `capacity` notices.
        fn new(history: u64, capacity: usize) -> Store {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(redb::Database::create(dir.path().join("store.redb")).unwrap());
            let store = ObjectStore::new(db.clone(), history).unwrap();
            let this = Store {
                db,
                store,
                hub: WatchHub::new(capacity),
                _dir: dir,
            };
            this.commit(Command::Apply {
                object: json!({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "default"}}),
                uid: "ns".into(),
                now: "2026-01-01T00:00:00Z".into(),
            });
            this
        }

        fn commit(&self, command: Command) {
            let txn = self.db.begin_write().unwrap();
            let (_, events) = self.store.apply(&txn, command).unwrap();
            txn.commit().unwrap();
            self.hub.publish(events);
        }

        fn apply_pod(&self, name: &str, node: Option<&str>) {
            let mut object = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
            if let Some(node) = node {
                object["spec"]["nodeName"] = node.into();
            }
            self.commit(Command::Apply {
                object,
                uid: format!("uid-{name}"),
                now: "2026-01-01T00:00:00Z".into(),
            });
        }

        fn delete_pod(&self, name: &str) {
            self.commit(Command::Delete {
                key: berth_proto::ObjectKey::new(Kind::Pod, "default", name),
                resource_version: None,
            });
        }

        async fn cache(&self) -> Cache {
            Cache::list(self.store.clone(), self.hub.clone(), &[Kind::Pod])
                .await
                .unwrap()
        }
    }

    /// Pod names and nodes, as the cache holds them.
    fn pods(cache: &Cache) -> Vec<(String, Option<String>)> {
        cache
            .objects
            .pods
            .iter()
            .map(|((_, name), pod)| {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                (name.clone(), node)
            })
            .collect()
    }

    /// What a fresh list shows: the cache must hold the same.
    async fn listed(store: &Store) -> Vec<(String, Option<String>)> {
        pods(&store.cache().await)
    }

    #[tokio::test]
    async fn follows_adds_updates_and_deletes() {
        let store = Store::new(100, 64);
        store.apply_pod("a", None);
        let mut cache = store.cache().await;
        assert_eq!(pods(&cache), [("a".to_string(), None)]);

        store.apply_pod("b", None);
        store.apply_pod("a", Some("node-1"));
        store.delete_pod("b");
        store.apply_pod("c", None);
        let changed = cache.sync().await.unwrap();
        assert!(changed.kind(Kind::Pod) && !changed.kind(Kind::Node));
        assert_eq!(
            pods(&cache),
            [
                ("a".to_string(), Some("node-1".to_string())),
                ("c".to_string(), None)
            ]
        );
        assert_eq!(pods(&cache), listed(&store).await);
        assert!(!cache.sync().await.unwrap().any(), "nothing new");
    }

    #[tokio::test]
    async fn changed_wakes_on_kept_kinds_only() {
        let store = Store::new(100, 64);
        let mut cache = store.cache().await;
        store.commit(Command::Apply {
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "cm", "namespace": "default"}}),
            uid: "cm".into(),
            now: "2026-01-01T00:00:00Z".into(),
        });
        store.apply_pod("a", None);
        cache.changed().await.unwrap();
        // The ConfigMap was passed over; the pod was applied by `changed` itself.
        assert_eq!(pods(&cache), [("a".to_string(), None)]);
        let changed = cache.sync().await.unwrap();
        assert!(changed.kind(Kind::Pod) && changed.kind(Kind::ConfigMap));
    }

    #[tokio::test]
    async fn a_lagging_cache_catches_up_from_history() {
        // The hub keeps 4 notices; the store's history keeps 100 revisions.
        let store = Store::new(100, 4);
        let mut cache = store.cache().await;
        for i in 0..20 {
            store.apply_pod(&format!("p{i:02}"), None);
        }
        store.delete_pod("p03");
        store.apply_pod("p07", Some("node-7"));
        let changed = cache.sync().await.unwrap();
        assert!(
            changed.kind(Kind::Node),
            "a catch-up may have changed anything"
        );
        assert_eq!(cache.objects.pods.len(), 19);
        assert_eq!(pods(&cache), listed(&store).await);
    }

    #[tokio::test]
    async fn a_cache_lagging_past_the_history_lists_again() {
        // The hub keeps 4 notices and the store's history only 3 revisions.
        let store = Store::new(3, 4);
        let mut cache = store.cache().await;
        for i in 0..20 {
            store.apply_pod(&format!("p{i:02}"), None);
        }
        store.delete_pod("p11");
        cache.sync().await.unwrap();
        assert_eq!(cache.objects.pods.len(), 19);
        assert_eq!(pods(&cache), listed(&store).await);
        // And it follows changes after that as before.
        store.apply_pod("p00", Some("node-0"));
        cache.sync().await.unwrap();
        assert_eq!(pods(&cache), listed(&store).await);
    }

    #[tokio::test]
    async fn a_replaced_store_is_listed_again() {
        let store = Store::new(100, 64);
        store.apply_pod("a", None);
        let mut cache = store.cache().await;
        // A snapshot install: the store's content replaced, then Reset on the hub.
        let txn = store.db.begin_write().unwrap();
        let mut snapshot = store.store.export(&store.db.begin_read().unwrap()).unwrap();
        snapshot.objects.retain(|(key, _)| !key.starts_with("Pod/"));
        snapshot.objects.push((
            "Pod/default/z".into(),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "z", "namespace": "default", "resourceVersion": "9"},
                   "spec": {"containers": [{"name": "main", "image": "busybox"}]}}),
        ));
        store.store.import(&txn, &snapshot).unwrap();
        txn.commit().unwrap();
        store.hub.reset();
        cache.sync().await.unwrap();
        assert_eq!(pods(&cache), [("z".to_string(), None)]);
    }
}
