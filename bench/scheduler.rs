//! Scheduler throughput: pods bound per second with 5,000 simulated nodes, the real scheduler
//! and the real Raft commit of its binds.
//!
//! ```text
//!  this process (a network namespace of its own, loopback only)
//!   ├─ control plane: one member in-process (Member::start, fsync on every log append)
//!   ├─ fake nodes: Node objects (Ready, 32 cpu / 64Gi / 110 pods) applied through the API,
//!   │    their status reported through UpdateStatus, kept alive by NodeHeartbeat calls
//!   ├─ pods: applied through the API by `--clients` concurrent callers (group-committed into
//!   │    Raft entries of up to 512), no nodeName, small requests, one owner label
//!   └─ a Pod watch on the API counts binds: first apply sent → all stored → all bound
//! ```
//!
//! Each point starts a fresh member, so that nothing of the previous point (pods, compaction,
//! history) is in the way. Reports per run and the median per pod count beside the published
//! anchors: kube-scheduler's CI floor (270 pods/s at 5,000 nodes) and Nomad's C1M (3,750/s).
//!
//! With `--backlog` the nodes are registered without a status (not Ready) and all turn Ready
//! in one UpdateStatus call (one Raft entry) once every pod is stored: the scheduler then has
//! the whole backlog at once, and pods/s counts from that moment to the last bind. Without it,
//! pods are bound as they arrive and pods/s (first apply → all bound) is bounded by how fast
//! the API stores them.
//!
//! Usage: scheduler-bench [--nodes 5000] [--pods 10000,50000] [--runs 3] [--clients 256]
//!                        [--heartbeat-ms 2000] [--grace-ms 10000] [--backlog]    (root)

use anyhow::{bail, Context, Result};
use berth_control_plane::{Member, MemberConfig};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{
    ApplyRequest, ListRequest, NodeHeartbeatRequest, ObjectRef, StatusUpdate, UpdateStatusRequest,
    WatchRequest,
};
use clap::Parser;
use load::median;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The allocator `berth` itself runs with: the control plane in this process must cost what it
/// costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods per point, comma separated.
    #[arg(long, default_value = "10000,50000", value_delimiter = ',')]
    pods: Vec<usize>,
    /// Runs per point (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent Apply callers creating the pods.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// How often each fake node sends its heartbeat.
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Node lifecycle grace: silence after which a node goes NotReady.
    #[arg(long, default_value_t = 10_000)]
    grace_ms: u64,
    /// Measure a backlog: the nodes report no status (not Ready) while the pods are created,
    /// then all turn Ready in one Raft entry; pods/s is from then to the last bind.
    #[arg(long)]
    backlog: bool,
}

/// HTTP/2 connections the load is spread over (one connection is one server task).
const CONNECTIONS: usize = 8;
/// Node statuses per UpdateStatus call while registering.
const STATUS_BATCH: usize = 500;
const KUBE_SCHEDULER_FLOOR: f64 = 270.0;
const NOMAD_C1M: f64 = 3_750.0;

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// A Node as an agent registers it; the pod subnet is given, so the store assigns none.
fn node(i: usize) -> Value {
    let name = node_name(i);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)},
    })
}

fn node_status() -> Value {
    let allocatable = json!({"cpu": "32", "memory": "64Gi", "pods": "110"});
    json!({
        "capacity": allocatable, "allocatable": allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
    })
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{
            "name": "main", "image": "busybox",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]},
    })
}

