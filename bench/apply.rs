//! Apply benchmark: writes per second and latency percentiles of `Apply` against a
//! one-member berth store (a real `berth server` process, fsync on every log append), at
//! several client concurrencies. Runs in a network namespace of its own.
//!
//! Usage: apply-bench [--berth PATH] [--seconds N] [--concurrency 1,64]

use anyhow::{Context, Result};
use berth_e2e::{isolate_network, Server, TestEnv};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::ApplyRequest;
use clap::Parser;
use tonic::transport::Channel;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// The berth binary to benchmark.
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// Seconds of load per concurrency level.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients, comma separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
}

/// A writer of the load: updates its own ConfigMap.
struct ConfigMapWriter {
    api: ApiClient<Channel>,
    name: String,
}

impl load::Writer for ConfigMapWriter {
    async fn write(&mut self, n: u64) -> Result<()> {
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "labels": {"bench": "apply"}},
            "data": {"counter": n.to_string(), "payload": "x".repeat(256)},
        });
        let request = ApplyRequest {
            object: serde_json::to_vec(&object)?,
            dry_run: false,
        };
        self.api.apply(request).await.context("apply failed")?;
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    isolate_network();
    let env = TestEnv::new();
    let server = Server::start(&args.berth, &env, &["--init", "--listen", "127.0.0.1:7443"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "berth apply benchmark: one-member store, {} s per level, data dir on {}",
        args.seconds,
        env.root.path().display()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10}",
        "clients", "writes/s", "p50 ms", "p99 ms", "max ms"
    );
    let channel = runtime.block_on(berth_proto::transport::connect(&server.addr))?;
    for &clients in &args.concurrency {
        let writer = |c: usize| {
            Ok(ConfigMapWriter {
                api: ApiClient::new(channel.clone()),
                name: format!("bench-{c}"),
            })
        };
        let report = runtime.block_on(load::run(
            clients,
            Duration::from_secs(args.seconds),
            writer,
        ))?;
        println!(
            "{:>8} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
            report.clients,
            report.writes_per_second,
            report.percentile(0.50).as_secs_f64() * 1e3,
            report.percentile(0.99).as_secs_f64() * 1e3,
            report.max().as_secs_f64() * 1e3,
        );
    }
    drop(server);
    Ok(())
}
