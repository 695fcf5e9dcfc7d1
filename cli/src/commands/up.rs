//! `berth up [--demo]`: a whole cluster in one process — a one-member control plane and a node
//! agent (which runs the node's service proxy) — with its data under one directory, and the
//! client config written so that `berth apply` works at once.
//!
//! ```text
//!  berth up ── Member (bootstrapped on first run, restarted as it was after) ── client config
//!          └─ agent (node = host name) ── pods as containers
//!  --demo  ── push the demo image ── apply manifests/demo.yaml ── wait for Ready ── print URLs
//!            (each pod's, and the Service's once the proxy answers on it)
//!  Ctrl-C  ── agent stops every pod, removes mounts, cgroups, veths and its bridge
//!          └─ member shuts down (the store keeps the desired state for the next `berth up`)
//! ```

use crate::client::{self, ClientConfig};
use anyhow::{anyhow, Context, Result};
use berth_control_plane::{Member, MemberConfig};
use berth_node_agent::agent::AgentConfig;
use berth_proto::k8s_openapi::api::core::v1::Pod;
use berth_proto::pb::{ApplyRequest, ListRequest};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The demo app `--demo` applies: the same file the README applies by hand.
const DEMO_MANIFEST: &str = include_str!("../../../manifests/demo.yaml");

#[derive(clap::Args)]
pub struct Args {
    /// Where the cluster keeps everything: `server/` (the store), `agent/` (containers, pod
    /// network, logs) and `images/`. Default: $XDG_DATA_HOME/berth.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the API (and registry). Default: 127.0.0.1:7443 (loopback only), or on
    /// restart the address used before.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the node agent serves logs and exec (loopback only by default).
    #[arg(long, default_value = "127.0.0.1:10250")]
    agent_listen: SocketAddr,
    /// The node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Where the service proxy serves its /metrics (loopback only by default).
    #[arg(long, default_value = "127.0.0.1:10249")]
    proxy_metrics: SocketAddr,
    /// Also push the demo image, apply manifests/demo.yaml (a Deployment of 3 replicas and a
    /// Service) and print how to reach it.
    #[arg(long)]
    demo: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(client::data_home);
    let name = super::agent::node_name(args.name)?;

    let mut config = MemberConfig::new(data_dir.join("server"));
    config.listen = args.listen;
    config.init = !config.holds_member();
    let fresh = config.init;
    let mut member = Member::start(config).await?;
    let server = member.addr.to_string();
    let path = client::write_config(&ClientConfig {
        server: server.clone(),
    })?;
    tracing::info!("client config written to {}", path.display());
    member
        .wait_for_leader(Duration::from_secs(10))
        .await
        .map_err(|e| anyhow!("the control plane elected no leader: {e}"))?;

    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut agent = tokio::spawn(berth_node_agent::agent::run(
        AgentConfig {
            servers: vec![server.clone()],
            name: name.clone(),
            data_dir: data_dir.join("agent"),
            listen: args.agent_listen,
            address: None,
            shim: std::env::current_exe().context("locating the berth binary")?,
            stop_pods_on_exit: true,
            proxy: true,
            proxy_metrics: Some(args.proxy_metrics),
        },
        async move {
            let _ = agent_stopped.await;
        },
    ));
    // The first line says where the cluster is (scripts and tests read it).
    say(&format!("api: {server}"));
    say(&format!(
        "{} cluster: control plane {server}, node {name}; data in {}; `berth` finds it through {}",
        if fresh { "a new" } else { "the" },
        data_dir.display(),
        path.display()
    ));

    let interrupted = super::agent::stop_signal()?;
    tokio::pin!(interrupted);

    let mut agent_result = None;
    if args.demo {
        tokio::select! {
            result = demo(&server, &data_dir, args.agent_listen.ip()) => if let Err(e) = result {
                tracing::error!("the demo: {e:#}");
            },
            result = &mut agent => agent_result = Some(result),
            _ = &mut interrupted => {}
        }
    }
    if agent_result.is_none() {
        say("Ctrl-C stops the cluster (its pods too); `berth up` again brings it back as it was.");
        tokio::select! {
            _ = &mut interrupted => tracing::info!("interrupted; stopping the node's pods"),
            result = &mut agent => agent_result = Some(result),
            result = member.serving() => {
                if let Err(e) = result {
                    tracing::error!("the API server stopped: {e}");
                }
            }
        }
    }
    let agent_result = match agent_result {
        Some(result) => result,
        None => {
            let _ = stop_agent.send(());
            agent.await
        }
    };
    member.shutdown().await;
    match agent_result {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(anyhow!("the node agent stopped: {e}")),
        Err(e) => Err(anyhow!("the node agent failed: {e}")),
    }
}

