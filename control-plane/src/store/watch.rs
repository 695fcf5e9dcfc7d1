//! The change feed: the state machine publishes every committed change here after its
//! transaction commits; API watches subscribe. A subscriber that falls behind, or a snapshot
//! install that replaces the store, sends watchers back to the change history in the tables.

use super::StoredEvent;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub enum Notice {
    Change(Arc<StoredEvent>),
    /// The store was replaced by a snapshot: history before it is gone.
    Reset,
}

#[derive(Clone)]
pub struct WatchHub {
    tx: broadcast::Sender<Notice>,
}

impl WatchHub {
    pub fn new(capacity: usize) -> Self {
        WatchHub {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }

    pub fn publish(&self, events: Vec<StoredEvent>) {
        for event in events {
            // No subscribers is fine.
            let _ = self.tx.send(Notice::Change(Arc::new(event)));
        }
    }

    pub fn reset(&self) {
        let _ = self.tx.send(Notice::Reset);
    }
}
