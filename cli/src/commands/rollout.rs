//! `berth rollout status|history|undo|restart|pause|resume deploy/NAME`: kubectl's rollout
//! commands, in arguments, output and exit codes.
//!
//! The Deployment controller (control-plane/src/controllers/deployment.rs) does the rolling;
//! these commands only read what it records and change the Deployment's spec:
//!
//! - status follows the Deployment through the API's watch (no polling) and judges each
//!   version as kubectl's DeploymentStatusViewer does: nothing counts until
//!   `status.observedGeneration` has caught up with `metadata.generation`; then
//!   ProgressDeadlineExceeded fails, and updated / old / available replicas say what is left.
//! - history reads the revision annotation and `kubernetes.io/change-cause` of the
//!   ReplicaSets the Deployment controls (the controller copies the Deployment's annotations
//!   to the ReplicaSet of each new revision).
//! - undo copies a revision's template (minus pod-template-hash) and that ReplicaSet's
//!   annotations into the Deployment, as kubectl's rollbacker does; the controller then
//!   revives the old ReplicaSet under the next revision number.
//! - restart stamps the template with `kubectl.kubernetes.io/restartedAt`; pause and resume
//!   set `spec.paused`.
//!
//! Every write is conditional on the resourceVersion read ([`edit_object`]).

use super::scale::{edit_object, for_each_object, get_value, parse_targets};
use crate::client::{self, Next, Watched};
use crate::output;
use anyhow::{bail, Context, Result};
use berth_control_plane::controllers::deployment::{
    revision as revision_of, template_of_revision, DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION,
};
use berth_proto::k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use berth_proto::k8s_openapi::api::core::v1::PodTemplateSpec;
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{EventType, WatchRequest};
use berth_proto::{Kind, ObjectKey, Resource, DEFAULT_NAMESPACE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

/// What `rollout history` shows as each revision's cause.
const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// The template annotation `rollout restart` sets: a changed template is a new rollout.
const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Annotations of the Deployment's own that a rollback keeps, and does not take from the
/// ReplicaSet (kubectl's annotationsToSkip).
const NOT_ROLLED_BACK: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Show a rollout's progress, following it until it completes.
    Status(StatusArgs),
    /// List a Deployment's revisions, or show one revision's pod template.
    History(HistoryArgs),
    /// Roll back to the previous revision, or to --to-revision.
    Undo(UndoArgs),
    /// Start a new rollout of the same template (its pods are replaced).
    Restart(Targets),
    /// Stop rolling out template changes until resumed (scaling still works).
    Pause(Targets),
    /// Resume a paused Deployment.
    Resume(Targets),
}

#[derive(clap::Args)]
struct Targets {
    /// TYPE NAME... (`deploy web`) or TYPE/NAME... (`deploy/web`).
    #[arg(required = true, value_name = "TYPE NAME... | TYPE/NAME...")]
    resources: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Targets,
    /// Give up after this long (`30s`, `5m`); 0 waits for ever.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    timeout: Duration,
    /// Follow the rollout until it completes; `--watch=false` prints its state once.
    #[arg(
        short,
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    watch: bool,
    /// Fail unless the Deployment is at this revision (0: any).
    #[arg(long, default_value_t = 0)]
    revision: i64,
}

#[derive(clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    target: Targets,
    /// Show this revision's pod template.
    #[arg(long, default_value_t = 0)]
    revision: i64,
}

#[derive(clap::Args)]
struct UndoArgs {
    #[command(flatten)]
    target: Targets,
    /// The revision to roll back to (0: the one before the current).
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
}

/// A duration like `30s`, `1m30s` or `500ms`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let duration: jiff::SignedDuration = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(duration).map_err(|_| format!("{text} is negative"))
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Status(args) => status(server, args).await,
        Command::History(args) => history(server, args).await,
        Command::Undo(args) => {
            let to_revision = args.to_revision;
            for_each(server, args.target, async |api, key| {
                undo(api, key, to_revision).await
            })
            .await
        }
        Command::Restart(targets) => {
            for_each(server, targets, async |api, key| restart(api, key).await).await
        }
        Command::Pause(targets) => {
            for_each(server, targets, async |api, key| {
                set_paused(api, key, true).await
            })
            .await
        }
        Command::Resume(targets) => {
            for_each(server, targets, async |api, key| {
                set_paused(api, key, false).await
            })
            .await
        }
    }
}

