//! `berth cordon|uncordon|drain NODE`: keep the scheduler off a node, and move its pods away.

use crate::client;
use anyhow::{bail, Context, Result};
use berth_proto::pb::{DeleteRequest, ListRequest};
use berth_proto::{Kind, ObjectKey};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The node's name.
    node: String,
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// The node's name.
    node: String,
    /// Also delete pods no controller owns (they are not recreated anywhere).
    #[arg(long)]
    force: bool,
    /// How long to wait for the pods to be gone, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

pub async fn cordon(server: Option<String>, args: Args, unschedulable: bool) -> Result<ExitCode> {
    let mut api = client::connect(server).await?;
    let changed = set_unschedulable(&mut api, &args.node, unschedulable).await?;
    let what = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if changed {
        println!("node/{} {what}", args.node);
    } else {
        println!("node/{} already {what}", args.node);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets `spec.unschedulable`, conditional on the version read (retried on a conflict).
/// Returns whether it changed.
async fn set_unschedulable(
    api: &mut berth_proto::pb::api_client::ApiClient<tonic::transport::Channel>,
    node: &str,
    unschedulable: bool,
) -> Result<bool> {
    let key = ObjectKey::new(Kind::Node, "", node);
    super::scale::edit_object(api, &key, |object| {
        if object["spec"]["unschedulable"].as_bool().unwrap_or(false) == unschedulable {
            return Ok(false);
        }
        object["spec"]["unschedulable"] = unschedulable.into();
        Ok(true)
    })
    .await
}

/// The pods bound to `node` that are not already terminating.
async fn pods_on(
    api: &mut berth_proto::pb::api_client::ApiClient<tonic::transport::Channel>,
    node: &str,
) -> Result<Vec<Value>> {
    let list = api
        .list(ListRequest {
            kind: Kind::Pod.as_str().to_string(),
            namespace: String::new(),
            label_selector: String::new(),
            stale_ok: false,
        })
        .await
        .map_err(client::server_error)?
        .into_inner();
    let mut pods = Vec::new();
    for bytes in &list.objects {
        let pod: Value = serde_json::from_slice(bytes).context("decoding a pod")?;
        if pod["spec"]["nodeName"] == node && pod["metadata"]["deletionTimestamp"].is_null() {
            pods.push(pod);
        }
    }
    Ok(pods)
}

fn managed(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["controller"] == true)
}

fn pod_key(pod: &Value) -> ObjectKey {
    ObjectKey::new(
        Kind::Pod,
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// kubectl drain: cordon, then delete the node's pods (their controllers recreate them on
/// other nodes) and wait until they are gone.
pub async fn drain(server: Option<String>, args: DrainArgs) -> Result<ExitCode> {
    let mut api = client::connect(server).await?;
    if set_unschedulable(&mut api, &args.node, true).await? {
        println!("node/{} cordoned", args.node);
    }
    let pods = pods_on(&mut api, &args.node).await?;
    let unmanaged: Vec<String> = pods
        .iter()
        .filter(|p| !managed(p))
        .map(|p| client::display_name(&pod_key(p)))
        .collect();
    if !unmanaged.is_empty() && !args.force {
        bail!(
            "cannot drain node/{}: these pods have no controller to recreate them elsewhere (use --force to delete them): {}",
            args.node,
            unmanaged.join(", ")
        );
    }
    for pod in &pods {
        let key = pod_key(pod);
        let request = DeleteRequest {
            object: Some(client::object_ref(&key)),
            resource_version: 0,
        };
        match api.delete(request).await {
            Ok(_) => println!("pod/{} evicted", key.name),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(client::server_error(status)),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let names: Vec<String> = pods.iter().map(|p| pod_key(p).storage_key()).collect();
    loop {
        let left = pods_on(&mut api, &args.node)
            .await?
            .iter()
            .filter(|p| names.contains(&pod_key(p).storage_key()))
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{left} pod(s) still on node/{} after {} s",
                args.node,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("node/{} drained", args.node);
    Ok(ExitCode::SUCCESS)
}
