//! One worker per pod bound to this node (kubelet's pod worker): sets up the pod's network,
//! starts its containers, watches them exit, restarts them under the restart policy with
//! back-off, runs their probes, reports status, and on deletion terminates them gracefully
//! and removes everything the pod had on the node.
//!
//! A worker leaves a record of each pod in `DATA_DIR/pods/<uid>.json` (restart counts, last
//! terminations, the running instance): a restarted agent adopts running containers from it
//! instead of starting them again.

use super::images::{PullFailure, PullPolicy, PulledImage};
use super::restart::{backoff, should_restart};
use super::status::{pod_status, ContainerView, Termination, ViewState};
use super::{pod_key, NodeContext};
use crate::network::PodNetworkInfo;
use crate::probe::{self, ProbeKind, ProbeResult, ProbeSpec};
use crate::runtime::spec::SpecInput;
use crate::runtime::{ContainerStatus, StartRequest};
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Bytes a container's log file may reach before it is rotated, and how many files are kept.
const LOG_MAX_BYTES: u64 = 10 << 20;
const LOG_MAX_FILES: usize = 5;
/// How often a worker looks at its containers.
const TICK: Duration = Duration::from_millis(200);

/// What the logs and exec service needs to know about a pod's containers.
#[derive(Debug, Clone, Default)]
pub struct PodHandle {
    pub uid: String,
    /// In the pod's order: container name, restart count, the running instance's id.
    pub containers: Vec<(String, i32, Option<String>)>,
}

/// The instance id of a container: `<pod uid>_<name>_<restart count>` (neither uids nor
/// DNS-label names contain `_`).
pub fn instance_id(uid: &str, name: &str, restart: i32) -> String {
    format!("{uid}_{name}_{restart}")
}

fn pod_uid_of(instance: &str) -> Option<&str> {
    instance.split('_').next()
}