/// What the watch needs of a pod: its name and node.
#[derive(Deserialize)]
struct PodBrief {
    metadata: Meta,
    #[serde(default)]
    spec: Option<Spec>,
}
#[derive(Deserialize)]
struct Meta {
    name: String,
}
#[derive(Deserialize)]
struct Spec {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

impl PodBrief {
    fn bound(&self) -> bool {
        self.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    }
}

/// Calls `call(i)` for `i` in `0..count`, `clients` at a time.
async fn for_each_concurrently<F, Fut>(count: usize, clients: usize, call: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.min(count).max(1) {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return anyhow::Ok(());
                }
                call(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Registers the nodes; with `ready`, reports their status too (Ready).
async fn register_nodes(
    apis: &[ApiClient<Channel>],
    nodes: usize,
    clients: usize,
    ready: bool,
) -> Result<()> {
    let pool = apis.to_vec();
    for_each_concurrently(nodes, clients, move |i| {
        let mut api = pool[i % pool.len()].clone();
        async move {
            api.apply(ApplyRequest {
                object: serde_json::to_vec(&node(i))?,
                dry_run: false,
            })
            .await
            .with_context(|| format!("registering {}", node_name(i)))?;
            Ok(())
        }
    })
    .await?;
    if ready {
        report_ready(apis, nodes, STATUS_BATCH).await?;
    }
    Ok(())
}

/// Reports every node Ready, `batch` nodes per UpdateStatus call (one call: one Raft entry).
async fn report_ready(apis: &[ApiClient<Channel>], nodes: usize, batch: usize) -> Result<()> {
    let status = serde_json::to_vec(&node_status())?;
    let batches = nodes.div_ceil(batch);
    let pool = apis.to_vec();
    for_each_concurrently(batches, CONNECTIONS, move |b| {
        let mut api = pool[b % pool.len()].clone();
        let updates = (b * batch..((b + 1) * batch).min(nodes))
            .map(|i| StatusUpdate {
                object: Some(ObjectRef {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: node_name(i),
                }),
                status: status.clone(),
                resource_version: 0,
                uid: String::new(),
            })
            .collect();
        async move {
            let response = api
                .update_status(UpdateStatusRequest { updates })
                .await?
                .into_inner();
            if let Some(failed) = response.results.iter().find(|r| !r.error.is_empty()) {
                bail!("node status: {}", failed.error);
            }
            Ok(())
        }
    })
    .await
}

/// Fake agents' heartbeats, each node once per `period`, spread evenly; until `stop`.
fn keep_nodes_alive(
    apis: &[ApiClient<Channel>],
    nodes: usize,
    period: Duration,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    const SENDERS: usize = 16;
    (0..SENDERS)
        .map(|s| {
            let mut api = apis[s % apis.len()].clone();
            let (stop, failures) = (stop.clone(), failures.clone());
            let mine: Vec<String> = (s..nodes).step_by(SENDERS).map(node_name).collect();
            tokio::spawn(async move {
                if mine.is_empty() {
                    return;
                }
                let mut tick = tokio::time::interval(period / mine.len() as u32);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for name in mine.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tick.tick().await;
                    let beat = NodeHeartbeatRequest { node: name.clone() };
                    if api.node_heartbeat(beat).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// One point's times.
struct Run {
    pods: usize,
    /// First apply sent → last apply acknowledged.
    created: Duration,
    /// First apply sent → all nodes Ready (`--backlog`), else → last apply acknowledged.
    released: Duration,
    /// First apply sent → last pod bound.
    bound: Duration,
    /// Pods already bound when the last apply was acknowledged.
    bound_when_stored: usize,
    not_ready_nodes: usize,
    heartbeat_failures: u64,
}

impl Run {
    /// All stored (and, with `--backlog`, all nodes Ready) → all bound.
    fn tail(&self) -> Duration {
        self.bound.saturating_sub(self.released)
    }
    /// Pods bound per second: first apply → all bound; with `--backlog`, from all nodes Ready.
    fn rate(&self, backlog: bool) -> f64 {
        let over = if backlog { self.tail() } else { self.bound };
        self.pods as f64 / over.as_secs_f64()
    }
    /// Pods left unbound at the end of creation, bound per second from then.
    fn tail_rate(&self) -> f64 {
        let left = self.pods.saturating_sub(self.bound_when_stored);
        if left == 0 {
            return f64::NAN;
        }
        left as f64 / self.tail().as_secs_f64().max(1e-9)
    }
}

/// Counts the pods a watch sees bound, resuming from a list if the watch expires.
struct BindCounter {
    api: ApiClient<Channel>,
    bound: HashSet<String>,
    revision: u64,
}

impl BindCounter {
    async fn start(mut api: ApiClient<Channel>) -> Result<BindCounter> {
        let listed = api
            .list(ListRequest {
                kind: "Pod".into(),
                namespace: "default".into(),
                label_selector: String::new(),
                stale_ok: false,
            })
            .await?
            .into_inner();
        let mut bound = HashSet::new();
        for object in &listed.objects {
            let pod: PodBrief = serde_json::from_slice(object)?;
            if pod.bound() {
                bound.insert(pod.metadata.name);
            }
        }
        Ok(BindCounter {
            api,
            bound,
            revision: listed.revision,
        })
    }

    /// Follows the watch until `target` pods are bound; `progress` hears the count.
    async fn until(&mut self, target: usize, progress: &AtomicU64) -> Result<()> {
        while self.bound.len() < target {
            let mut events = self
                .api
                .watch(WatchRequest {
                    kind: "Pod".into(),
                    namespace: "default".into(),
                    label_selector: String::new(),
                    from_revision: self.revision,
                })
                .await?
                .into_inner();
            loop {
                match events.message().await {
                    Ok(Some(event)) => {
                        self.revision = event.revision;
                        let pod: PodBrief = serde_json::from_slice(&event.object)?;
                        if pod.bound() {
                            self.bound.insert(pod.metadata.name);
                            progress.store(self.bound.len() as u64, Ordering::Relaxed);
                            if self.bound.len() >= target {
                                return Ok(());
                            }
                        }
                    }
                    Ok(None) => bail!("the watch ended"),
                    Err(status) if status.code() == tonic::Code::OutOfRange => {
                        // Fell behind the history: count from a fresh list.
                        let api = self.api.clone();
                        *self = BindCounter::start(api).await?;
                        progress.store(self.bound.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    Err(status) => return Err(status.into()),
                }
            }
        }
        Ok(())
    }
}

async fn run_point(args: &Args, pods: usize, run: usize) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut config = MemberConfig::new(dir.path().join("member"));
    config.init = true;
    config.listen = Some("127.0.0.1:0".parse()?);
    config.node_lifecycle.grace = Duration::from_millis(args.grace_ms);
    let member = Member::start(config).await?;
    let addr = member.addr.to_string();
    let mut apis = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = berth_proto::transport::connect(&addr).await?;
        apis.push(
            ApiClient::new(channel)
                .max_decoding_message_size(1 << 30)
                .max_encoding_message_size(1 << 30),
        );
    }

    let registering = Instant::now();
    register_nodes(&apis, args.nodes, args.clients, !args.backlog).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let beats = keep_nodes_alive(
        &apis,
        args.nodes,
        Duration::from_millis(args.heartbeat_ms),
        stop.clone(),
        failures.clone(),
    );
    eprintln!(
        "run {run}: {} nodes registered in {:.1} s; creating {pods} pods",
        args.nodes,
        registering.elapsed().as_secs_f64()
    );

    let progress = Arc::new(AtomicU64::new(0));
    let mut counter = BindCounter::start(apis[0].clone()).await?;
    let watching = {
        let progress = progress.clone();
        tokio::spawn(async move {
            counter.until(pods, &progress).await?;
            anyhow::Ok(Instant::now())
        })
    };
    let start = Instant::now();
    let pool = apis.clone();
    for_each_concurrently(pods, args.clients, move |i| {
        let mut api = pool[i % pool.len()].clone();
        async move {
            api.apply(ApplyRequest {
                object: serde_json::to_vec(&pod(&format!("bench-{i:06}")))?,
                dry_run: false,
            })
            .await
            .context("creating a pod")?;
            Ok(())
        }
    })
    .await?;
    let created = start.elapsed();
    let bound_when_stored = progress.load(Ordering::Relaxed) as usize;
    if args.backlog {
        // Every node Ready in one Raft entry: the whole backlog becomes schedulable at once.
        report_ready(&apis, args.nodes, args.nodes).await?;
    }
    let released = start.elapsed();
    let all_bound = tokio::time::timeout(Duration::from_secs(600), watching)
        .await
        .context("pods not all bound within 600 s")???;
    let bound = all_bound - start;

    // Any node the lifecycle marked NotReady would have taken no pods: the run says so.
    let mut api = apis[0].clone();
    let listed = api
        .list(ListRequest {
            kind: "Node".into(),
            namespace: String::new(),
            label_selector: String::new(),
            stale_ok: false,
        })
        .await?
        .into_inner();
    let not_ready_nodes = listed
        .objects
        .iter()
        .filter(|object| {
            let node: Value = serde_json::from_slice(object).unwrap_or_default();
            !node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count();
    stop.store(true, Ordering::Relaxed);
    for beat in beats {
        beat.abort();
    }
    drop(apis);
    drop(api);
    member.shutdown().await;
    Ok(Run {
        pods,
        created,
        released,
        bound,
        bound_when_stored,
        not_ready_nodes,
        heartbeat_failures: failures.load(Ordering::Relaxed),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Before any thread exists: every thread of the runtime is made in this namespace.
    berth_e2e::isolate_network();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "berth scheduler throughput: {} nodes (in-process fakes, heartbeat every {} ms, grace {} ms), \
         one control-plane member in-process (fsync on), pods created through the API by {} clients",
        args.nodes, args.heartbeat_ms, args.grace_ms, args.clients
    );
    if args.backlog {
        println!(
            "backlog: nodes not Ready while the pods are created, then all Ready in one entry; \
             pods/s and stored→all bound count from then"
        );
    }
    println!(
        "| pods | run | created in s | created/s | bound when stored | stored→all bound s | \
         first→all bound s | pods/s | tail pods/s | NotReady nodes | beat failures |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for &pods in &args.pods {
        let mut rates = Vec::new();
        let mut tails = Vec::new();
        for run in 1..=args.runs {
            let result = runtime.block_on(run_point(&args, pods, run))?;
            println!(
                "| {} | {run} | {:.2} | {:.0} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |",
                result.pods,
                result.created.as_secs_f64(),
                result.pods as f64 / result.created.as_secs_f64(),
                result.bound_when_stored,
                result.tail().as_secs_f64(),
                result.bound.as_secs_f64(),
                result.rate(args.backlog),
                result.tail_rate(),
                result.not_ready_nodes,
                result.heartbeat_failures,
            );
            rates.push(result.rate(args.backlog));
            tails.push(result.tail().as_secs_f64());
        }
        medians.push((pods, median(rates), median(tails)));
    }
    println!();
    let measured = if args.backlog {
        "all nodes Ready→all bound"
    } else {
        "first→all bound"
    };
    println!("| pods | berth pods/s (median, {measured}) | stored→all bound s (median) | × kube-scheduler CI floor (270/s) | × Nomad C1M (3,750/s) |");
    println!("|---|---|---|---|---|");
    for (pods, rate, tail) in medians {
        println!(
            "| {pods} | {rate:.0} | {tail:.2} | {:.1}× | {:.2}× |",
            rate / KUBE_SCHEDULER_FLOOR,
            rate / NOMAD_C1M
        );
    }
    Ok(())
}
