//! Apply → Ready latency: a Deployment of N replicas (default 100) applied to a one-member
//! control plane with three node agents (three hosts, each a network namespace of its own),
//! the image already cached on every node. Per pod: the time from sending the apply to the
//! first status of that pod with `Ready=True`, as a watch on the API delivers it. Repeated
//! for several rounds (the Deployment is deleted, and its pods gone, between rounds).
//!
//! Usage: ready-bench [--replicas 100] [--rounds 5]   (root; berth next to this binary)

use anyhow::{bail, Context, Result};
use berth_e2e::cluster::Cluster;
use berth_e2e::node::Agent;
use berth_e2e::{eventually, isolate_network};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{ApplyRequest, DeleteRequest, ListRequest, ObjectRef, WatchRequest};
use clap::Parser;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Replicas of the Deployment applied each round.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    /// Rounds (each: apply, all Ready, delete, all gone).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "main", "image": "busybox",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                    }],
                },
            },
        },
    })
}

use berth_e2e::pod_ready as ready;

async fn pods(api: &mut ApiClient<Channel>, app: &str) -> Result<(Vec<Value>, u64)> {
    let listed = api
        .list(ListRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: format!("app={app}"),
            stale_ok: false,
        })
        .await?
        .into_inner();
    let pods = listed
        .objects
        .iter()
        .map(|o| serde_json::from_slice(o))
        .collect::<Result<_, _>>()?;
    Ok((pods, listed.revision))
}

/// Applies the Deployment and returns each pod's apply → Ready time, in the order they
/// became Ready.
async fn round(api: &mut ApiClient<Channel>, app: &str, replicas: usize) -> Result<Vec<Duration>> {
    let (_, revision) = pods(api, app).await?;
    let mut events = api
        .watch(WatchRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: format!("app={app}"),
            from_revision: revision,
        })
        .await?
        .into_inner();
    let sent = Instant::now();
    api.apply(ApplyRequest {
        object: serde_json::to_vec(&deployment(app, replicas))?,
        dry_run: false,
    })
    .await?;
    let mut became_ready: HashMap<String, Duration> = HashMap::new();
    let deadline = sent + Duration::from_secs(300);
    while became_ready.len() < replicas {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = tokio::time::timeout(left, events.message())
            .await
            .context("pods not all Ready within 300 s")??
        else {
            bail!("the watch ended");
        };
        let pod: Value = serde_json::from_slice(&event.object)?;
        if ready(&pod) {
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            became_ready.entry(uid).or_insert_with(|| sent.elapsed());
        }
    }
    let mut times: Vec<Duration> = became_ready.into_values().collect();
    times.sort();
    Ok(times)
}

async fn delete_and_wait(api: &mut ApiClient<Channel>, app: &str) -> Result<()> {
    api.delete(DeleteRequest {
        object: Some(ObjectRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: app.into(),
        }),
        resource_version: 0,
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods(api, app).await?.0.is_empty() {
        if Instant::now() > deadline {
            bail!("pods of {app} still there 120 s after deleting it");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The fixtures find berth through BERTH_BIN, else beside a test executable in deps/.
    if std::env::var_os("BERTH_BIN").is_none() {
        let exe = std::env::current_exe()?;
        std::env::set_var("BERTH_BIN", exe.with_file_name("berth"));
    }
    isolate_network();
    let cluster = Cluster::with_hosts(4, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let _agents: Vec<Agent> = (1..=3)
        .map(|i| Agent::start(&cluster, i, &format!("node-{i}")))
        .collect();
    let nodes_ready = eventually(Duration::from_secs(30), || {
        cluster
            .berth_on(0, &["get", "nodes"])
            .stdout()
            .matches(" Ready")
            .count()
            == 3
    });
    if !nodes_ready {
        bail!("the three nodes did not become Ready");
    }
    // The runtime's threads are made from this one: all talk from the control plane's host.
    cluster.network.hosts[0].enter();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let addr = cluster.addr(0);
    runtime.block_on(async move {
        let mut api = ApiClient::new(berth_proto::transport::connect(&addr).await?);
        // Warm-up: every node pulls the image once (a replica per node, spread).
        round(&mut api, "warm", 6).await?;
        delete_and_wait(&mut api, "warm").await?;

        println!(
            "apply → Ready, {} replicas of a cached image on 3 nodes (1 control-plane member)",
            args.replicas
        );
        println!("| round | p50 ms | p99 ms | max (all Ready) ms | pods/s |");
        println!("|---|---|---|---|---|");
        let mut all = Vec::new();
        for r in 1..=args.rounds {
            let times = round(&mut api, "ready", args.replicas).await?;
            let last = *times.last().expect("replicas > 0");
            println!(
                "| {r} | {} | {} | {} | {:.0} |",
                ms(load::percentile(&times, 0.50)),
                ms(load::percentile(&times, 0.99)),
                ms(last),
                times.len() as f64 / last.as_secs_f64()
            );
            all.extend(times);
            delete_and_wait(&mut api, "ready").await?;
        }
        all.sort();
        println!(
            "| all | {} | {} | {} | |",
            ms(load::percentile(&all, 0.50)),
            ms(load::percentile(&all, 0.99)),
            ms(*all.last().expect("rounds > 0"))
        );
        anyhow::Ok(())
    })?;
    Ok(())
}