/// Pushes the demo image, applies the demo manifests and prints where its replicas answer.
async fn demo(server: &str, data_dir: &std::path::Path, node_ip: std::net::IpAddr) -> Result<()> {
    let registry = berth_image::RegistryClient::new(
        berth_proto::transport::http_client(),
        vec![server.to_string()],
    );
    let (image, digest) =
        super::image::push_demo(&registry, data_dir.join("images"), "demo:latest").await?;
    say(&format!("Pushed: {image} ({digest})"));

    let objects = berth_proto::manifest::parse("manifests/demo.yaml", DEMO_MANIFEST)
        .map_err(|e| anyhow!("{e}"))?;
    let mut api = client::connect(Some(server.to_string())).await?;
    for object in objects {
        let key = object.resource.key();
        api.apply(ApplyRequest {
            object: object.resource.to_json(),
            dry_run: false,
        })
        .await
        .map_err(client::server_error)
        .with_context(|| format!("applying {}", client::display_name(&key)))?;
        say(&format!("{} applied", client::display_name(&key)));
    }

    // The first start pulls the image (a few seconds); later starts find it cached.
    let deadline = Instant::now() + Duration::from_secs(120);
    let addresses = loop {
        let listed = api
            .list(ListRequest {
                kind: "Pod".into(),
                namespace: "default".into(),
                label_selector: "app=demo".into(),
                stale_ok: true,
            })
            .await
            .map_err(client::server_error)?
            .into_inner();
        let pods: Vec<Pod> = listed
            .objects
            .iter()
            .filter_map(|o| serde_json::from_slice(o).ok())
            .collect();
        let ready: Vec<String> = pods.iter().filter_map(ready_address).collect();
        if !pods.is_empty() && ready.len() == pods.len() {
            break ready;
        }
        if Instant::now() > deadline {
            say("The demo's pods are not all Ready yet: see `berth get pods` and `berth describe pods`.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    say(&format!(
        "The demo runs: {} replicas, each answering HTTP with its name, IP and a counter:",
        addresses.len()
    ));
    for address in addresses {
        say(&format!("  curl http://{address}:8080/"));
    }
    // The Service, once the node's proxy answers on it (the listener follows the Service by
    // milliseconds): a line printed here is a URL that works.
    let service = berth_proto::pb::ObjectRef {
        kind: "Service".into(),
        namespace: "default".into(),
        name: "demo".into(),
    };
    let service: serde_json::Value = match api
        .get(berth_proto::pb::GetRequest {
            object: Some(service),
            stale_ok: true,
        })
        .await
    {
        Ok(response) => serde_json::from_slice(&response.into_inner().object)?,
        Err(status) => {
            say(&format!("The demo Service: {}", status.message()));
            return Ok(());
        }
    };
    let urls = service_urls(&service, node_ip);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(&urls).await {
        if Instant::now() > deadline {
            say("The demo Service does not answer yet: see `berth describe service demo`.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say("The demo Service balances requests across them, from this machine and from every pod:");
    for (what, addr) in urls {
        let host = match addr.port() {
            80 => addr.ip().to_string(),
            _ => addr.to_string(),
        };
        say(&format!("demo: http://{host}/ ({what})"));
    }
    Ok(())
}

/// Where the demo Service answers on this node: its ClusterIP, and its NodePort on the node's
/// address (the agent's: loopback unless --agent-listen says otherwise).
fn service_urls(
    service: &serde_json::Value,
    node_ip: std::net::IpAddr,
) -> Vec<(&'static str, SocketAddr)> {
    let spec = &service["spec"];
    let port = &spec["ports"][0];
    let mut urls = Vec::new();
    if let (Some(ip), Some(port)) = (spec["clusterIP"].as_str(), port["port"].as_u64()) {
        if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
            urls.push(("ClusterIP", SocketAddr::new(ip, port as u16)));
        }
    }
    if let Some(node_port) = port["nodePort"].as_u64() {
        urls.push(("NodePort", SocketAddr::new(node_ip, node_port as u16)));
    }
    urls
}

/// Whether every address answers an HTTP GET with 200.
async fn answers(urls: &[(&str, SocketAddr)]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (_, addr) in urls {
        let get = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.ok()?;
            Some(head.ends_with(b" 200"))
        };
        let answered = tokio::time::timeout(Duration::from_secs(2), get).await;
        if answered.ok().flatten() != Some(true) {
            return false;
        }
    }
    !urls.is_empty()
}

/// The pod's IP once it is Ready.
fn ready_address(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| status.pod_ip.clone()).flatten()
}

/// A line on stdout; a reader that went away (a script that read the first line) is no error.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
