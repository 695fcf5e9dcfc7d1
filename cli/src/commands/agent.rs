//! `berth agent`: run a node agent.

use anyhow::{Context, Result};
use berth_node_agent::agent::AgentConfig;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The node's name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Where the agent keeps its containers, pod network state and logs.
    /// Default: $XDG_DATA_HOME/berth/agent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the agent serves logs and exec to the control plane. Default: 127.0.0.1:10250
    /// (loopback only).
    #[arg(long, default_value = "127.0.0.1:10250")]
    listen: SocketAddr,
    /// The node address reported to the cluster. Default: the --listen address.
    #[arg(long)]
    address: Option<IpAddr>,
    /// Run the node's service proxy: every Service's ClusterIP, NodePort and LoadBalancer
    /// ports answered on this node (the default).
    #[arg(long, overrides_with = "no_proxy")]
    proxy: bool,
    /// Do not run the service proxy.
    #[arg(long, overrides_with = "proxy")]
    no_proxy: bool,
    /// Where the service proxy serves its /metrics (loopback only by default).
    #[arg(long, default_value = "127.0.0.1:10249")]
    proxy_metrics: SocketAddr,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let servers = crate::client::server_addresses(server)?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| crate::client::data_home().join("agent"));
    let config = AgentConfig {
        servers,
        name: node_name(args.name)?,
        data_dir,
        listen: args.listen,
        address: args.address,
        shim: std::env::current_exe().context("locating the berth binary")?,
        stop_pods_on_exit: false,
        proxy: !args.no_proxy,
        proxy_metrics: Some(args.proxy_metrics),
    };
    berth_node_agent::agent::run(config, stop_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}

/// The node's name: the one given, else the host name (`berth up` names its node so too).
pub fn node_name(given: Option<String>) -> Result<String> {
    match given {
        Some(name) => Ok(name),
        None => Ok(nix::unistd::gethostname()
            .context("reading the host name (or pass --name)")?
            .to_string_lossy()
            .to_string()),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
}
