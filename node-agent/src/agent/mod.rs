//! The node agent: registers its Node, runs the pods bound to it, reports their status.
//!
//! ```text
//!  control plane ── list + watch Pods ──▶ pods bound here (spec.nodeName) ──▶ one worker per pod
//!        ▲                                                                  (pod.rs: network,
//!        └──── UpdateStatus (batched, changed only) ◀── status reporter ◀──  containers, probes,
//!                                                                            restarts)
//!        ├── list + watch Services, EndpointSlices, Secrets ──▶ services.rs: the node's proxy
//!        └── list + watch Nodes ──▶ routes.rs: routes to the other nodes' pod subnets
//! ```
//!
//! The agent keeps no state the cluster needs: after a restart (even SIGKILL) it finds its
//! containers still running under their shims, adopts them (pod.rs reads the records it left
//! in the data directory) and removes whatever belongs to no pod bound here any more.

mod api;
pub mod config;
pub mod events;
mod exec_bridge;
pub mod images;
pub mod informer;
pub mod pod;
pub mod pod_config;
pub mod restart;
pub mod routes;
pub mod service;
pub mod services;
pub mod status;
pub mod volumes;

use crate::network::PodNetwork;
use crate::runtime::Runtime;
use api::ApiConnection;
use berth_proto::pb;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control-plane members; the agent uses whichever answers.
    pub servers: Vec<String>,
    /// The Node's name.
    pub name: String,
    pub data_dir: PathBuf,
    /// Where the agent serves logs and exec to the API server.
    pub listen: SocketAddr,
    /// The node address reported to the cluster (default: the listen address's IP).
    pub address: Option<IpAddr>,
    /// The berth binary, re-executed as each container's shim.
    pub shim: PathBuf,
    /// On shutdown, stop every pod and remove the node's bridge (`berth up`), instead of
    /// leaving containers running for the next agent to adopt (`berth agent`).
    pub stop_pods_on_exit: bool,
    /// Run the node's service proxy (see [`services`]).
    pub proxy: bool,
    /// Where the proxy serves its `/metrics`; `None`: nowhere.
    pub proxy_metrics: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("control plane: {0}")]
    Api(String),
    #[error("registering node {name}: {message}")]
    Register { name: String, message: String },
    #[error("{0}")]
    Setup(String),
}

/// What every pod worker shares.
pub struct NodeContext {
    pub config: AgentConfig,
    pub runtime: Runtime,
    pub network: PodNetwork,
    /// Images pulled from the cluster registry (`DATA_DIR/images`).
    pub images: Arc<images::Images>,
    pub node_ip: IpAddr,
    /// Pod statuses to report, by pod (namespace, name); `None` once the pod left the node.
    pub statuses: mpsc::UnboundedSender<StatusReport>,
    /// What the logs and exec service needs to find a pod's containers.
    pub pods: std::sync::Mutex<HashMap<(String, String), pod::PodHandle>>,
    /// Reads the ConfigMaps and Secrets pods use.
    pub(crate) api: ApiConnection,
    /// The node's Events (see [`events`]).
    pub events: berth_proto::events::EventRecorder,
}

impl NodeContext {
    pub fn pods_dir(&self) -> PathBuf {
        self.config.data_dir.join("pods")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.config.data_dir.join("logs")
    }
}

