//! What node agents need from the API, and what the API needs from them: status reports in
//! batches, and logs and exec relayed to the agent of the node that runs a pod.
//!
//! ```text
//!  berth logs/exec ──▶ API (any member) ── pod.spec.nodeName ──▶ Node status address
//!                                         ──▶ that node's agent (Agent service) ──▶ stream back
//! ```

use super::{errors, parse_key, to_json, ApiService};
use crate::store::{Command, CommandResult};
use berth_proto::k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSetStatus};
use berth_proto::k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodStatus, ServiceStatus};
use berth_proto::pb::agent_client::AgentClient;
use berth_proto::pb::{self};
use berth_proto::{Kind, ObjectKey};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Status;

/// When each node's agent was last heard from, as the leader saw it. In memory only: a new
/// leader starts empty, which gives every node a fresh grace period (see DESIGN.md).
#[derive(Clone, Default)]
pub struct NodeHeartbeats(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
);

impl NodeHeartbeats {
    pub fn record(&self, node: &str) {
        self.0
            .lock()
            .expect("heartbeats lock")
            .insert(node.to_string(), std::time::Instant::now());
    }

    /// When each node was last heard from.
    pub fn last_heard(&self) -> std::collections::HashMap<String, std::time::Instant> {
        self.0.lock().expect("heartbeats lock").clone()
    }

    /// How long ago `node` was last heard from, if it was since this member started leading.
    pub fn silent_for(&self, node: &str) -> Option<std::time::Duration> {
        self.0
            .lock()
            .expect("heartbeats lock")
            .get(node)
            .map(std::time::Instant::elapsed)
    }
}

/// A status must be the kind's own status type.
fn check_status(kind: Kind, status: &Value) -> Result<(), String> {
    let checked = match kind {
        Kind::Pod => serde_json::from_value::<PodStatus>(status.clone()).map(drop),
        Kind::Node => serde_json::from_value::<NodeStatus>(status.clone()).map(drop),
        Kind::Service => serde_json::from_value::<ServiceStatus>(status.clone()).map(drop),
        Kind::Deployment => serde_json::from_value::<DeploymentStatus>(status.clone()).map(drop),
        Kind::ReplicaSet => serde_json::from_value::<ReplicaSetStatus>(status.clone()).map(drop),
        other => return Err(format!("{} has no status", other.as_str())),
    };
    checked.map_err(|e| format!("status: {e}"))
}

impl ApiService {
    /// The node lifecycle loop (see [`crate::nodes`]), fed by this API's heartbeats.
    pub(crate) fn node_lifecycle(
        &self,
        config: crate::nodes::LifecycleConfig,
        events: crate::events::EventRecorder,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::nodes::run::run(
            crate::cache::CacheSource {
                raft: self.raft.clone(),
                barrier: self.barrier.clone(),
                store: self.store.clone(),
                hub: self.hub.clone(),
            },
            self.proposer.clone(),
            self.heartbeats.clone(),
            config,
            events.with_component("node-controller"),
        )
    }

    pub(super) async fn node_heartbeat(
        &self,
        request: pb::NodeHeartbeatRequest,
    ) -> Result<pb::NodeHeartbeatResponse, Status> {
        if request.node.is_empty() {
            return Err(Status::invalid_argument("heartbeat: no node name"));
        }
        if let Some(mut leader) = self.leader_api().await? {
            return Ok(leader.node_heartbeat(request).await?.into_inner());
        }
        self.heartbeats.record(&request.node);
        Ok(pb::NodeHeartbeatResponse {})
    }

    pub(super) async fn update_statuses(
        &self,
        request: pb::UpdateStatusRequest,
    ) -> Result<pb::UpdateStatusResponse, Status> {
        // Refused updates get their error in place; the rest go through Raft as one batch.
        let mut results: Vec<Option<pb::StatusResult>> = Vec::new();
        let mut commands = Vec::new();
        for update in request.updates {
            let parsed = parse_key(update.object).and_then(|key| {
                let status: Value = serde_json::from_slice(&update.status)
                    .map_err(|e| Status::invalid_argument(format!("status: {e}")))?;
                check_status(key.kind, &status).map_err(Status::invalid_argument)?;
                Ok(Command::UpdateStatus {
                    key,
                    status,
                    resource_version: Some(update.resource_version).filter(|v| *v != 0),
                    uid: Some(update.uid).filter(|u| !u.is_empty()),
                })
            });
            match parsed {
                Ok(command) => {
                    commands.push(command);
                    results.push(None);
                }
                Err(status) => results.push(Some(pb::StatusResult {
                    error: status.message().to_string(),
                    object: vec![],
                })),
            }
        }
        let mut applied = match commands.len() {
            0 => Vec::new(),
            1 => vec![self.propose(commands.pop().expect("one")).await?],
            _ => match self.propose(Command::Batch(commands)).await? {
                CommandResult::Batch(results) => results,
                other => return Err(Status::internal(format!("unexpected result {other:?}"))),
            },
        }
        .into_iter();
        let results = results
            .into_iter()
            .map(|refused| {
                refused.unwrap_or_else(|| match applied.next() {
                    Some(CommandResult::Applied { object, .. }) => pb::StatusResult {
                        error: String::new(),
                        object: to_json(&object),
                    },
                    Some(CommandResult::Failed(error)) => pb::StatusResult {
                        error: error.to_string(),
                        object: vec![],
                    },
                    other => pb::StatusResult {
                        error: format!("unexpected result {other:?}"),
                        object: vec![],
                    },
                })
            })
            .collect();
        Ok(pb::UpdateStatusResponse { results })
    }

    /// The agent of the node `namespace/pod` is bound to.
    pub(super) async fn agent_of(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<AgentClient<Channel>, Status> {
        self.linearize(false).await?;
        let key = ObjectKey::new(Kind::Pod, namespace, pod);
        let read_key = key.clone();
        let bytes = self
            .read(move |store| store.get(&read_key))
            .await?
            .ok_or_else(|| {
                errors::store_status(crate::store::StoreError::NotFound { key: key.clone() })
            })?;
        let pod: Pod =
            serde_json::from_slice(&bytes).map_err(|e| Status::internal(e.to_string()))?;
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "pod {namespace}/{} is not bound to a node yet",
                    pod.metadata.name.clone().unwrap_or_default()
                ))
            })?;
        let node_key = ObjectKey::new(Kind::Node, "", &node_name);
        let bytes = self
            .read(move |store| store.get(&node_key))
            .await?
            .ok_or_else(|| Status::unavailable(format!("node {node_name} is not registered")))?;
        let node: Node =
            serde_json::from_slice(&bytes).map_err(|e| Status::internal(e.to_string()))?;
        let addr = agent_addr(&node)
            .ok_or_else(|| Status::unavailable(format!("node {node_name} reports no address")))?;
        let channel = berth_proto::transport::connect(&addr)
            .await
            .map_err(|e| Status::unavailable(format!("node {node_name} ({addr}): {e}")))?;
        Ok(AgentClient::new(channel))
    }
}

/// Where a node's agent listens: its InternalIP and the kubelet endpoint port.
pub fn agent_addr(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let ip = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    let port = status
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}
