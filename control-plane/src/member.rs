//! One control-plane member: its data directory, its Raft node and its gRPC server.
//!
//! The data directory holds `member.json` (who this member is), `raft-log/` (the Raft log and
//! vote: a write-ahead log synced on every append, see `raft::wal`), `berth.redb` (state
//! machine and snapshot, made durable with each snapshot) and `registry/` (the registry's
//! blobs and uploads in progress).
//!
//! One listener serves everything: the gRPC services (API, Raft, registry blobs between
//! members) over HTTP/2, the registry's HTTP API (`/v2/...`) over HTTP/1.1 or HTTP/2, and the
//! stream connections members keep for AppendEntries and forwarded writes (`raft::wire`),
//! told apart by their first bytes (`transport::split_incoming`).

use crate::api::ApiService;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::service::RaftService;
use crate::raft::state_machine::{StateMachine, Visible};
use crate::raft::{BerthRaft, MemberId};
use crate::registry::{Registry, RegistryParts};
use crate::store::{Command, ObjectStore, WatchHub};
use berth_proto::pb::api_server::ApiServer;
use berth_proto::pb::raft_server::RaftServer;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub data_dir: PathBuf,
    /// Where the API and Raft listen; `None` on restart means the address used before.
    pub listen: Option<SocketAddr>,
    /// Bootstrap a new one-member cluster in an empty data directory.
    pub init: bool,
    /// Join the cluster this member (any member) belongs to, with an empty data directory.
    pub join: Option<String>,
    /// Build a snapshot (and compact the log) after this many applied entries.
    pub snapshot_threshold: u64,
    /// Revisions of change history kept for watches to resume from.
    pub watch_history: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// When silent nodes become NotReady and lose their pods (see [`crate::nodes`]).
    pub node_lifecycle: crate::nodes::LifecycleConfig,
    /// How long Events are kept after they last happened (`--event-ttl`).
    pub event_ttl: Duration,
    /// Where Services' clusterIPs and nodePorts come from (`--service-cluster-ip-range`,
    /// `--service-node-port-range`); every member should be given the same.
    pub service_ranges: crate::store::allocation::ServiceRanges,
}

impl MemberConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        MemberConfig {
            data_dir: data_dir.into(),
            listen: None,
            init: false,
            join: None,
            snapshot_threshold: 10_000,
            watch_history: 10_000,
            heartbeat_interval_ms: 80,
            // A follower of an established leader stands for election after openraft's leader
            // lease (= the max) plus a random timeout in this range: 600-800 ms, plus a
            // pre-vote round. Measured by bench/run-store.sh.
            election_timeout_ms: (200, 400),
            node_lifecycle: crate::nodes::LifecycleConfig::default(),
            event_ttl: crate::events::expiry::DEFAULT_TTL,
            service_ranges: Default::default(),
        }
    }

    /// Whether the data directory already holds a member (start it as it is, without `init`).
    pub fn holds_member(&self) -> bool {
        self.data_dir.join(IDENTITY_FILE).exists()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("{path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("{0} already holds a member; start it without --init")]
    AlreadyInitialized(PathBuf),
    #[error(
        "{0} holds no member: bootstrap a cluster there with --init, or join one with --join ADDR"
    )]
    NotInitialized(PathBuf),
    #[error("--init and --join exclude each other: bootstrap a new cluster, or join one")]
    InitAndJoin,
    #[error("joining the cluster through {peer}: {message}")]
    Join { peer: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening the store {path}: {source}")]
    Store { path: PathBuf, source: redb::Error },
    #[error("raft: {0}")]
    Raft(String),
    #[error(
        "the member in {0} left its cluster; remove the directory to join again as a new member"
    )]
    Left(PathBuf),
}

/// Who this member is, kept next to its store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    id: MemberId,
    addr: SocketAddr,
    /// Set once the member has left the cluster: its data directory is done with.
    #[serde(default)]
    left: bool,
}

impl Identity {
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("identity serialises");
        write_durably(path, &bytes)
    }
}