/// Runs the agent until `shutdown` resolves. Containers keep running after it returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let node_ip = config.address.unwrap_or(config.listen.ip());
    if node_ip.is_unspecified() {
        return Err(AgentError::Setup(format!(
            "--listen {} names no address the control plane can reach this node at: pass --address IP",
            config.listen
        )));
    }
    let mut api = ApiConnection::connect(config.servers.clone()).await?;
    let pod_cidr = register(&mut api, &config, node_ip).await?;
    tracing::info!(node = %config.name, %pod_cidr, "node registered");

    let setup = |e: &dyn std::fmt::Display| AgentError::Setup(e.to_string());
    std::fs::create_dir_all(&config.data_dir).map_err(|e| setup(&e))?;
    let runtime = Runtime::new(config.data_dir.join("containers"), config.shim.clone())
        .map_err(|e| setup(&e))?;
    let subnet: ipnet::Ipv4Net = pod_cidr.parse().map_err(|e| setup(&e))?;
    let network = PodNetwork::new(config.data_dir.join("network"), subnet, "berth0".into())
        .map_err(|e| setup(&e))?;
    network.ensure_bridge().await.map_err(|e| setup(&e))?;
    // The registry is served by every control-plane member on its API address.
    let registry = berth_image::registry::RegistryClient::new(
        berth_proto::transport::http_client(),
        config.servers.clone(),
    );
    let images =
        images::Images::new(config.data_dir.join("images"), registry).map_err(|e| setup(&e))?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| AgentError::Setup(format!("cannot listen on {}: {e}", config.listen)))?;
    let (statuses, status_queue) = mpsc::unbounded_channel();
    let context = Arc::new(NodeContext {
        config: config.clone(),
        runtime,
        network,
        images: Arc::new(images),
        node_ip,
        statuses,
        pods: Default::default(),
        api: api.clone(),
        events: events::start(api.clone(), &config.name),
    });
    let service = tokio::spawn(
        berth_proto::transport::server()
            .add_service(pb::agent_server::AgentServer::new(
                service::AgentService::new(context.clone()),
            ))
            .serve_with_incoming(berth_proto::transport::incoming(listener)),
    );
    let reporter = tokio::spawn(report_statuses(api.clone(), status_queue));
    let heartbeat = tokio::spawn(heartbeat(api.clone(), config.name.clone()));
    let image_gc = tokio::spawn(collect_image_garbage(context.clone()));
    let routes = tokio::spawn(routes::run(api.clone(), config.name.clone(), node_ip));
    let service_interface = crate::network::services::ServiceInterface::default();
    let proxy = config.proxy.then(|| {
        tokio::spawn(services::run(
            api.clone(),
            services::NodeAddresses {
                internal_ip: node_ip,
            },
            config.proxy_metrics,
            service_interface.clone(),
        ))
    });
    // The first `api: ADDR`-like line says the agent serves (scripts and tests read it).
    println!("agent: {}", config.listen);

    let mut workers = HashMap::new();
    tokio::select! {
        result = sync_pods(api, context.clone(), &mut workers) => result?,
        _ = shutdown => {
            if context.config.stop_pods_on_exit {
                tracing::info!("agent stopping; stopping its pods");
                if let Some(proxy) = &proxy {
                    proxy.abort();
                }
                stop_every_pod(&context, workers).await;
                if let Err(e) = service_interface.remove().await {
                    tracing::warn!("removing {}: {e}", service_interface.name());
                }
            } else {
                tracing::info!("agent stopping; containers keep running");
            }
        }
    }
    service.abort();
    reporter.abort();
    heartbeat.abort();
    image_gc.abort();
    routes.abort();
    if let Some(proxy) = proxy {
        proxy.abort();
    }
    Ok(())
}

/// How long a stopping node waits for its pods' graceful termination before it kills what
/// is left (a Ctrl-C should not take a pod's whole 30 s grace period).
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Terminates every pod (preStop, SIGTERM, then SIGKILL at the deadline), then removes what
/// any pod left — containers, cgroups, mounts, network namespaces, veths — and the bridge.
async fn stop_every_pod(context: &Arc<NodeContext>, workers: HashMap<String, pod::Worker>) {
    let tasks: Vec<_> = workers
        .into_values()
        .map(pod::Worker::stop_into_task)
        .collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(STOP_DEADLINE, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!("pods still terminating after {STOP_DEADLINE:?}: killing them");
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    pod::remove_orphans(context, &HashMap::new()).await;
    if let Err(e) = context.network.remove_node_network().await {
        tracing::warn!("removing the node's network: {e}");
    }
    context.runtime.remove_cgroup_parent();
}

/// How often the node removes image data nothing uses any more.
const IMAGE_GC_INTERVAL: Duration = Duration::from_secs(600);

async fn collect_image_garbage(context: Arc<NodeContext>) {
    loop {
        tokio::time::sleep(IMAGE_GC_INTERVAL).await;
        let ctx = context.clone();
        let in_use = tokio::task::spawn_blocking(move || pod::images_in_use(&ctx))
            .await
            .unwrap_or_default();
        context.images.collect_garbage(in_use).await;
    }
}

/// Applies the Node (the control plane assigns its pod subnet) and reports its status.
async fn register(
    api: &mut ApiConnection,
    config: &AgentConfig,
    node_ip: IpAddr,
) -> Result<String, AgentError> {
    let error = |message: String| AgentError::Register {
        name: config.name.clone(),
        message,
    };
    // A Node registered before keeps its labels, annotations and spec (taints, unschedulable):
    // only a missing pod subnet makes the agent apply it again (the control plane assigns one).
    let stored = match api.get("Node", "", &config.name).await.map_err(error)? {
        Some(node) if node.pointer("/spec/podCIDR").is_some() => node,
        Some(node) => api.apply(&node).await.map_err(error)?,
        None => {
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": config.name, "labels": {"kubernetes.io/hostname": config.name}},
                "spec": {},
            });
            api.apply(&node).await.map_err(error)?
        }
    };
    let pod_cidr = stored
        .pointer("/spec/podCIDR")
        .and_then(|v| v.as_str())
        .ok_or_else(|| error("the control plane assigned no pod subnet".into()))?
        .to_string();
    api.update_status(
        "Node",
        "",
        &config.name,
        node_status(config, node_ip, &pod_cidr),
    )
    .await
    .map_err(error)?;
    Ok(pod_cidr)
}

