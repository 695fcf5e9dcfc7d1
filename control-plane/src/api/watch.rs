//! Watch streams: the retained history from the requested revision, then live changes from
//! the hub, in revision order without gaps or repeats. A watcher that falls behind the hub
//! catches up from the history; if the history no longer reaches back far enough, or a
//! snapshot replaced the store, the stream ends with OUT_OF_RANGE "expired: relist".

use super::errors::read_error_status;
use crate::store::{Notice, ObjectStore, ReadError, StoredEvent, WatchEventType, WatchHub};
use berth_proto::pb::{self, EventType};
use berth_proto::selector::Selector;
use berth_proto::Kind;
use std::pin::Pin;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

pub struct Filter {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub selector: Selector,
}

impl Filter {
    fn matches(&self, event: &StoredEvent) -> bool {
        event.key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| !self.kind.namespaced() || *ns == event.key.namespace)
            && super::labels_match(&self.selector, &event.object)
    }
}

async fn history(store: &ObjectStore, from: u64) -> Result<Vec<StoredEvent>, Status> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.events_since(from))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(read_error_status)
}

fn expired(from: u64) -> Status {
    read_error_status(ReadError::Expired {
        requested: from,
        oldest: from + 1,
    })
}

pub async fn start(
    store: ObjectStore,
    hub: &WatchHub,
    filter: Filter,
    from: u64,
) -> Result<WatchStream, Status> {
    // Subscribe before reading, so nothing committed in between is missed.
    let mut live = hub.subscribe();
    let (backlog, mut last) = if from == 0 {
        let store = store.clone();
        let now = tokio::task::spawn_blocking(move || store.revision())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(read_error_status)?;
        (Vec::new(), now)
    } else {
        (history(&store, from).await?, from)
    };

    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let result: Result<(), Status> = async {
            for event in backlog {
                send(&tx, &filter, &event, &mut last).await?;
            }
            loop {
                let notice = tokio::select! {
                    notice = live.recv() => notice,
                    _ = tx.closed() => return Ok(()),
                };
                match notice {
                    Ok(Notice::Change(event)) => send(&tx, &filter, &event, &mut last).await?,
                    Ok(Notice::Reset) => return Err(expired(last)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for event in history(&store, last).await? {
                            send(&tx, &filter, &event, &mut last).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        .await;
        if let Err(status) = result {
            // The client may be gone already; then there is nobody to tell.
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends one event if it is new and matches; an error means the client went away.
async fn send(
    tx: &mpsc::Sender<Result<pb::WatchEvent, Status>>,
    filter: &Filter,
    event: &StoredEvent,
    last: &mut u64,
) -> Result<(), Status> {
    if event.revision <= *last {
        return Ok(());
    }
    *last = event.revision;
    if !filter.matches(event) {
        return Ok(());
    }
    let event_type = match event.event_type {
        WatchEventType::Added => EventType::Added,
        WatchEventType::Modified => EventType::Modified,
        WatchEventType::Deleted => EventType::Deleted,
    };
    let message = pb::WatchEvent {
        r#type: event_type as i32,
        object: serde_json::to_vec(&event.object).expect("JSON values serialise"),
        revision: event.revision,
    };
    tx.send(Ok(message))
        .await
        .map_err(|_| Status::cancelled("watcher went away"))
}
