//! Control-plane membership: who the members are, joining as a learner, promotion to voter
//! once caught up, removal.
//!
//! ```text
//!  new member ──Join(addr)──▶ any member ──▶ leader: add learner (id = highest + 1)
//!  leader: promoter loop ── learners_to_promote(metrics) ──▶ change_membership(add voters)
//! ```
//!
//! Promotion is the leader's job, not the joiner's: a leader elected while a learner was
//! still catching up promotes it just the same.

use crate::raft::{BerthRaft, MemberId};
use berth_proto::pb;
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tonic::Status;

/// A learner this close to the leader's last log index is promoted.
pub const PROMOTION_LAG: u64 = 100;

type Metrics = RaftMetrics<MemberId, BasicNode>;

/// The last log index replicated to each member, as the leader sees it.
fn matched(metrics: &Metrics) -> BTreeMap<MemberId, u64> {
    let mut matched: BTreeMap<MemberId, u64> = metrics
        .replication
        .iter()
        .flatten()
        .map(|(id, log_id)| (*id, log_id.map(|l| l.index).unwrap_or(0)))
        .collect();
    matched.insert(metrics.id, metrics.last_log_index.unwrap_or(0));
    matched
}

/// Learners that have caught up with the leader (pure: decided from metrics alone).
pub fn learners_to_promote(metrics: &Metrics) -> BTreeSet<MemberId> {
    if metrics.state != ServerState::Leader {
        return BTreeSet::new();
    }
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = matched(metrics);
    metrics
        .membership_config
        .membership()
        .learner_ids()
        .filter(|id| {
            matched
                .get(id)
                .is_some_and(|m| last.saturating_sub(*m) <= PROMOTION_LAG)
        })
        .collect()
}

/// The members as `berth members` shows them.
pub fn members_view(metrics: &Metrics) -> pb::MembersResponse {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = matched(metrics);
    let is_leader = metrics.state == ServerState::Leader;
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let role = if metrics.current_leader == Some(*id) {
                "Leader"
            } else if voters.contains(id) {
                "Voter"
            } else {
                "Learner"
            };
            // Only the leader knows how far each member is; others report what they know.
            let matched_index = if is_leader {
                matched.get(id).copied().unwrap_or(0)
            } else {
                0
            };
            pb::Member {
                id: *id,
                addr: node.addr.clone(),
                role: role.into(),
                matched_index,
                lag: if is_leader {
                    last.saturating_sub(matched_index)
                } else {
                    0
                },
            }
        })
        .collect();
    pb::MembersResponse {
        members,
        leader_id: metrics.current_leader.unwrap_or(0),
        term: metrics.current_term,
        last_log_index: last,
    }
}

/// The id a new member gets: one more than any member's so far.
pub fn next_member_id(metrics: &Metrics) -> MemberId {
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0)
        + 1
}

fn status(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

/// Adds a learner at `addr` (on the leader); returns its id. An address already a member
/// gets its existing id back, so a joiner that retries is not added twice.
pub async fn add_learner(raft: &BerthRaft, addr: &str) -> Result<MemberId, Status> {
    let metrics = raft.metrics().borrow().clone();
    if let Some((id, _)) = metrics
        .membership_config
        .membership()
        .nodes()
        .find(|(_, n)| n.addr == addr)
    {
        return Ok(*id);
    }
    let id = next_member_id(&metrics);
    raft.add_learner(
        id,
        BasicNode {
            addr: addr.to_string(),
        },
        false,
    )
    .await
    .map_err(status)?;
    tracing::info!(member = id, addr, "learner added");
    Ok(id)
}

/// Removes a member (on the leader): first as a voter, then as a node.
pub async fn remove(raft: &BerthRaft, id: MemberId) -> Result<(), Status> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(Status::not_found(format!("member {id} not found")));
    }
    if membership.voter_ids().any(|v| v == id) {
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        raft.change_membership(change, true).await.map_err(status)?;
    }
    let change = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
    raft.change_membership(change, false)
        .await
        .map_err(status)?;
    tracing::info!(member = id, "member removed");
    Ok(())
}

/// Runs on every member; acts while it leads: promotes learners that have caught up.
pub async fn run_promoter(raft: BerthRaft) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if matches!(metrics.state, ServerState::Shutdown) {
            return;
        }
        let ready = learners_to_promote(&metrics);
        if ready.is_empty() {
            continue;
        }
        match raft
            .change_membership(ChangeMembers::AddVoterIds(ready.clone()), false)
            .await
        {
            Ok(_) => tracing::info!(members = ?ready, "learners promoted to voters"),
            Err(e) => tracing::warn!("promoting {ready:?}: {e}"),
        }
    }
}