/// Capacity, addresses and the Ready condition, reported when the agent starts.
fn node_status(config: &AgentConfig, node_ip: IpAddr, _pod_cidr: &str) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "0".into());
    let capacity =
        json!({"cpu": cpus.to_string(), "memory": format!("{memory_kib}Ki"), "pods": "110"});
    let now = jiff::Timestamp::now().to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": node_ip.to_string()},
            {"type": "Hostname", "address": config.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.listen.port()}},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "AgentReady",
            "message": "berth agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": std::env::consts::OS,
            "kernelVersion": kernel, "kubeletVersion": format!("berth-{}", berth_proto::VERSION),
            "containerRuntimeVersion": "berth://libcontainer-0.7.0", "kubeProxyVersion": "",
            "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

/// Tells the leader this node is alive, every 500 ms (in its memory, not through Raft): the
/// leader marks a node silent for 1.5 s (by default) NotReady.
async fn heartbeat(mut api: ApiConnection, node: String) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(e) = api.heartbeat(&node).await {
            tracing::warn!("node heartbeat: {e}");
        }
    }
}

/// A pod's (namespace, name, uid) and latest status, or `None`: the pod is gone, forget
/// what was sent for it.
pub type StatusReport = (
    (String, String, String),
    Option<k8s_openapi::api::core::v1::PodStatus>,
);

/// Sends pod statuses in batches: whatever changed since the last batch, latest only.
async fn report_statuses(mut api: ApiConnection, mut queue: mpsc::UnboundedReceiver<StatusReport>) {
    let mut sent: HashMap<(String, String, String), serde_json::Value> = HashMap::new();
    while let Some(first) = queue.recv().await {
        let mut batch: HashMap<(String, String, String), serde_json::Value> = HashMap::new();
        let mut add = |(key, status): StatusReport| match status {
            Some(status) => {
                batch.insert(
                    key,
                    serde_json::to_value(status).expect("statuses serialise"),
                );
            }
            None => {
                batch.remove(&key);
                sent.remove(&key);
            }
        };
        add(first);
        // Gather what arrives within a short window into the same batch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(item) = queue.try_recv() {
            add(item);
        }
        batch.retain(|key, status| sent.get(key) != Some(status));
        if batch.is_empty() {
            continue;
        }
        let updates: Vec<(String, String, String, serde_json::Value)> = batch
            .iter()
            .map(|((ns, name, uid), status)| {
                (ns.clone(), name.clone(), uid.clone(), status.clone())
            })
            .collect();
        match api.update_statuses("Pod", updates).await {
            Ok(errors) => {
                for ((key, status), error) in batch.into_iter().zip(errors) {
                    match error {
                        None => {
                            sent.insert(key, status);
                        }
                        // A pod deleted meanwhile: nothing to report to.
                        Some(e) if e.contains("not found") => {
                            sent.remove(&key);
                        }
                        Some(e) => {
                            tracing::warn!(pod = %format!("{}/{}", key.0, key.1), "status: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("reporting pod statuses: {e}"),
        }
    }
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Lists and watches pods; starts a worker for each pod bound here, stops it when the pod
/// goes. Relists when the watch expires or breaks.
/// Runs the pods bound here, one worker each in `workers` (left to the caller on shutdown).
async fn sync_pods(
    mut api: ApiConnection,
    context: Arc<NodeContext>,
    workers: &mut HashMap<String, pod::Worker>,
) -> Result<(), AgentError> {
    let me = context.config.name.clone();
    let mut first_list = true;
    loop {
        let (pods, revision) = match api.list_pods().await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!("listing pods: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut desired: HashMap<String, Pod> = pods
            .into_iter()
            .filter(|p| bound_to(p, &me))
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        if first_list {
            pod::remove_orphans(&context, &desired).await;
            first_list = false;
        }
        reconcile(&context, workers, &desired);
        let mut events = match api.watch_pods(revision).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("watching pods: {e}; relisting");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match events.message().await {
                Ok(Some(event)) => {
                    let Ok(pod) = serde_json::from_slice::<Pod>(&event.object) else {
                        continue;
                    };
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    if event.r#type == pb::EventType::Deleted as i32 || !bound_to(&pod, &me) {
                        desired.remove(&uid);
                    } else {
                        desired.insert(uid, pod);
                    }
                    reconcile(&context, workers, &desired);
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::info!("pod watch ended ({}); relisting", status.message());
                    break;
                }
            }
        }
        // The connection may have gone with its member: use whichever answers now.
        api.reconnect().await;
    }
}

fn bound_to(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Starts workers for new pods, hands changed pods to theirs, stops those of pods gone.
fn reconcile(
    context: &Arc<NodeContext>,
    workers: &mut HashMap<String, pod::Worker>,
    desired: &HashMap<String, Pod>,
) {
    workers.retain(|uid, worker| {
        if desired.contains_key(uid) {
            return true;
        }
        worker.stop();
        false
    });
    for (uid, pod) in desired {
        match workers.get(uid) {
            Some(worker) => worker.update(pod.clone()),
            None => {
                workers.insert(
                    uid.clone(),
                    pod::Worker::start(context.clone(), pod.clone()),
                );
            }
        }
    }
}

/// A pod spec change the worker watches (only images and the like are ever acted on).
pub type PodUpdates = watch::Receiver<Pod>;
