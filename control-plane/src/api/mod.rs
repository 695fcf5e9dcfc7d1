//! The gRPC API every control-plane member serves: apply, get, list, delete, watch.
//!
//! Writes are validated here, turned into a [`Command`] (uid and timestamp chosen here, so the
//! command is deterministic) and proposed through Raft; reads are linearizable unless the
//! client accepts stale data, and are served from the local store.

pub(crate) mod errors;
mod events;
pub mod nodes;
mod services;
mod watch;

use crate::membership;
use crate::raft::leader::{LeaderLink, ReadBarrier};
use crate::raft::proposer::Proposer;
use crate::raft::BerthRaft;
use crate::store::allocation::Claim;
use crate::store::{apply, Command, CommandResult, ObjectStore, Outcome, WatchHub};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::api_server::Api;
use berth_proto::pb::{self, ApplyOutcome};
use berth_proto::selector::Selector;
use berth_proto::{Kind, ObjectKey, Resource, DEFAULT_NAMESPACE};
use errors::store_status;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub struct ApiService {
    raft: BerthRaft,
    leader: LeaderLink,
    barrier: ReadBarrier,
    proposer: Proposer,
    store: ObjectStore,
    hub: WatchHub,
    /// Joins are handled one at a time, so that two joiners never get the same id.
    joins: tokio::sync::Mutex<()>,
    departure: crate::member::Departure,
    heartbeats: nodes::NodeHeartbeats,
    /// Where new Services' clusterIPs and nodePorts come from.
    service_ranges: crate::store::allocation::ServiceRanges,
}

impl ApiService {
    pub(crate) fn new(
        raft: BerthRaft,
        barrier: ReadBarrier,
        proposer: Proposer,
        leader: LeaderLink,
        store: ObjectStore,
        hub: WatchHub,
        departure: crate::member::Departure,
    ) -> Self {
        ApiService {
            service_ranges: Default::default(),
            departure,
            heartbeats: nodes::NodeHeartbeats::default(),
            leader,
            barrier,
            raft,
            proposer,
            store,
            hub,
            joins: tokio::sync::Mutex::new(()),
        }
    }

    /// Proposes a command through Raft (batched with concurrent ones) and waits for its
    /// result, to answer the client with (see `Proposer::propose_to_answer`).
    pub async fn propose(&self, command: Command) -> Result<CommandResult, Status> {
        self.proposer.propose_to_answer(command).await
    }

    /// Makes the next local read linearizable (see [`crate::raft::leader::linearize`]), or
    /// with `stale_ok` show what this member has applied.
    async fn linearize(&self, stale_ok: bool) -> Result<(), Status> {
        if stale_ok {
            return self.barrier.applied_here().await;
        }
        crate::raft::leader::linearize(&self.raft, &self.barrier, &self.leader).await
    }

    /// The leader's API, or `None` if this member leads. Membership changes run on the leader.
    async fn leader_api(&self) -> Result<Option<ApiClient<Channel>>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return Err(Status::unavailable("no leader elected yet; retry shortly"));
        };
        if leader == metrics.id {
            return Ok(None);
        }
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        let node = node
            .ok_or_else(|| Status::unavailable("the leader is not in this member's membership"))?;
        let channel = berth_proto::transport::connect(&node.addr)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Some(ApiClient::new(channel)))
    }

    /// Runs a blocking store read off the runtime threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ObjectStore) -> Result<T, crate::store::ReadError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(errors::read_error_status)
    }
}

/// The object a client sent, decoded, validated and defaulted.
fn admit(bytes: &[u8]) -> Result<Resource, Status> {
    let mut object =
        Resource::from_json(bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let errors = berth_proto::validation::validate(&object);
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(Status::invalid_argument(format!(
            "{} is invalid:\n{}",
            object.key(),
            lines.join("\n")
        )));
    }
    let kind = object.kind();
    let meta = object.metadata_mut();
    if kind.namespaced() {
        meta.namespace
            .get_or_insert_with(|| DEFAULT_NAMESPACE.to_string());
    } else {
        meta.namespace = None;
    }
    if let Resource::Secret(secret) = &mut object {
        // Like Kubernetes: stringData is a write-only convenience, stored merged into data.
        if let Some(strings) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(Default::default);
            for (key, value) in strings {
                data.insert(
                    key,
                    berth_proto::k8s_openapi::ByteString(value.into_bytes()),
                );
            }
        }
    }
    Ok(object)
}