/// The Deployments the arguments name; rollouts are a Deployment's.
fn deployments(targets: &Targets) -> Result<Vec<ObjectKey>> {
    let namespace = targets.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    parse_targets(&targets.resources)?
        .into_iter()
        .map(|(kind, name)| {
            if kind != Kind::Deployment {
                bail!(
                    "{}: berth rollout works on deployments only",
                    kind.qualified_name()
                );
            }
            Ok(ObjectKey::new(kind, namespace, name))
        })
        .collect()
}

fn one_deployment(targets: &Targets, command: &str) -> Result<ObjectKey> {
    let mut keys = deployments(targets)?;
    if keys.len() != 1 {
        bail!("rollout {command} takes one deployment at a time");
    }
    Ok(keys.remove(0))
}

/// `deployments.apps "web"`, as kubectl names an object in a rollout error.
fn resource_string(key: &ObjectKey) -> String {
    let kind = match key.kind.group() {
        "" => key.kind.plural().to_string(),
        group => format!("{}.{group}", key.kind.plural()),
    };
    format!("{kind} {:?}", key.name)
}

/// Runs `step` on each named Deployment (see [`for_each_object`]).
async fn for_each(
    server: Option<String>,
    targets: Targets,
    step: impl AsyncFnMut(&mut ApiClient<Channel>, &ObjectKey) -> Result<String>,
) -> Result<ExitCode> {
    let keys = deployments(&targets)?;
    let mut api = client::connect(server).await?;
    Ok(for_each_object(&mut api, keys, step).await)
}

fn decode<T: serde::de::DeserializeOwned>(value: Value, key: &ObjectKey) -> Result<T> {
    serde_json::from_value(value).with_context(|| format!("decoding {}", client::display_name(key)))
}

fn is_paused(object: &Value) -> bool {
    object["spec"]["paused"].as_bool().unwrap_or(false)
}

async fn set_paused(api: &mut ApiClient<Channel>, key: &ObjectKey, paused: bool) -> Result<String> {
    edit_object(api, key, |object| {
        if is_paused(object) == paused {
            let state = if paused {
                "is already paused"
            } else {
                "is not paused"
            };
            bail!("{} {state}", resource_string(key));
        }
        object["spec"]["paused"] = paused.into();
        Ok(true)
    })
    .await?;
    Ok(if paused { "paused" } else { "resumed" }.to_string())
}

async fn restart(api: &mut ApiClient<Channel>, key: &ObjectKey) -> Result<String> {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .context("rounding the time")?
        .to_string();
    edit_object(api, key, |object| {
        if is_paused(object) {
            bail!(
                "{} can't restart paused deployment (run rollout resume first)",
                resource_string(key)
            );
        }
        let annotations = &mut object["spec"]["template"]["metadata"]["annotations"];
        if annotations[RESTARTED_AT_ANNOTATION] == now.as_str() {
            bail!(
                "failed to create patch for {}: if restart has already been triggered within the past second, please wait before attempting to trigger another",
                key.name
            );
        }
        annotations[RESTARTED_AT_ANNOTATION] = now.clone().into();
        Ok(true)
    })
    .await?;
    Ok("restarted".to_string())
}