/// How a member that leaves the cluster (the `Leave` call) records it and tells its owner.
#[derive(Clone)]
pub(crate) struct Departure {
    identity_path: PathBuf,
    identity: Identity,
    departed: tokio::sync::watch::Sender<bool>,
}

impl Departure {
    /// Marks the data directory as left (a restart then refuses it) and wakes
    /// [`Member::departed`].
    pub(crate) fn record(&self) -> std::io::Result<()> {
        let identity = Identity {
            left: true,
            ..self.identity.clone()
        };
        identity.write(&self.identity_path)?;
        self.departed.send_replace(true);
        Ok(())
    }
}

const IDENTITY_FILE: &str = "member.json";
const STORE_FILE: &str = "berth.redb";
const LOG_DIR: &str = "raft-log";
const REGISTRY_DIR: &str = "registry";

pub struct Member {
    pub id: MemberId,
    /// The address the API and Raft are served on.
    pub addr: SocketAddr,
    pub raft: BerthRaft,
    shutdown: Option<oneshot::Sender<()>>,
    departed: tokio::sync::watch::Receiver<bool>,
    /// The store file; closed once every part of this member that uses it has stopped.
    store_file: std::sync::Weak<redb::Database>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

fn data_dir_error(path: &Path, error: impl std::fmt::Display) -> MemberError {
    MemberError::DataDir {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

impl Member {
    /// Opens (or with `init`, creates) the member in `config.data_dir` and serves it.
    pub async fn start(config: MemberConfig) -> Result<Member, MemberError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| data_dir_error(dir, e))?;
        let identity_path = dir.join(IDENTITY_FILE);
        let existing: Option<Identity> = match std::fs::read(&identity_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| data_dir_error(&identity_path, e))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(data_dir_error(&identity_path, e)),
        };
        if config.init && config.join.is_some() {
            return Err(MemberError::InitAndJoin);
        }
        match (&existing, config.init) {
            (Some(identity), _) if identity.left => return Err(MemberError::Left(dir.clone())),
            (Some(_), true) => return Err(MemberError::AlreadyInitialized(dir.clone())),
            (None, false) if config.join.is_none() => {
                return Err(MemberError::NotInitialized(dir.clone()))
            }
            _ => {}
        }
        let listen = config
            .listen
            .or(existing.as_ref().map(|i| i.addr))
            .unwrap_or_else(|| {
                berth_proto::transport::DEFAULT_API_ADDR
                    .parse()
                    .expect("valid default")
            });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| MemberError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MemberError::Listen {
                addr: listen,
                source,
            })?;
        let id = match (&existing, &config.join) {
            (Some(identity), _) => identity.id,
            (None, Some(peer)) => join(peer, addr).await?,
            (None, None) => 1,
        };

        let (raft, store, hub, visible, store_file) =
            open_raft(id, &dir.join(STORE_FILE), &dir.join(LOG_DIR), &config).await?;

