//! Deleting events older than the TTL: a pure decider and the leader's small loop around it.

use crate::raft::proposer::Proposer;
use crate::raft::BerthRaft;
use crate::store::{Command, CommandResult, ObjectStore};
use berth_proto::k8s_openapi::api::core::v1::Event;
use berth_proto::{Kind, ObjectKey};
use openraft::ServerState;
use std::time::Duration;

/// kube-apiserver's `--event-ttl` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The most events one pass deletes (one Raft entry); the rest wait for the next pass.
pub const MAX_DELETES: usize = 512;

/// One event to delete, if still at the version seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub key: ObjectKey,
    pub resource_version: Option<u64>,
}

/// The events last seen more than `ttl` before `now`, oldest first, at most `limit`. An event
/// with no time at all is as old as can be.
pub fn expired(
    events: &[Event],
    now: jiff::Timestamp,
    ttl: Duration,
    limit: usize,
) -> Vec<Expired> {
    let ttl = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
    let mut old: Vec<(Option<jiff::Timestamp>, &Event)> = events
        .iter()
        .map(|event| (berth_proto::events::last_seen(event), event))
        .filter(|(seen, _)| seen.is_none_or(|seen| now.duration_since(seen) > ttl))
        .collect();
    old.sort_by_key(|(seen, _)| *seen);
    old.into_iter()
        .take(limit)
        .map(|(_, event)| Expired {
            key: ObjectKey::new(
                Kind::Event,
                event.metadata.namespace.as_deref().unwrap_or_default(),
                event.metadata.name.as_deref().unwrap_or_default(),
            ),
            resource_version: event
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        })
        .collect()
}

/// How often the leader looks for expired events: a quarter of the TTL, within 100 ms..60 s.
pub fn period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Runs on every member; deletes while it leads. Ends when Raft shuts down.
pub async fn run(raft: BerthRaft, store: ObjectStore, proposer: Proposer, ttl: Duration) {
    let mut tick = tokio::time::interval(period(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The period may be a minute: a stopping member must not wait for it to let go of the store.
    // The server metrics change only with the role or the leader (the full metrics change on
    // every write, and would wake this task each time); they end, and the wait with them, when
    // Raft stops.
    let mut server = raft.server_metrics();
    let stopped = async move {
        let _ = server.wait_for(|m| m.state == ServerState::Shutdown).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let state = raft.metrics().borrow().state;
        match state {
            ServerState::Shutdown => return,
            ServerState::Leader => {}
            _ => continue,
        }
        if let Err(error) = pass(&store, &proposer, ttl).await {
            tracing::warn!("event expiry: {error}");
        }
    }
}

async fn pass(store: &ObjectStore, proposer: &Proposer, ttl: Duration) -> Result<(), String> {
    let store = store.clone();
    let (listed, _) = tokio::task::spawn_blocking(move || store.list(Kind::Event, None))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let events: Vec<Event> = listed
        .iter()
        .filter_map(|bytes| serde_json::from_slice(bytes).ok())
        .collect();
    let expired = expired(&events, jiff::Timestamp::now(), ttl, MAX_DELETES);
    if expired.is_empty() {
        return Ok(());
    }
    let commands = expired
        .iter()
        .map(|e| Command::Delete {
            key: e.key.clone(),
            resource_version: e.resource_version,
        })
        .collect();
    let result = proposer
        .propose(Command::Batch(commands))
        .await
        .map_err(|status| status.message().to_string())?;
    let deleted = match result {
        CommandResult::Batch(results) => results
            .iter()
            .filter(|r| matches!(r, CommandResult::Deleted { .. }))
            .count(),
        _ => 0,
    };
    tracing::debug!(deleted, "expired events deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn event(name: &str, last: Option<i64>, version: &str) -> Event {
        let mut event = Event::default();
        event.metadata.name = Some(name.into());
        event.metadata.namespace = Some("default".into());
        event.metadata.resource_version = Some(version.into());
        event.last_timestamp = last.map(|s| Time(at(s)));
        event
    }

    #[test]
    fn events_past_the_ttl_go_oldest_first() {
        let events = [
            event("fresh", Some(3000), "1"),
            event("old", Some(50), "2"),
            event("older", Some(10), "3"),
            event("edge", Some(3600), "4"),
        ];
        let ttl = Duration::from_secs(3600);
        let expired = expired(&events, at(3700), ttl, 10);
        let names: Vec<&str> = expired.iter().map(|e| e.key.name.as_str()).collect();
        assert_eq!(names, ["older", "old"]);
        assert_eq!(
            expired[0].key,
            ObjectKey::new(Kind::Event, "default", "older")
        );
        assert_eq!(expired[0].resource_version, Some(3));
    }

    #[test]
    fn the_last_occurrence_counts_and_batches_are_bounded() {
        let mut repeated = event("repeated", Some(3650), "1");
        repeated.first_timestamp = Some(Time(at(0)));
        let mut created_only = event("created", None, "2");
        created_only.metadata.creation_timestamp = Some(Time(at(0)));
        let timeless = event("timeless", None, "3");
        let ttl = Duration::from_secs(3600);
        let events = [repeated, created_only, timeless];
        let names = |limit| {
            expired(&events, at(3700), ttl, limit)
                .into_iter()
                .map(|e| e.key.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(10), ["timeless", "created"]);
        assert_eq!(names(1), ["timeless"]);
    }

    #[test]
    fn the_period_follows_the_ttl_within_bounds() {
        assert_eq!(period(DEFAULT_TTL), Duration::from_secs(60));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(
            period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}
