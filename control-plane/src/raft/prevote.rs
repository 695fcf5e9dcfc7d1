//! Pre-vote, in front of openraft 0.9 (which has none): a member only stands for election
//! when a majority of the voters would support one, i.e. have no live leader themselves.
//!
//! Without it, a member cut off from the others times out again and again, raising its term
//! each time; when the link comes back, its higher term deposes a healthy leader. Here a member
//! that cannot gather a majority keeps its elections switched off (openraft's runtime `elect`
//! switch), so its term stays where it was.
//!
//! ```text
//!  every tick, on a member that is not leading:
//!    hears a leader: elections off
//!    hears none: ask each other voter "PreVote?" ── true if it has no live leader ──▶ count
//!    elections_allowed(voters, supporters + itself) ──▶ raft.runtime_config().elect(..)
//! ```

use super::{BerthRaft, MemberId};
use berth_proto::pb::raft_client::RaftClient;
use berth_proto::pb::RaftMessage;
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// When this member last heard from a leader (an AppendEntries or snapshot it accepted).
#[derive(Clone)]
pub struct LeaderContact {
    start: Instant,
    /// Milliseconds since `start` + 1; 0: never.
    last: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        self.last.store(
            self.start.elapsed().as_millis() as u64 + 1,
            Ordering::Release,
        );
    }

    /// Whether a leader was heard from within `window`.
    pub fn within(&self, window: Duration) -> bool {
        match self.last.load(Ordering::Acquire) {
            0 => false,
            last => self.start.elapsed().as_millis() as u64 + 1 - last <= window.as_millis() as u64,
        }
    }
}

/// Whether a member may stand for election: itself plus the supporters form a majority.
pub fn elections_allowed(voters: usize, supporters_including_self: usize) -> bool {
    supporters_including_self * 2 > voters
}

/// Whether this member would support an election now (the answer to a PreVote).
pub fn would_support(
    raft: &BerthRaft,
    contact: &LeaderContact,
    election_timeout: Duration,
) -> bool {
    let leading = raft.metrics().borrow().state == ServerState::Leader;
    !leading && !contact.within(election_timeout)
}

/// Runs on every member until Raft shuts down.
pub async fn run(
    raft: BerthRaft,
    contact: LeaderContact,
    election_timeout: Duration,
    tick: Duration,
) {
    let mut clients: HashMap<String, RaftClient<Channel>> = HashMap::new();
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let metrics = raft.metrics().borrow().clone();
        match metrics.state {
            ServerState::Shutdown => return,
            ServerState::Leader => continue,
            _ => {}
        }
        if contact.within(election_timeout) {
            // A live leader. Elections stay off until a pre-vote round says otherwise: switched
            // on now, openraft's timer could fire in the moment between losing the leader and
            // the next round.
            raft.runtime_config().elect(false);
            continue;
        }
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        if !voters.contains(&metrics.id) {
            continue;
        }
        let mut asks = Vec::new();
        for id in voters.iter().filter(|id| **id != metrics.id) {
            let Some(node) = membership.get_node(id) else {
                continue;
            };
            let client = match clients.get(&node.addr) {
                Some(client) => client.clone(),
                None => match berth_proto::transport::connect_lazy(&node.addr) {
                    Ok(channel) => clients
                        .entry(node.addr.clone())
                        .or_insert(RaftClient::new(channel))
                        .clone(),
                    Err(_) => continue,
                },
            };
            asks.push(ask(client, tick));
        }
        let supporters = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|yes| *yes)
            .count();
        let allowed = elections_allowed(voters.len(), supporters + 1);
        raft.runtime_config().elect(allowed);
    }
}

async fn ask(mut client: RaftClient<Channel>, timeout: Duration) -> bool {
    let mut request = tonic::Request::new(RaftMessage { data: Vec::new() });
    request.set_timeout(timeout);
    match client.pre_vote(request).await {
        Ok(reply) => serde_json::from_slice::<bool>(&reply.into_inner().data).unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_including_self_allows_elections() {
        assert!(elections_allowed(1, 1));
        assert!(!elections_allowed(3, 1), "alone among three");
        assert!(elections_allowed(3, 2));
        assert!(!elections_allowed(4, 2), "half is not a majority");
        assert!(elections_allowed(5, 3));
    }

    #[test]
    fn contact_expires() {
        let contact = LeaderContact::default();
        assert!(
            !contact.within(Duration::from_secs(60)),
            "never heard from a leader"
        );
        contact.touch();
        assert!(contact.within(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!contact.within(Duration::from_millis(10)));
    }
}