/// The log file of one instance of a container.
pub fn log_path(context: &NodeContext, uid: &str, name: &str, restart: i32) -> PathBuf {
    context
        .logs_dir()
        .join(uid)
        .join(name)
        .join(format!("{restart}.log"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ContainerRecord {
    restart_count: i32,
    /// The instance last started (running, or exited and not yet handled).
    current: Option<String>,
    last_termination: Option<TerminationRecord>,
    /// Set when the container has finished for good (not restarted).
    finished: Option<TerminationRecord>,
    /// Failures in a row, for the back-off (reset after an instance ran 10 minutes).
    #[serde(default)]
    crash_loop: i32,
    /// Exited instances whose removal failed: retried until they are gone.
    #[serde(default)]
    to_remove: Vec<String>,
    /// The image the current instance runs (`REPOSITORY@sha256:...`).
    #[serde(default)]
    image_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TerminationRecord {
    exit_code: i32,
    signal: Option<i32>,
    oom_killed: bool,
    started_at: Option<jiff::Timestamp>,
    finished_at: jiff::Timestamp,
    message: Option<String>,
}

impl TerminationRecord {
    /// The end of an instance, if the runtime says it ended.
    fn of(status: &ContainerStatus) -> Option<TerminationRecord> {
        match status {
            ContainerStatus::Exited {
                exit_code,
                signal,
                oom_killed,
                started_at,
                finished_at,
                message,
            } => Some(TerminationRecord {
                exit_code: *exit_code,
                signal: *signal,
                oom_killed: *oom_killed,
                started_at: *started_at,
                finished_at: *finished_at,
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

impl From<&TerminationRecord> for Termination {
    fn from(t: &TerminationRecord) -> Self {
        Termination {
            exit_code: t.exit_code,
            signal: t.signal,
            oom_killed: t.oom_killed,
            started_at: t.started_at,
            finished_at: t.finished_at,
            message: t.message.clone(),
        }
    }
}

/// `pods/<uid>/`: one record per container, each written before the runtime acts on what it
/// says (a start, a removal), so that an agent killed at any moment finds the truth there.
fn record_dir(context: &NodeContext, uid: &str) -> PathBuf {
    context.pods_dir().join(uid)
}

fn load_record(context: &NodeContext, uid: &str, container: &str) -> Option<ContainerRecord> {
    let bytes = std::fs::read(record_dir(context, uid).join(format!("{container}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The imageIDs the node's container records name (blocking: reads every record).
pub fn images_in_use(context: &NodeContext) -> Vec<String> {
    let mut ids = Vec::new();
    for pod in std::fs::read_dir(context.pods_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        for file in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let record = std::fs::read(file.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<ContainerRecord>(&b).ok());
            ids.extend(record.and_then(|r| r.image_id));
        }
    }
    ids
}

/// Writes a container's record durably (off the async threads).
async fn save_record(
    context: &Arc<NodeContext>,
    uid: &str,
    container: &str,
    record: &ContainerRecord,
) {
    let dir = record_dir(context, uid);
    let path = dir.join(format!("{container}.json"));
    let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
    let written = blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await;
    if let Err(e) = written {
        tracing::error!(pod = uid, container, "saving the container record: {e}");
    }
}

pub struct Worker {
    updates: watch::Sender<Pod>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub fn start(context: Arc<NodeContext>, pod: Pod) -> Worker {
        use tracing::Instrument;
        let key = pod_key(&pod);
        let span = tracing::info_span!("pod", pod = %format!("{}/{}", key.0, key.1));
        let (updates, pod_rx) = watch::channel(pod);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(context, pod_rx, stop_rx).instrument(span));
        Worker {
            updates,
            stop,
            task,
        }
    }

    pub fn update(&self, pod: Pod) {
        self.updates.send_replace(pod);
    }

    /// The pod was deleted: terminate its containers and clean up.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the pod (as [`Self::stop`]); the task ends once its containers and network are
    /// gone.
    pub fn stop_into_task(self) -> tokio::task::JoinHandle<()> {
        self.stop();
        self.task
    }
}

/// One container of the pod, as the worker tracks it.
struct Slot {
    spec: Container,
    record: ContainerRecord,
    running_since: Option<jiff::Timestamp>,
    waiting: Option<(String, Option<String>)>,
    next_start: Instant,
    probes: Vec<tokio::task::JoinHandle<()>>,
    probe_results: Option<mpsc::Receiver<(ProbeKind, ProbeResult)>>,
    ready: bool,
    started: bool,
    /// Its spec changed (a new image): the running instance is being replaced, and starts
    /// again whatever the restart policy.
    replacing: bool,
    /// The image pull for the next start, while it runs.
    pull: Option<tokio::task::JoinHandle<Result<PulledImage, PullFailure>>>,
    /// Failed pulls in a row, for the back-off; when the last one failed.
    pull_failures: i32,
    pull_failed_at: Option<Instant>,
    events: super::events::ContainerEvents,
}

impl Slot {
    fn has_probe(&self, kind: ProbeKind) -> bool {
        match kind {
            ProbeKind::Readiness => self.spec.readiness_probe.is_some(),
            ProbeKind::Liveness => self.spec.liveness_probe.is_some(),
            ProbeKind::Startup => self.spec.startup_probe.is_some(),
        }
    }

    fn stop_probes(&mut self) {
        for probe in self.probes.drain(..) {
            probe.abort();
        }
        self.probe_results = None;
        self.ready = false;
        self.started = !self.has_probe(ProbeKind::Startup);
    }

    fn view(&self) -> ContainerView {
        let name = self.spec.name.clone();
        let state = if let Some(since) = self.running_since {
            ViewState::Running { started_at: since }
        } else if let Some(finished) = &self.record.finished {
            ViewState::Terminated(finished.into())
        } else {
            let (reason, message) = self
                .waiting
                .clone()
                .unwrap_or_else(|| ("ContainerCreating".into(), None));
            ViewState::Waiting { reason, message }
        };
        let running = self.running_since.is_some();
        ContainerView {
            id: self
                .record
                .current
                .as_ref()
                .filter(|_| running || self.record.finished.is_some())
                .map(|id| format!("berth://{id}")),
            name,
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.record.image_id.clone(),
            state,
            last_termination: self.record.last_termination.as_ref().map(Into::into),
            restart_count: self.record.restart_count,
            ready: running && self.started && (self.ready || !self.has_probe(ProbeKind::Readiness)),
            started: self.started,
        }
    }
}

/// Runs blocking runtime work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("runtime work does not panic")
}

async fn run(
    context: Arc<NodeContext>,
    mut pod_rx: watch::Receiver<Pod>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pod = pod_rx.borrow_and_update().clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = pod_key(&pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());

    let mut slots: Vec<Slot> = spec
        .containers
        .iter()
        .map(|c| {
            let record = load_record(&context, &uid, &c.name).unwrap_or_default();
            let mut slot = Slot {
                spec: c.clone(),
                record,
                running_since: None,
                waiting: None,
                next_start: Instant::now(),
                probes: Vec::new(),
                probe_results: None,
                ready: false,
                started: false,
                replacing: false,
                pull: None,
                pull_failures: 0,
                pull_failed_at: None,
                events: super::events::ContainerEvents::new(&context, &pod, &c.name),
            };
            slot.started = !slot.has_probe(ProbeKind::Startup);
            slot
        })
        .collect();
    let mut previous = pod.status.clone().unwrap_or_default();
    let report = |slots: &[Slot], net: Option<&PodNetworkInfo>, previous: &mut PodStatus| {
        let views: Vec<ContainerView> = slots.iter().map(Slot::view).collect();
        let ip = net.map(|n| n.ip.to_string());
        let status = pod_status(
            &views,
            &restart_policy,
            ip.as_deref(),
            &context.node_ip.to_string(),
            previous,
            jiff::Timestamp::now(),
        );
        *previous = status.clone();
        let _ = context
            .statuses
            .send(((key.0.clone(), key.1.clone(), uid.clone()), Some(status)));
    };

    // The pod's network namespace first: every container joins it.
    let net = loop {
        if *stop.borrow() {
            break None;
        }
        match context.network.setup_pod(&uid, &key.1).await {
            Ok(net) => break Some(net),
            Err(e) => {
                tracing::warn!("pod network: {e}");
                for slot in &mut slots {
                    slot.waiting = Some((
                        "ContainerCreating".into(),
                        Some(format!("pod network: {e}")),
                    ));
                }
                report(&slots, None, &mut previous);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    };
    if let Some(net) = net {
        adopt(&context, &uid, &mut slots).await;
        let mut config = super::pod_config::PodConfig::new(&context, &pod, &uid);
        loop {
            if *stop.borrow() {
                break;
            }
            if pod_rx.has_changed().unwrap_or(false) {
                pod = pod_rx.borrow_and_update().clone();
                replace_changed_containers(&context, &pod, &mut slots).await;
            }
            config.sync_volumes(&context, &pod).await;
            for slot in slots.iter_mut() {
                tend(
                    &context,
                    &pod,
                    &uid,
                    &net,
                    &restart_policy,
                    &mut config,
                    slot,
                )
                .await;
            }
            publish_handle(&context, &key, &uid, &slots);
            report(&slots, Some(&net), &mut previous);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => {}
            }
        }
    }
    terminate(&context, &pod, &uid, &mut slots).await;
    if let Err(e) = context.network.teardown_pod(&uid).await {
        tracing::warn!("pod network teardown: {e}");
    }
    let pod_dir = record_dir(&context, &uid);
    blocking(move || super::pod_config::tear_down(&pod_dir)).await;
    let _ = std::fs::remove_dir_all(record_dir(&context, &uid));
    let _ = std::fs::remove_dir_all(context.logs_dir().join(&uid));
    {
        // A new pod of the same name may already run here: remove only this one's handle.
        let mut pods = context.pods.lock().expect("pods lock");
        if pods.get(&key).is_some_and(|h| h.uid == uid) {
            pods.remove(&key);
        }
    }
    let _ = context.statuses.send(((key.0, key.1, uid), None));
    tracing::info!("pod removed from the node");
}

fn publish_handle(context: &NodeContext, key: &(String, String), uid: &str, slots: &[Slot]) {
    let handle = PodHandle {
        uid: uid.to_string(),
        containers: slots
            .iter()
            .map(|s| {
                let running = s.running_since.and(s.record.current.clone());
                (s.spec.name.clone(), s.record.restart_count, running)
            })
            .collect(),
    };
    context
        .pods
        .lock()
        .expect("pods lock")
        .insert(key.clone(), handle);
}

/// After an agent restart: containers whose instance still runs are taken over as they are.
async fn adopt(context: &Arc<NodeContext>, _uid: &str, slots: &mut [Slot]) {
    for slot in slots.iter_mut() {
        let Some(id) = slot.record.current.clone() else {
            continue;
        };
        if slot.record.finished.is_some() {
            continue;
        }
        let ctx = context.clone();
        let status = blocking(move || ctx.runtime.status(&id)).await;
        if let Err(crate::runtime::RuntimeError::NotFound(_)) = status {
            // The agent stopped between recording the start and making the container.
            slot.record.current = None;
            continue;
        }
        // Running: taken over. Exited (or lost) while the agent was away: the next tick
        // sees that and applies the restart policy.
        slot.running_since = Some(match status {
            Ok(ContainerStatus::Running { started_at, .. }) => {
                tracing::info!(container = %slot.spec.name, "adopted running container");
                started_at
            }
            _ => jiff::Timestamp::now(),
        });
    }
}

/// Where a container stands, and what to do about it: start, restart, react to probes.
async fn tend(
    context: &Arc<NodeContext>,
    pod: &Pod,
    uid: &str,
    net: &PodNetworkInfo,
    restart_policy: &str,
    config: &mut super::pod_config::PodConfig,
    slot: &mut Slot,
) {
    retry_removals(context, uid, slot).await;
    if slot.record.finished.is_some() {
        return;
    }
    if slot.running_since.is_some() {
        let id = slot
            .record
            .current
            .clone()
            .expect("a running container has an id");
        let ctx = context.clone();
        let status = blocking({
            let id = id.clone();
            move || ctx.runtime.status(&id)
        })
        .await;
        match status {
            Ok(ContainerStatus::Running { .. }) => {
                if slot.probes.is_empty() {
                    start_probes(context, uid, net, slot);
                }
                if handle_probe_results(context, &id, slot).await {
                    return; // killed: its exit is seen on the next tick
                }
                return;
            }
            Ok(status @ ContainerStatus::Exited { .. }) => {
                let mut termination = TerminationRecord::of(&status).expect("exited");
                termination.started_at = termination.started_at.or(slot.running_since);
                exited(context, uid, restart_policy, slot, termination).await;
            }
            Ok(ContainerStatus::Unknown) | Err(_) => {
                // Its shim and state are gone (a reboot, a hand-made cleanup): count it as a
                // failure and let the policy decide.
                let termination = TerminationRecord {
                    exit_code: 137,
                    signal: None,
                    oom_killed: false,
                    started_at: slot.running_since,
                    finished_at: jiff::Timestamp::now(),
                    message: Some("the container's state was lost".into()),
                };
                exited(context, uid, restart_policy, slot, termination).await;
            }
        }
        return;
    }
    show_pull_backoff(slot);
    if Instant::now() >= slot.next_start {
        start(context, pod, uid, net, restart_policy, config, slot).await;
    }
}

/// A failed pull shows as ErrImagePull, then, while the next attempt waits, as
/// ImagePullBackOff (kubelet's two reasons).
fn show_pull_backoff(slot: &mut Slot) {
    let Some(failed_at) = slot.pull_failed_at else {
        return;
    };
    if failed_at.elapsed() < Duration::from_secs(1) {
        return;
    }
    if let Some((reason, message)) = &mut slot.waiting {
        if reason == "ErrImagePull" {
            *reason = "ImagePullBackOff".into();
            let image = slot.spec.image.as_deref().unwrap_or_default();
            slot.events.pull_back_off(image);
            let cause = message.take().unwrap_or_default();
            *message = Some(format!("Back-off pulling image {image:?}: {cause}"));
        }
    }
}

/// The container's image once its pull is done; until then `None`, with a pull started
/// (or still running) in the background so the worker keeps tending the pod meanwhile.
fn pulled_image(context: &Arc<NodeContext>, slot: &mut Slot) -> Option<PulledImage> {
    use futures::FutureExt;
    match slot.pull.as_mut() {
        None => {
            let images = context.images.clone();
            let image = slot.spec.image.clone().unwrap_or_default();
            let policy = PullPolicy::of(&slot.spec);
            let events = slot.events.clone();
            slot.pull = Some(tokio::spawn(async move {
                images
                    .ensure(&image, policy, || events.pulling(&image))
                    .await
            }));
            None
        }
        Some(handle) if !handle.is_finished() => None,
        Some(handle) => {
            let result = handle.now_or_never().expect("finished");
            slot.pull = None;
            let failure = match result {
                Ok(Ok(image)) => {
                    slot.pull_failures = 0;
                    slot.pull_failed_at = None;
                    let name = slot.spec.image.as_deref().unwrap_or_default();
                    slot.events.pulled(name, image.pulled_in);
                    return Some(image);
                }
                Ok(Err(failure)) => failure,
                Err(e) => PullFailure {
                    reason: "ErrImagePull",
                    message: format!("the pull task failed: {e}"),
                },
            };
            tracing::warn!(container = %slot.spec.name, "{}: {}", failure.reason, failure.message);
            let image = slot.spec.image.as_deref().unwrap_or_default();
            slot.events.pull_failed(image, &failure);
            slot.pull_failures += 1;
            slot.pull_failed_at = Some(Instant::now());
            slot.next_start = Instant::now() + backoff(slot.pull_failures - 1);
            slot.waiting = Some((failure.reason.into(), Some(failure.message)));
            None
        }
    }
}

/// A pod's containers can change only their image (as in Kubernetes): a container whose
/// image changed is killed and started again from the new one.
async fn replace_changed_containers(context: &Arc<NodeContext>, pod: &Pod, slots: &mut [Slot]) {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    for slot in slots.iter_mut() {
        let Some(new) = containers.iter().find(|c| c.name == slot.spec.name) else {
            continue;
        };
        if new.image == slot.spec.image {
            continue;
        }
        tracing::info!(container = %slot.spec.name, image = ?new.image, "image changed: replacing the container");
        slot.spec = new.clone();
        // A pull of the old image may still run: it finishes on its own; the new image
        // is pulled afresh, without the old one's back-off.
        slot.pull = None;
        slot.pull_failures = 0;
        slot.pull_failed_at = None;
        slot.next_start = Instant::now();
        if let (Some(_), Some(id)) = (slot.running_since, slot.record.current.clone()) {
            slot.replacing = true;
            kill(context, &id).await;
        }
    }
}

/// Removes exited instances an earlier attempt failed to remove (a busy mount, say).
async fn retry_removals(context: &Arc<NodeContext>, uid: &str, slot: &mut Slot) {
    if slot.record.to_remove.is_empty() {
        return;
    }
    let ctx = context.clone();
    let ids = slot.record.to_remove.clone();
    let left: Vec<String> = blocking(move || {
        ids.into_iter()
            .filter(|id| ctx.runtime.remove(id).is_err())
            .collect()
    })
    .await;
    if left != slot.record.to_remove {
        slot.record.to_remove = left;
        save_record(context, uid, &slot.spec.name, &slot.record).await;
    }
}

/// A container's instance ended: record it, remove the instance (its log stays), and plan
/// a restart or finish.
async fn exited(
    context: &Arc<NodeContext>,
    uid: &str,
    restart_policy: &str,
    slot: &mut Slot,
    termination: TerminationRecord,
) {
    tracing::info!(
        container = %slot.spec.name,
        exit_code = termination.exit_code,
        oom_killed = termination.oom_killed,
        "container exited"
    );
    slot.stop_probes();
    slot.running_since = None;
    // Kubernetes forgets a crash loop once an instance ran for 10 minutes.
    let ran_long = termination
        .started_at
        .is_some_and(|s| termination.finished_at.duration_since(s).as_secs_f64() >= 600.0);
    if ran_long {
        slot.record.crash_loop = 0;
    }
    // Replaced for a new image: not a failure, no back-off.
    let replaced = std::mem::take(&mut slot.replacing);
    let restart = replaced || should_restart(restart_policy, termination.exit_code);
    if restart {
        let delay = if replaced {
            std::time::Duration::ZERO
        } else {
            slot.record.crash_loop += 1;
            backoff(slot.record.crash_loop - 1)
        };
        slot.next_start = Instant::now() + delay;
        if !delay.is_zero() {
            slot.events.back_off();
        }
        slot.waiting = Some(if delay.is_zero() {
            ("ContainerCreating".into(), None)
        } else {
            (
                "CrashLoopBackOff".into(),
                Some(format!(
                    "back-off {}s restarting failed container {}",
                    delay.as_secs(),
                    slot.spec.name
                )),
            )
        });
        slot.record.last_termination = Some(termination);
    } else {
        slot.record.finished = Some(termination);
    }
    // Recorded before the instance goes: an agent killed in between finds the exit here,
    // not a container that vanished.
    save_record(context, uid, &slot.spec.name, &slot.record).await;
    if let Some(id) = slot.record.current.clone() {
        let ctx = context.clone();
        let removing = id.clone();
        if let Err(e) = blocking(move || ctx.runtime.remove(&removing)).await {
            tracing::warn!("removing an exited container: {e}; will retry");
            slot.record.to_remove.push(id);
            save_record(context, uid, &slot.spec.name, &slot.record).await;
        }
    }
    if restart {
        slot.record.current = None;
        save_record(context, uid, &slot.spec.name, &slot.record).await;
    }
}

/// Keeps the logs of this instance and the previous one (`berth logs --previous`); older
/// instances' logs go, or a crash loop would fill the disk.
fn prune_logs(log_path: &std::path::Path, restart: i32) {
    let Some(dir) = log_path.parent() else { return };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let instance = name.split('.').next().and_then(|n| n.parse::<i32>().ok());
        if instance.is_some_and(|n| n < restart - 1) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

async fn start(
    context: &Arc<NodeContext>,
    pod: &Pod,
    uid: &str,
    net: &PodNetworkInfo,
    restart_policy: &str,
    config: &mut super::pod_config::PodConfig,
    slot: &mut Slot,
) {
    // The first instance is 0; each restart takes the next number.
    let restart = if slot.record.last_termination.is_some() || slot.record.current.is_some() {
        slot.record.restart_count + 1
    } else {
        slot.record.restart_count
    };
    let Some(image) = pulled_image(context, slot) else {
        return;
    };
    // Env from ConfigMaps, Secrets and the pod; volume mounts.
    let resolved = match config
        .prepare(context, pod, &slot.spec, Some(net.ip.to_string()))
        .await
    {
        Ok(resolved) => resolved,
        Err(waiting) => {
            slot.events.failed(&waiting.message);
            slot.waiting = Some((waiting.reason.into(), Some(waiting.message)));
            slot.next_start = Instant::now() + waiting.retry_after;
            return;
        }
    };
    let spec = crate::runtime::spec::build_with_config(
        &SpecInput {
            pod,
            container: &slot.spec,
            image: &image.config,
            netns: Some(net.netns_path.clone()),
        },
        &resolved,
    );
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => {
            slot.waiting = Some(("CreateContainerConfigError".into(), Some(e.to_string())));
            slot.next_start = Instant::now() + Duration::from_secs(5);
            return;
        }
    };
    let id = instance_id(uid, &slot.spec.name, restart);
    let log_path = log_path(context, uid, &slot.spec.name, restart);
    blocking({
        let log_path = log_path.clone();
        move || {
            prune_logs(&log_path, restart);
            if let Some(dir) = log_path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
    })
    .await;
    let request = StartRequest {
        id: id.clone(),
        spec,
        lowers: image.lowers,
        log_path,
        log_max_bytes: LOG_MAX_BYTES,
        log_max_files: LOG_MAX_FILES,
    };
    // Recorded before the runtime acts: a restarted agent then adopts this instance (or
    // learns it was never made) instead of starting a second one.
    slot.record.restart_count = restart;
    slot.record.current = Some(id.clone());
    slot.record.image_id = Some(image.image_id);
    save_record(context, uid, &slot.spec.name, &slot.record).await;
    let ctx = context.clone();
    let started = blocking(move || ctx.runtime.start(request)).await;
    match started {
        Ok(ContainerStatus::Running { started_at, .. }) => {
            tracing::info!(container = %slot.spec.name, restart, "container started");
            slot.events.started();
            slot.running_since = Some(started_at);
            slot.waiting = None;
        }
        Ok(status @ ContainerStatus::Exited { .. }) => {
            let termination = TerminationRecord::of(&status).expect("exited");
            if let Some(message) = &termination.message {
                tracing::warn!(container = %slot.spec.name, "could not start: {message}");
            }
            exited(context, uid, restart_policy, slot, termination).await;
        }
        Ok(ContainerStatus::Unknown) => {
            // The shim reported nothing yet: the next tick looks again.
            slot.running_since = Some(jiff::Timestamp::now());
        }
        Err(crate::runtime::RuntimeError::AlreadyExists(_)) => {
            // Made before an agent restart: look at it on the next tick.
            slot.running_since = Some(jiff::Timestamp::now());
        }
        Err(e) => {
            tracing::warn!(container = %slot.spec.name, "starting: {e}");
            slot.events.failed(&e);
            let ctx = context.clone();
            let _ = blocking(move || ctx.runtime.remove(&id)).await;
            slot.record.current = None;
            slot.record.last_termination = Some(TerminationRecord {
                exit_code: 128,
                signal: None,
                oom_killed: false,
                started_at: None,
                finished_at: jiff::Timestamp::now(),
                message: Some(e.to_string()),
            });
            let delay = backoff(restart + 1).max(Duration::from_secs(1));
            slot.waiting = Some(("RunContainerError".into(), Some(e.to_string())));
            slot.next_start = Instant::now() + delay;
        }
    }
}

fn start_probes(context: &Arc<NodeContext>, _uid: &str, net: &PodNetworkInfo, slot: &mut Slot) {
    let (tx, rx) = mpsc::channel(16);
    let id = slot.record.current.clone().expect("running");
    let exec: Arc<dyn probe::ExecRunner> = Arc::new(super::service::ContainerExec {
        context: context.clone(),
        id,
    });
    let probes = [
        (ProbeKind::Startup, slot.spec.startup_probe.clone()),
        (ProbeKind::Readiness, slot.spec.readiness_probe.clone()),
        (ProbeKind::Liveness, slot.spec.liveness_probe.clone()),
    ];
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        let events = slot.events.clone();
        let failed = move |failure: &probe::ProbeFailure| events.unhealthy(kind, failure);
        match ProbeSpec::from_k8s(&probe, &slot.spec) {
            Ok(spec) => slot.probes.push(probe::spawn_prober(
                kind,
                spec,
                std::net::IpAddr::V4(net.ip),
                exec.clone(),
                tx.clone(),
                failed,
            )),
            Err(e) => tracing::warn!(container = %slot.spec.name, "{kind:?} probe: {e}"),
        }
    }
    if slot.probes.is_empty() {
        // A placeholder so that probes are not looked for again on every tick.
        slot.probes.push(tokio::spawn(async {}));
    }
    slot.probe_results = Some(rx);
}

/// Applies probe results; returns whether the container was killed (liveness or startup
/// failure).
async fn handle_probe_results(context: &Arc<NodeContext>, id: &str, slot: &mut Slot) -> bool {
    let mut results = Vec::new();
    if let Some(rx) = slot.probe_results.as_mut() {
        while let Ok(result) = rx.try_recv() {
            results.push(result);
        }
    }
    for (kind, result) in results {
        match (kind, result) {
            (ProbeKind::Startup, ProbeResult::Success) => slot.started = true,
            (ProbeKind::Readiness, result) => slot.ready = result == ProbeResult::Success,
            (ProbeKind::Liveness, ProbeResult::Failure) if slot.started => {
                tracing::info!(container = %slot.spec.name, "liveness probe failed: restarting");
                slot.events.probe_kill("liveness");
                kill(context, id).await;
                return true;
            }
            (ProbeKind::Startup, ProbeResult::Failure) => {
                tracing::info!(container = %slot.spec.name, "startup probe failed: restarting");
                slot.events.probe_kill("startup");
                kill(context, id).await;
                return true;
            }
            _ => {}
        }
    }
    false
}

async fn kill(context: &Arc<NodeContext>, id: &str) {
    let ctx = context.clone();
    let id = id.to_string();
    if let Err(e) = blocking(move || ctx.runtime.kill_all(&id)).await {
        tracing::warn!("killing a container: {e}");
    }
}

/// Graceful termination of every running container: preStop hook, SIGTERM, the grace
/// period, then SIGKILL of everything in its cgroup; then the instances are removed.
async fn terminate(context: &Arc<NodeContext>, pod: &Pod, _uid: &str, slots: &mut [Slot]) {
    let grace = Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    );
    let deadline = Instant::now() + grace;
    let running: Vec<(String, Option<Vec<String>>)> = slots
        .iter_mut()
        .filter_map(|slot| {
            slot.stop_probes();
            let id = slot.record.current.clone()?;
            slot.events.stopping();
            let pre_stop = slot
                .spec
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.exec.as_ref())
                .and_then(|e| e.command.clone());
            Some((id, pre_stop))
        })
        .collect();
    let stops = running.into_iter().map(|(id, pre_stop)| {
        let context = context.clone();
        async move {
            if let Some(command) = pre_stop {
                let exec = super::service::ContainerExec {
                    context: context.clone(),
                    id: id.clone(),
                };
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = probe::ExecRunner::run(&exec, command, left).await;
            }
            let ctx = context.clone();
            let term_id = id.clone();
            let _ = blocking(move || {
                ctx.runtime
                    .signal(&term_id, nix::sys::signal::Signal::SIGTERM)
            })
            .await;
            while Instant::now() < deadline {
                let ctx = context.clone();
                let status_id = id.clone();
                match blocking(move || ctx.runtime.status(&status_id)).await {
                    Ok(ContainerStatus::Running { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    _ => break,
                }
            }
            kill(&context, &id).await;
            let ctx = context.clone();
            if let Err(e) = blocking(move || ctx.runtime.remove(&id)).await {
                tracing::warn!("removing a container: {e}");
            }
        }
    });
    futures::future::join_all(stops).await;
    // What earlier removals left behind goes with the pod.
    for slot in slots.iter() {
        for id in slot.record.to_remove.clone() {
            let ctx = context.clone();
            if let Err(e) = blocking(move || ctx.runtime.remove(&id)).await {
                tracing::warn!("removing a container: {e}");
            }
        }
    }
}

/// After an agent restart: containers, networks and records of pods no longer bound here.
pub async fn remove_orphans(context: &Arc<NodeContext>, desired: &HashMap<String, Pod>) {
    let ctx = context.clone();
    let instances = blocking(move || ctx.runtime.list())
        .await
        .unwrap_or_default();
    for id in instances {
        if pod_uid_of(&id).is_some_and(|uid| !desired.contains_key(uid)) {
            tracing::info!(container = %id, "removing an orphaned container");
            kill(context, &id).await;
            let ctx = context.clone();
            let _ = blocking(move || ctx.runtime.remove(&id)).await;
        }
    }
    for uid in context.network.list_pods().await.unwrap_or_default() {
        if !desired.contains_key(&uid) {
            tracing::info!(pod = %uid, "removing an orphaned pod network");
            let _ = context.network.teardown_pod(&uid).await;
        }
    }
    if let Ok(entries) = std::fs::read_dir(context.pods_dir()) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().to_string();
            if !desired.contains_key(&uid) {
                // Volumes first: a tmpfs must be unmounted, not emptied.
                super::pod_config::tear_down(&entry.path());
                let _ = std::fs::remove_dir_all(entry.path());
                let _ = std::fs::remove_dir_all(context.logs_dir().join(&uid));
            }
        }
    }
}