/// The ReplicaSets `deployment` controls, found by its uid in their owner references.
async fn owned_replica_sets(
    api: &mut ApiClient<Channel>,
    deployment: &Deployment,
) -> Result<Vec<ReplicaSet>> {
    let namespace = deployment
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE);
    let (objects, _) = client::list(api, Kind::ReplicaSet, namespace, "", false).await?;
    let uid = deployment.metadata.uid.as_deref();
    Ok(objects
        .into_iter()
        .filter_map(|object| match object {
            Resource::ReplicaSet(rs) => Some(*rs),
            _ => None,
        })
        .filter(|rs| {
            berth_control_plane::controllers::controller_of(&rs.metadata)
                .is_some_and(|owner| Some(owner.uid.as_str()) == uid)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// undo

async fn undo(api: &mut ApiClient<Channel>, key: &ObjectKey, to_revision: i64) -> Result<String> {
    let deployment: Deployment = decode(get_value(api, key).await?, key)?;
    if deployment.spec.paused == Some(true) {
        bail!(paused_rollback());
    }
    let sets = owned_replica_sets(api, &deployment).await?;
    let rs = replica_set_for_revision(&sets, to_revision, &key.name)?;
    let revision = revision_of(rs);
    let template = template_of_revision(&sets, revision)
        .context("the ReplicaSet of that revision has no pod template")?;
    let annotations: BTreeMap<String, String> = rs
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_ROLLED_BACK.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let template_value = serde_json::to_value(&template)?;
    let mut skipped = false;
    edit_object(api, key, |object| {
        if is_paused(object) {
            bail!(paused_rollback());
        }
        let current: PodTemplateSpec = decode(object["spec"]["template"].clone(), key)?;
        if current == template {
            skipped = true;
            return Ok(false);
        }
        object["spec"]["template"] = template_value.clone();
        // kubectl replaces the annotations with the revision's, keeping the bookkeeping ones.
        let mut merged: serde_json::Map<String, Value> = object["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| NOT_ROLLED_BACK.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merged.extend(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into())),
        );
        object["metadata"]["annotations"] = Value::Object(merged);
        Ok(true)
    })
    .await?;
    Ok(if skipped {
        format!("skipped rollback (current template already matches revision {revision})")
    } else {
        "rolled back".to_string()
    })
}

fn paused_rollback() -> &'static str {
    "you cannot rollback a paused deployment; resume it first with 'berth rollout resume' and try again"
}

/// The ReplicaSet of `to_revision`; 0 is the one before the latest (kubectl's choice).
fn replica_set_for_revision<'a>(
    sets: &'a [ReplicaSet],
    to_revision: i64,
    name: &str,
) -> Result<&'a ReplicaSet> {
    let mut by_revision: Vec<(i64, &ReplicaSet)> = sets
        .iter()
        .map(|rs| (revision_of(rs), rs))
        .filter(|(revision, _)| *revision > 0)
        .collect();
    by_revision.sort_by_key(|(revision, _)| *revision);
    if to_revision > 0 {
        return by_revision
            .iter()
            .find(|(revision, _)| *revision == to_revision)
            .map(|(_, rs)| *rs)
            .with_context(|| {
                format!("unable to find specified revision {to_revision} in history")
            });
    }
    match by_revision.len() {
        0 | 1 => bail!("no rollout history found for deployment {name:?}"),
        n => Ok(by_revision[n - 2].1),
    }
}

// ---------------------------------------------------------------------------------------------
// history

