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
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

struct Report {
    clients: usize,
    writes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn percentile(&self, p: f64) -> Duration {
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
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
    for &clients in &args.concurrency {
        let report = runtime.block_on(load(
            &server.addr,
            clients,
            Duration::from_secs(args.seconds),
        ))?;
        println!(
            "{:>8} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
            report.clients,
            report.writes as f64 / report.elapsed.as_secs_f64(),
            report.percentile(0.50).as_secs_f64() * 1e3,
            report.percentile(0.99).as_secs_f64() * 1e3,
            report
                .latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        );
    }
    drop(server);
    Ok(())
}

/// `clients` tasks, each updating its own ConfigMap as fast as the store acknowledges.
async fn load(addr: &str, clients: usize, duration: Duration) -> Result<Report> {
    let channel = berth_proto::transport::connect(addr).await?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut api = ApiClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let object = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("bench-{client}"), "labels": {"bench": "apply"}},
                    "data": {"counter": i.to_string(), "payload": "x".repeat(256)},
                });
                let request = ApplyRequest {
                    object: serde_json::to_vec(&object)?,
                    dry_run: false,
                };
                let sent = Instant::now();
                api.apply(request).await.context("apply failed")?;
                latencies.push(sent.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Report {
        clients,
        writes: latencies.len(),
        elapsed,
        latencies,
    })
}
