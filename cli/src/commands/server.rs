//! `berth server`: run a control-plane member.

use crate::client::{self, ClientConfig};
use anyhow::{Context, Result};
use berth_control_plane::{Member, MemberConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where this member keeps its Raft log and state. Default: $XDG_DATA_HOME/berth/server.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve the API and Raft on. Default: 127.0.0.1:7443 (loopback only), or on
    /// restart the address used before.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Bootstrap a new one-member cluster in an empty data directory and write the client
    /// config.
    #[arg(long)]
    init: bool,
    /// Join the cluster of the member at this address (host:port) with an empty data
    /// directory: added as a learner, promoted to voter once caught up.
    #[arg(long, value_name = "PEER_ADDR", conflicts_with = "init")]
    join: Option<String>,
    /// Snapshot and compact the Raft log after this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_threshold: u64,
    /// Revisions of change history kept, so that watches can resume.
    #[arg(long, default_value_t = 10_000)]
    watch_history: u64,
    /// A node whose agent is silent this long becomes NotReady (agents beat every 500 ms).
    #[arg(long, default_value = "1.5s", value_parser = parse_duration)]
    node_grace_period: std::time::Duration,
    /// Pods of a NotReady node are evicted (deleted, then replaced) after this long.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pod_eviction_timeout: std::time::Duration,
    /// Events are deleted this long after they last happened (kube-apiserver's default).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// The network Services' ClusterIPs come from (give every member the same).
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cluster_ip_range: String,
    /// The ports NodePort and LoadBalancer Services' nodePorts come from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
}

/// A duration like `1.5s`, `500ms` or `2m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration: jiff::SignedDuration = text.parse().map_err(|e| format!("{e}"))?;
    std::time::Duration::try_from(duration).map_err(|_| format!("{text} is negative"))
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| client::data_home().join("server"));
    let mut config = MemberConfig::new(&data_dir);
    config.listen = args.listen;
    config.init = args.init;
    config.join = args.join;
    config.snapshot_threshold = args.snapshot_threshold;
    config.watch_history = args.watch_history;
    config.node_lifecycle = berth_control_plane::nodes::LifecycleConfig {
        grace: args.node_grace_period,
        eviction_toleration: args.pod_eviction_timeout,
    };
    config.event_ttl = args.event_ttl;
    config.service_ranges = berth_control_plane::store::allocation::ServiceRanges::new(
        &args.service_cluster_ip_range,
        &args.service_node_port_range,
    )?;
    let mut member = Member::start(config).await?;
    if args.init {
        let path = client::write_config(&ClientConfig {
            server: member.addr.to_string(),
        })?;
        tracing::info!("client config written to {}", path.display());
    }
    // Serve clients once there is a leader to take their writes (in a one-member cluster,
    // this member after one election timeout); a leaderless cluster still says where it is.
    if let Err(e) = member
        .wait_for_leader(std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!("no leader yet: {e}");
    }
    // The first line of output says where to reach the cluster (scripts read it).
    println!("api: {}", member.addr);

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let departed = member.departed();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = terminate.recv() => tracing::info!("terminated; shutting down"),
        _ = departed => {
            // Let the answer to `berth members leave` reach the client first.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            tracing::info!("left the cluster; shutting down");
        }
        result = member.serving() => {
            result.map_err(|e| anyhow::anyhow!("the API server stopped: {e}"))?;
        }
    }
    member.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_in_friendly_units() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