async fn history(server: Option<String>, args: HistoryArgs) -> Result<ExitCode> {
    let key = one_deployment(&args.target, "history")?;
    let mut api = client::connect(server).await?;
    let deployment: Deployment = decode(get_value(&mut api, &key).await?, &key)?;
    let sets = owned_replica_sets(&mut api, &deployment).await?;
    let text = history_text(&sets, args.revision)?;
    let heading = match args.revision {
        0 => String::new(),
        n => format!("with revision #{n}"),
    };
    // kubectl's heading keeps its space even without a revision.
    println!("{} {heading}", client::display_name(&key));
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `REVISION  CHANGE-CAUSE` rows, or with `revision` > 0 that revision's pod template (with
/// its change-cause among the template's annotations, as kubectl shows it).
fn history_text(sets: &[ReplicaSet], revision: i64) -> Result<String> {
    let mut revisions: BTreeMap<i64, PodTemplateSpec> = BTreeMap::new();
    for rs in sets {
        let number = revision_of(rs);
        if number <= 0 {
            continue;
        }
        let mut template = rs.spec.template.clone().unwrap_or_default();
        let cause = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHANGE_CAUSE_ANNOTATION));
        if let Some(cause) = cause.filter(|c| !c.is_empty()) {
            template
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(CHANGE_CAUSE_ANNOTATION.into(), cause.clone());
        }
        revisions.insert(number, template);
    }
    if revisions.is_empty() {
        return Ok("No rollout history found.".to_string());
    }
    if revision > 0 {
        let template = revisions
            .get(&revision)
            .context("unable to find the specified revision")?;
        return Ok(output::pod_template(template));
    }
    let rows: Vec<(String, String)> = revisions
        .iter()
        .map(|(number, template)| {
            let cause = template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(CHANGE_CAUSE_ANNOTATION))
                .cloned()
                .unwrap_or_else(|| "<none>".into());
            (number.to_string(), cause)
        })
        .collect();
    // kubectl's tabwriter here pads by two spaces.
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(8) + 2;
    let mut text = format!("{:<width$}CHANGE-CAUSE\n", "REVISION");
    for (number, cause) in rows {
        text.push_str(&format!("{number:<width$}{cause}\n"));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// status

async fn status(server: Option<String>, args: StatusArgs) -> Result<ExitCode> {
    if args.revision < 0 {
        bail!("revision must be a positive integer: {}", args.revision);
    }
    let key = one_deployment(&args.target, "status")?;
    let mut api = client::connect(server.clone()).await?;
    let follow = follow(server, &mut api, &key, args.watch, args.revision);
    if args.timeout.is_zero() {
        return follow.await;
    }
    match tokio::time::timeout(args.timeout, follow).await {
        Ok(result) => result,
        Err(_) => bail!("timed out waiting for the condition"),
    }
}

/// Prints the rollout's state as each change of the Deployment arrives (a line once, not again
/// while it stays the same) until it is done.
async fn follow(
    server: Option<String>,
    api: &mut ApiClient<Channel>,
    key: &ObjectKey,
    watch: bool,
    wanted_revision: i64,
) -> Result<ExitCode> {
    let mut last = String::new();
    let mut report = |deployment: &Deployment| -> Result<bool> {
        let (line, done) = rollout_status(deployment, wanted_revision)?;
        if line != last {
            print!("{line}");
            std::io::stdout().flush()?;
            last = line;
        }
        Ok(done)
    };
    let (deployment, revision) = current(api, key).await?;
    if report(&deployment)? || !watch {
        return Ok(ExitCode::SUCCESS);
    }
    // Watch from the revision the list was read at: no change in between is missed.
    let request = WatchRequest {
        kind: Kind::Deployment.as_str().to_string(),
        namespace: key.namespace.clone(),
        label_selector: String::new(),
        from_revision: revision,
    };
    client::follow_watch(server, api, request, async |api, watched| match watched {
        Watched::Event(event) => {
            let Resource::Deployment(deployment) = client::decode(&event.object)? else {
                return Ok(Next::Continue);
            };
            if deployment.metadata.name.as_deref() != Some(key.name.as_str()) {
                return Ok(Next::Continue);
            }
            if event.r#type() == EventType::Deleted {
                // Following a namesake made later would report on the wrong object.
                bail!("object has been deleted");
            }
            Ok(if report(&deployment)? {
                Next::Done(ExitCode::SUCCESS)
            } else {
                Next::Continue
            })
        }
        Watched::Expired => {
            // The history is gone: start over from what is there now.
            let (deployment, fresh) = current(api, key).await?;
            Ok(if report(&deployment)? {
                Next::Done(ExitCode::SUCCESS)
            } else {
                Next::Relisted(fresh)
            })
        }
    })
    .await
}

/// The Deployment as it is now, and the store revision it was read at (a list is read at one
/// revision; a get does not say which).
async fn current(api: &mut ApiClient<Channel>, key: &ObjectKey) -> Result<(Deployment, u64)> {
    let (objects, revision) =
        client::list(api, Kind::Deployment, &key.namespace, "", false).await?;
    let deployment = objects.into_iter().find_map(|object| match object {
        Resource::Deployment(d) if d.metadata.name.as_deref() == Some(key.name.as_str()) => {
            Some(*d)
        }
        _ => None,
    });
    match deployment {
        Some(deployment) => Ok((deployment, revision)),
        None => bail!("Error from server (NotFound): {key} not found"),
    }
}

