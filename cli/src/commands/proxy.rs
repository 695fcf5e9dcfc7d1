//! `berth proxy --config FILE`: the service proxy on its own, with listeners and static
//! endpoints from a YAML file (see `berth_proxy::config`). The agent runs the same proxy
//! in-process with endpoints from the cluster.

use anyhow::{Context, Result};
use berth_proxy::{Proxy, ProxyConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// YAML file: `admin: ADDR` (optional) and `listeners:` with name, listen, mode
    /// (tcp|http), balancer (peak-ewma|round-robin|client-ip), endpoints, and optionally
    /// `tls: {certFile, keyFile}` and `healthCheck: {path, intervalMs, ...}`.
    #[arg(long)]
    config: PathBuf,
    /// Where to serve /metrics (overrides the file's `admin`).
    #[arg(long)]
    admin: Option<SocketAddr>,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: ProxyConfig = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a proxy configuration", args.config.display()))?;
    let proxy = match config.workers {
        Some(workers) => Proxy::with_workers(workers)?,
        None => Proxy::new()?,
    };
    for listener in config.listeners {
        let name = listener.name.clone();
        let addr = proxy
            .listen(listener)
            .await
            .with_context(|| format!("listener {name:?}"))?;
        println!("{name}: {addr}");
    }
    if let Some(admin) = args.admin.or(config.admin) {
        println!("admin: {}", proxy.serve_admin(admin).await?);
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(ExitCode::SUCCESS)
}