        let barrier = crate::raft::leader::ReadBarrier::new(visible.clone());
        let contact = crate::raft::prevote::LeaderContact::default();
        // Followers refuse votes for election_timeout_max after their last heartbeat
        // (openraft's leader lease): pre-vote support follows the same window.
        let election_timeout = Duration::from_millis(config.election_timeout_ms.1);
        let (departed_tx, departed) = tokio::sync::watch::channel(false);
        let departure = Departure {
            identity_path: identity_path.clone(),
            identity: Identity {
                id,
                addr,
                left: false,
            },
            departed: departed_tx,
        };
        let leader_link = crate::raft::leader::LeaderLink::default();
        let proposer =
            crate::raft::proposer::Proposer::start(raft.clone(), leader_link.clone(), visible);
        let registry_dir = dir.join(REGISTRY_DIR);
        let registry = Registry::open(
            &registry_dir,
            RegistryParts {
                id,
                raft: raft.clone(),
                barrier: barrier.clone(),
                leader: leader_link.clone(),
                proposer: proposer.clone(),
                store: store.clone(),
            },
        )
        .map_err(|e| data_dir_error(&registry_dir, e))?;
        let events = crate::events::start(raft.clone(), proposer.clone());
        let event_expiry = crate::events::expiry::run(
            raft.clone(),
            store.clone(),
            proposer.clone(),
            config.event_ttl,
        );
        let cache_source = crate::cache::CacheSource {
            raft: raft.clone(),
            barrier: barrier.clone(),
            store: store.clone(),
            hub: hub.clone(),
        };
        let scheduler = crate::scheduler::run::run(
            cache_source.clone(),
            proposer.clone(),
            events.with_component("default-scheduler"),
        );
        let controllers =
            crate::controllers::run::run(cache_source.clone(), proposer.clone(), events.clone());
        let endpoints = crate::controllers::endpoints::run(cache_source.clone(), proposer.clone());
        let api = ApiService::new(
            raft.clone(),
            barrier.clone(),
            proposer.clone(),
            leader_link,
            store,
            hub,
            departure,
        )
        .with_service_ranges(config.service_ranges.clone());
        let node_lifecycle = api.node_lifecycle(config.node_lifecycle, events);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (incoming, streams) = berth_proto::transport::split_incoming(listener);
        // Raft's replication traffic (see raft/wire.rs); it stops with the gRPC server.
        let streams_stop = tokio_util::sync::CancellationToken::new();
        let handler = crate::raft::wire::Handler {
            raft: raft.clone(),
            contact: contact.clone(),
            proposer: proposer.clone(),
        };
        tokio::spawn(crate::raft::wire::serve(
            streams,
            handler,
            streams_stop.clone(),
        ));
        // The registry's routes (`/v2/...`) and the gRPC services (`/berth.v1.*/...`) share
        // the router: paths never overlap.
        let routes = tonic::service::Routes::from(registry.router())
            .add_service(registry.blob_service())
            .add_service(ApiServer::new(api).max_decoding_message_size(16 << 20));
        let server = tokio::spawn(
            berth_proto::transport::server()
                .add_routes(routes)
                .add_service(
                    RaftServer::new(RaftService::new(
                        raft.clone(),
                        barrier,
                        contact.clone(),
                        election_timeout,
                        proposer,
                    ))
                    .max_decoding_message_size(256 << 20),
                )
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown_rx.await;
                    streams_stop.cancel();
                }),
        );
        let member = Member {
            id,
            addr,
            raft,
            shutdown: Some(shutdown_tx),
            departed,
            store_file,
            server,
        };

        if config.init {
            let members = BTreeMap::from([(
                id,
                BasicNode {
                    addr: addr.to_string(),
                },
            )]);
            member
                .raft
                .initialize(members)
                .await
                .map_err(|e| MemberError::Raft(e.to_string()))?;
            member.wait_for_leader(Duration::from_secs(10)).await?;
            // Like Kubernetes, a cluster starts with the namespace objects land in by default.
            let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": berth_proto::DEFAULT_NAMESPACE}});
            let command = Command::Apply {
                object: namespace,
                uid: uuid::Uuid::new_v4().to_string(),
                now: jiff::Timestamp::now().to_string(),
            };
            member
                .raft
                .client_write(command.into())
                .await
                .map_err(|e| MemberError::Raft(e.to_string()))?;
        }
        // Written last: a data dir with an identity is a bootstrapped member. A restart on
        // another address records the new one.
        if config.init || existing.as_ref().map(|i| i.addr) != Some(addr) {
            let identity = Identity {
                id,
                addr,
                left: false,
            };
            identity
                .write(&identity_path)
                .map_err(|e| data_dir_error(&identity_path, e))?;
        }
        tokio::spawn(crate::membership::run_promoter(member.raft.clone()));
        tokio::spawn(scheduler);
        tokio::spawn(node_lifecycle);
        tokio::spawn(controllers);
        tokio::spawn(endpoints);
        tokio::spawn(event_expiry);
        let tick = Duration::from_millis(config.heartbeat_interval_ms);
        tokio::spawn(crate::raft::prevote::run(
            member.raft.clone(),
            contact,
            election_timeout,
            tick,
        ));
        tracing::info!(member = id, %addr, "control-plane member serving");
        Ok(member)
    }

    /// Waits until some member leads (this one, in a one-member cluster).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<MemberId, MemberError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| MemberError::Raft(e.to_string()))?;
        Ok(metrics.current_leader.expect("waited for it"))
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        let _ = (&mut self.server).await;
        // Tasks of the stopped server and Raft let go of the store a moment later; a member
        // restarted in the same process must find the file closed.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.store_file.strong_count() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves once this member has left the cluster (see `Leave`); it should then stop.
    pub fn departed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut departed = self.departed.clone();
        async move {
            let _ = departed.wait_for(|left| *left).await;
        }
    }

    /// Resolves when the gRPC server stops (it only stops on shutdown or a fatal error).
    pub async fn serving(&mut self) -> Result<(), String> {
        match (&mut self.server).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Asks the cluster `peer` belongs to for a member id; the leader adds this member (at
/// `addr`) as a learner.
async fn join(peer: &str, addr: SocketAddr) -> Result<MemberId, MemberError> {
    let error = |message: String| MemberError::Join {
        peer: peer.to_string(),
        message,
    };
    let channel = berth_proto::transport::connect(peer)
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut api = berth_proto::pb::api_client::ApiClient::new(channel);
    let request = berth_proto::pb::JoinRequest {
        addr: addr.to_string(),
    };
    let response = api
        .join(request)
        .await
        .map_err(|status| error(status.message().to_string()))?;
    let id = response.into_inner().id;
    tracing::info!(member = id, peer, "joined as a learner");
    Ok(id)
}

async fn open_raft(
    id: MemberId,
    path: &Path,
    log_path: &Path,
    config: &MemberConfig,
) -> Result<
    (
        BerthRaft,
        ObjectStore,
        WatchHub,
        Visible,
        std::sync::Weak<redb::Database>,
    ),
    MemberError,
> {
    let db = Arc::new(open_db(path).await?);
    let store_file = Arc::downgrade(&db);
    let store =
        ObjectStore::new(db.clone(), config.watch_history).map_err(|e| store_error(path, e))?;
    let hub = WatchHub::new(4096);
    // Replays the log, and waits for a member stopped in this process to let go of it.
    let log_store = {
        let (db, dir) = (db.clone(), log_path.to_path_buf());
        tokio::task::spawn_blocking(move || LogStore::open(&dir, id, &db))
            .await
            .map_err(|e| MemberError::Raft(e.to_string()))?
            .map_err(|e| data_dir_error(log_path, e))?
    };
    let durable = log_store.durable();
    let state_machine = StateMachine::new(db, store.clone(), hub.clone())
        .map_err(|e| store_error(path, e))?
        .applying_only_durable(durable.clone());
    let visible = state_machine.visible();
    let raft_config = openraft::Config {
        cluster_name: "berth".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_ms.0,
        election_timeout_max: config.election_timeout_ms.1,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        max_in_snapshot_log_to_keep: 1000,
        // openraft gives an AppendEntries one heartbeat interval to complete. Entries are
        // group-committed batches of up to 512 commands, so few of them per request: a member
        // catching up after a restart must not send requests that can never finish in time.
        max_payload_entries: 16,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MemberError::Raft(e.to_string()))?;
    let raft = BerthRaft::new(
        id,
        Arc::new(raft_config),
        NetworkFactory::new(durable),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| MemberError::Raft(e.to_string()))?;
    Ok((raft, store, hub, visible, store_file))
}

/// Opens (or creates) a redb file. A member stopped in this process lets go of its files a
/// moment after its last reference goes (the close runs on the thread that dropped it):
/// that is waited out.
async fn open_db(path: &Path) -> Result<redb::Database, MemberError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut attempts = 0;
        loop {
            match redb::Database::create(&owned) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                result => break result,
            }
        }
    })
    .await
    .map_err(|e| MemberError::Raft(e.to_string()))?
    .map_err(|e| store_error(path, e.into()))
}

fn store_error(path: &Path, source: redb::Error) -> MemberError {
    MemberError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a small file so that a crash leaves either the old or the new content.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