/// kubectl's DeploymentStatusViewer: the line to print, and whether the rollout is done.
/// Nothing in the status counts until the controller has seen the latest spec.
fn rollout_status(deployment: &Deployment, wanted_revision: i64) -> Result<(String, bool)> {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    if wanted_revision > 0 {
        let current = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .map(|r| r.parse::<i64>())
            .transpose()
            .ok()
            .flatten()
            .with_context(|| format!("cannot get the revision of deployment {name:?}"))?;
        if current != wanted_revision {
            bail!(
                "desired revision ({wanted_revision}) is different from the running revision ({current})"
            );
        }
    }
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    if generation > status.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for deployment spec update to be observed...\n".into(),
            false,
        ));
    }
    let timed_out = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let replicas = deployment.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let waiting = |what: String| {
        Ok((
            format!("Waiting for deployment {name:?} rollout to finish: {what}...\n"),
            false,
        ))
    };
    if updated < replicas {
        return waiting(format!(
            "{updated} out of {replicas} new replicas have been updated"
        ));
    }
    if total > updated {
        return waiting(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    if available < updated {
        return waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Ok((
        format!("deployment {name:?} successfully rolled out\n"),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_control_plane::controllers::deployment::POD_TEMPLATE_HASH_LABEL;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation,
                         "annotations": {REVISION_ANNOTATION: "2"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": status,
        }))
        .unwrap()
    }

    fn line(d: &Deployment) -> (String, bool) {
        rollout_status(d, 0).unwrap()
    }

    #[test]
    fn status_follows_kubectls_order_of_checks() {
        let stale = deployment(
            3,
            json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            line(&stale),
            (
                "Waiting for deployment spec update to be observed...\n".into(),
                false
            )
        );
        let updating = deployment(
            3,
            json!({"observedGeneration": 3, "updatedReplicas": 1, "replicas": 4, "availableReplicas": 3}),
        );
        assert_eq!(line(&updating).0, "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...\n");
        let old = deployment(
            3,
            json!({"observedGeneration": 3, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3}),
        );
        assert_eq!(line(&old).0, "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n");
        let unavailable = deployment(
            3,
            json!({"observedGeneration": 3, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 1}),
        );
        assert_eq!(line(&unavailable).0, "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available...\n");
        let done = deployment(
            3,
            json!({"observedGeneration": 3, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            line(&done),
            ("deployment \"web\" successfully rolled out\n".into(), true)
        );
    }

    #[test]
    fn status_fails_on_the_progress_deadline_and_a_wrong_revision() {
        let stuck = deployment(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 0,
                   "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        let error = rollout_status(&stuck, 0).unwrap_err().to_string();
        assert_eq!(error, "deployment \"web\" exceeded its progress deadline");
        let done = deployment(
            1,
            json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
        );
        assert!(rollout_status(&done, 2).unwrap().1);
        let error = rollout_status(&done, 1).unwrap_err().to_string();
        assert_eq!(
            error,
            "desired revision (1) is different from the running revision (2)"
        );
    }

    fn replica_set(revision: &str, image: &str, cause: Option<&str>) -> ReplicaSet {
        let mut annotations = json!({REVISION_ANNOTATION: revision});
        if let Some(cause) = cause {
            annotations[CHANGE_CAUSE_ANNOTATION] = cause.into();
        }
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{revision}"), "annotations": annotations},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH_LABEL: "abc"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn history_lists_revisions_with_their_change_cause() {
        let sets = [
            replica_set("3", "web:3", Some("kubectl set image web:3")),
            replica_set("1", "web:1", None),
        ];
        assert_eq!(
            history_text(&sets, 0).unwrap(),
            "REVISION  CHANGE-CAUSE\n1         <none>\n3         kubectl set image web:3\n"
        );
        let one = history_text(&sets, 3).unwrap();
        assert!(one.starts_with("Pod Template:\n"), "{one}");
        assert!(one.contains("web:3"), "{one}");
        assert!(
            one.contains("kubernetes.io/change-cause: kubectl set image web:3"),
            "{one}"
        );
        assert_eq!(
            history_text(&sets, 2).unwrap_err().to_string(),
            "unable to find the specified revision"
        );
        assert_eq!(history_text(&[], 0).unwrap(), "No rollout history found.");
    }

    #[test]
    fn timeouts_read_like_kubectls() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn undo_picks_the_revision_before_the_latest_by_default() {
        let sets = [
            replica_set("4", "web:4", None),
            replica_set("2", "web:2", None),
            replica_set("3", "web:3", None),
        ];
        let name = |rs: &ReplicaSet| rs.metadata.name.clone().unwrap();
        assert_eq!(
            name(replica_set_for_revision(&sets, 0, "web").unwrap()),
            "web-3"
        );
        assert_eq!(
            name(replica_set_for_revision(&sets, 2, "web").unwrap()),
            "web-2"
        );
        assert_eq!(
            replica_set_for_revision(&sets, 1, "web")
                .unwrap_err()
                .to_string(),
            "unable to find specified revision 1 in history"
        );
        assert_eq!(
            replica_set_for_revision(&sets[..1], 0, "web")
                .unwrap_err()
                .to_string(),
            "no rollout history found for deployment \"web\""
        );
    }
}