fn parse_kind(kind: &str) -> Result<Kind, Status> {
    Kind::from_alias(kind).ok_or_else(|| {
        Status::invalid_argument(berth_proto::resource::UnknownKind(kind.into()).to_string())
    })
}

fn parse_key(object: Option<pb::ObjectRef>) -> Result<ObjectKey, Status> {
    let object = object.ok_or_else(|| Status::invalid_argument("object reference is required"))?;
    let kind = parse_kind(&object.kind)?;
    let namespace = if object.namespace.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        object.namespace
    };
    Ok(ObjectKey::new(kind, namespace, object.name))
}

fn parse_selector(selector: &str) -> Result<Selector, Status> {
    Selector::parse(selector).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Whether a stored object's labels match a selector (without decoding the whole object).
fn labels_match(selector: &Selector, object: &Value) -> bool {
    if selector.is_empty() {
        return true;
    }
    let labels = object.pointer("/metadata/labels").and_then(|l| {
        serde_json::from_value::<std::collections::BTreeMap<String, String>>(l.clone()).ok()
    });
    selector.matches(labels.as_ref())
}

fn to_json(object: &Value) -> Vec<u8> {
    serde_json::to_vec(object).expect("JSON values serialise")
}

type ProxiedStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Api for ApiService {
    type LogsStream = ProxiedStream<pb::LogChunk>;
    type ExecStream = ProxiedStream<pb::ExecOutput>;

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        Ok(Response::new(
            self.update_statuses(request.into_inner()).await?,
        ))
    }

    async fn node_heartbeat(
        &self,
        request: Request<pb::NodeHeartbeatRequest>,
    ) -> Result<Response<pb::NodeHeartbeatResponse>, Status> {
        Ok(Response::new(
            self.node_heartbeat(request.into_inner()).await?,
        ))
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        Ok(Response::new(
            self.record_events(request.into_inner()).await?,
        ))
    }

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let mut agent = self.agent_of(&request.namespace, &request.pod).await?;
        let stream = agent.logs(request).await?.into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn exec(
        &self,
        request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        use futures::StreamExt;
        let mut input = request.into_inner();
        let first = input
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("exec: no start message"))??;
        let start = first.clone().into_start()?;
        let mut agent = self.agent_of(&start.namespace, &start.pod).await?;
        let rest = input
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| futures::future::ready(m.ok()));
        let relayed = futures::stream::once(futures::future::ready(first)).chain(rest);
        let output = agent.exec(relayed).await?.into_inner();
        Ok(Response::new(Box::pin(output)))
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        crate::raft::stamp("api.enter", 0);
        let request = request.into_inner();
        let object = admit(&request.object)?;
        let key = object.key();
        let now = jiff::Timestamp::now().to_string();
        let uid = uuid::Uuid::new_v4().to_string();
        let span =
            tracing::info_span!("apply", object = %key.storage_key(), dry_run = request.dry_run);
        let _guard = span.enter();

        // A Service's picked clusterIP or nodePort may be taken first through another member:
        // the state machine refuses it, and it is picked again here.
        let mut attempt = 0;
        let (outcome, stored) = loop {
            let (value, claims) = self.allocate(&object, &uid, attempt).await?;
            attempt += 1;
            break if request.dry_run {
                self.linearize(false).await?;
                let read_key = key.clone();
                let (existing, revision) = self
                    .read(move |store| Ok((store.get(&read_key)?, store.revision()?)))
                    .await?;
                let existing: Option<Value> = existing
                    .map(|b| serde_json::from_slice(&b))
                    .transpose()
                    .map_err(|e| Status::internal(e.to_string()))?;
                let (outcome, object) =
                    apply::decide_apply(&key, existing.as_ref(), value, &uid, &now, revision + 1)
                        .map_err(store_status)?;
                (outcome, object.or(existing).unwrap_or_default())
            } else {
                match self
                    .propose(Command::Apply {
                        object: value,
                        uid: uid.clone(),
                        now: now.clone(),
                    })
                    .await?
                {
                    CommandResult::Applied { outcome, object } => (outcome, object),
                    CommandResult::Failed(error)
                        if attempt < services::ALLOCATION_ATTEMPTS
                            && Claim::refused_by(&claims, &error) =>
                    {
                        tracing::debug!("picked again: {error}");
                        continue;
                    }
                    CommandResult::Failed(error) => return Err(store_status(error)),
                    other => {
                        return Err(Status::internal(format!(
                            "unexpected apply result {other:?}"
                        )))
                    }
                }
            };
        };
        tracing::debug!(outcome = outcome.as_str(), "applied");
        let outcome = match outcome {
            Outcome::Created => ApplyOutcome::Created,
            Outcome::Configured => ApplyOutcome::Configured,
            Outcome::Unchanged => ApplyOutcome::Unchanged,
        };
        let response = Response::new(pb::ApplyResponse {
            outcome: outcome as i32,
            object: to_json(&stored),
            warnings: vec![],
        });
        crate::raft::stamp("api.exit", 0);
        Ok(response)
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let key = parse_key(request.object)?;
        self.linearize(request.stale_ok).await?;
        let read_key = key.clone();
        match self.read(move |store| store.get(&read_key)).await? {
            Some(object) => Ok(Response::new(pb::ObjectResponse { object })),
            None => Err(store_status(crate::store::StoreError::NotFound { key })),
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let kind = parse_kind(&request.kind)?;
        let selector = parse_selector(&request.label_selector)?;
        self.linearize(request.stale_ok).await?;
        let namespace = Some(request.namespace).filter(|n| !n.is_empty());
        let (objects, revision) = self
            .read(move |store| store.list(kind, namespace.as_deref()))
            .await?;
        let objects = if selector.is_empty() {
            objects
        } else {
            objects
                .into_iter()
                .filter(|bytes| {
                    serde_json::from_slice(bytes).is_ok_and(|v: Value| labels_match(&selector, &v))
                })
                .collect()
        };
        Ok(Response::new(pb::ListResponse { objects, revision }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let key = parse_key(request.object)?;
        let resource_version = Some(request.resource_version).filter(|v| *v != 0);
        match self
            .propose(Command::Delete {
                key,
                resource_version,
            })
            .await?
        {
            CommandResult::Deleted { object } => Ok(Response::new(pb::ObjectResponse {
                object: to_json(&object),
            })),
            CommandResult::Failed(error) => Err(store_status(error)),
            other => Err(Status::internal(format!(
                "unexpected delete result {other:?}"
            ))),
        }
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let filter = watch::Filter {
            kind: parse_kind(&request.kind)?,
            namespace: Some(request.namespace).filter(|n| !n.is_empty()),
            selector: parse_selector(&request.label_selector)?,
        };
        if request.from_revision == 0 {
            // From now: a write this member already answered is not news.
            self.linearize(true).await?;
        }
        let stream =
            watch::start(self.store.clone(), &self.hub, filter, request.from_revision).await?;
        Ok(Response::new(stream))
    }

    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        if let Some(mut leader) = self.leader_api().await? {
            return leader.members(request.into_inner()).await;
        }
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(membership::members_view(&metrics)))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let request = request.into_inner();
        if request.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "{:?} is not an address (host:port)",
                request.addr
            )));
        }
        if let Some(mut leader) = self.leader_api().await? {
            return leader.join(request).await;
        }
        let _one_at_a_time = self.joins.lock().await;
        let id = membership::add_learner(&self.raft, &request.addr).await?;
        Ok(Response::new(pb::JoinResponse { id }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let request = request.into_inner();
        if let Some(mut leader) = self.leader_api().await? {
            return leader.remove_member(request).await;
        }
        membership::remove(&self.raft, request.id).await?;
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(membership::members_view(&metrics)))
    }

    async fn leave(
        &self,
        _request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let me = metrics.id;
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().all(|v| v == me) {
            return Err(Status::failed_precondition(
                "this is the cluster's only voter: it cannot leave (stop it instead)",
            ));
        }
        // Removed through the leader like any member; a leader removes itself, and once it
        // stops the others elect a new one.
        let remaining = match self.leader_api().await? {
            Some(mut leader) => leader
                .remove_member(pb::RemoveMemberRequest { id: me })
                .await?
                .into_inner(),
            None => {
                membership::remove(&self.raft, me).await?;
                membership::members_view(&self.raft.metrics().borrow().clone())
            }
        };
        self.departure
            .record()
            .map_err(|e| Status::internal(format!("recording the departure: {e}")))?;
        tracing::info!(member = me, "left the cluster");
        Ok(Response::new(remaining))
    }

    async fn cluster(
        &self,
        _request: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::ClusterResponse>, Status> {
        self.linearize(true).await?;
        let revision = self.read(|store| store.revision()).await?;
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(pb::ClusterResponse {
            version: berth_proto::VERSION.to_string(),
            member_id: metrics.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            revision,
            last_applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        }))
    }
}
