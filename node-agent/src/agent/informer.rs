//! A local copy of every object of one kind, kept current by list + watch (the Kubernetes
//! informer): the service proxy reads Services, EndpointSlices and Secrets from it, the node
//! routes read Nodes. Readers are told of every change through a `tokio::sync::watch` channel
//! and look at the whole copy; they never call the API themselves.
//!
//! Like the pod sync, a watch that ends or breaks is followed by a fresh list (on whichever
//! member answers), which replaces the copy: nothing is missed, a reader just sees one more
//! change.

use super::api::ApiConnection;
use berth_proto::pb;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Objects by (namespace, name); the namespace is empty for cluster-scoped kinds.
pub type Objects<T> = BTreeMap<(String, String), T>;

/// The copy as readers see it.
#[derive(Debug)]
pub struct Cache<T> {
    /// False until the first list arrived: an empty copy means nothing yet, not "none exist".
    pub synced: bool,
    pub objects: Objects<T>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            synced: false,
            objects: BTreeMap::new(),
        }
    }
}

/// A copy of every object of one kind, followed by a task that stops when this is dropped.
pub struct Informer<T> {
    receiver: watch::Receiver<Cache<T>>,
    task: JoinHandle<()>,
}

impl<T> Informer<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    /// Starts following every `kind` object.
    pub fn start(api: ApiConnection, kind: &'static str) -> Informer<T> {
        let (sender, receiver) = watch::channel(Cache::default());
        let task = tokio::spawn(follow(api, kind, sender));
        Informer { receiver, task }
    }

    /// Waits for the copy to change (since it was last looked at).
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            // The task only ends when aborted, by our own drop: nothing will change again.
            std::future::pending::<()>().await;
        }
    }

    /// The copy as it is now, seen: [`Self::changed`] waits for the next change. Hold it only
    /// briefly and never across an await (it blocks the task that follows the API).
    pub fn current(&mut self) -> watch::Ref<'_, Cache<T>> {
        self.receiver.borrow_and_update()
    }
}

impl<T> Drop for Informer<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow<T: DeserializeOwned>(
    mut api: ApiConnection,
    kind: &'static str,
    sender: watch::Sender<Cache<T>>,
) {
    loop {
        let (objects, revision) = match api.list(kind).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(kind, "listing: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                api.reconnect().await;
                continue;
            }
        };
        let objects: Objects<T> = objects
            .iter()
            .filter_map(|bytes| parse(kind, bytes))
            .collect();
        sender.send_modify(|cache| {
            cache.synced = true;
            cache.objects = objects;
        });
        let mut events = match api.watch(kind, revision).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(kind, "watching: {e}; relisting");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match events.message().await {
                Ok(Some(event)) => {
                    let Some((key, object)) = parse(kind, &event.object) else {
                        continue;
                    };
                    let deleted = event.r#type == pb::EventType::Deleted as i32;
                    sender.send_modify(|cache| {
                        if deleted {
                            cache.objects.remove(&key);
                        } else {
                            cache.objects.insert(key, object);
                        }
                    });
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(kind, "watch ended ({}); relisting", status.message());
                    break;
                }
            }
        }
        api.reconnect().await;
    }
}

/// The object and its key, or `None` (logged) for bytes that are not one.
fn parse<T: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Option<((String, String), T)> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Keyed {
        metadata: Meta,
    }
    let keyed: Keyed = match serde_json::from_slice(bytes) {
        Ok(keyed) => keyed,
        Err(e) => {
            tracing::warn!(kind, "an object without metadata: {e}");
            return None;
        }
    };
    match serde_json::from_slice(bytes) {
        Ok(object) => Some((
            (
                keyed.metadata.namespace.unwrap_or_default(),
                keyed.metadata.name.unwrap_or_default(),
            ),
            object,
        )),
        Err(e) => {
            tracing::warn!(kind, name = ?keyed.metadata.name, "an object that does not parse: {e}");
            None
        }
    }
}
