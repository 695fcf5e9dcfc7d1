//! Replicated-store benchmark: berth's 3-member control plane against a 3-member etcd, same
//! machine, same load generator, same run. Measures writes/s and latency percentiles at
//! several client concurrencies, then leader failover: SIGKILL the leader, time until the first
//! acknowledged write through a surviving member. Everything runs on loopback inside a network
//! namespace of the benchmark's own (needs root).
//!
//! Both clusters run side by side and the loads alternate between them (berth, etcd, at each
//! level, for several rounds), so that a machine that slows down mid-run slows both; each
//! figure is the median over the rounds.
//!
//! Usage: store-bench [--berth PATH] [--etcd PATH] [--seconds N] [--concurrency 1,16,256]
//!                    [--rounds N] [--failovers N] [--only berth|etcd] [--round-trips N]

use anyhow::{bail, Context, Result};
use berth_e2e::{isolate_network, Server, TestEnv};
use berth_proto::pb::api_client::ApiClient;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

use load::{median, percentile, Load};

mod etcd {
    tonic::include_proto!("etcdserverpb");
}

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Seconds of load per concurrency level.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Leader kills per system.
    #[arg(long, default_value_t = 20)]
    failovers: usize,
    /// Rounds of the loads (each figure is the median over them).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run one system only.
    #[arg(long)]
    only: Option<String>,
    /// Also time this many sequential cheap reads (berth: a stale Get; etcd: Status) on one
    /// member: the gRPC round trip under the writes.
    #[arg(long, default_value_t = 0)]
    round_trips: usize,
}

const MEMBERS: usize = 3;
const VALUE_BYTES: usize = 256;

/// A 3-member cluster of either system.
enum Cluster {
    Berth {
        servers: Vec<Option<Server>>,
        env: TestEnv,
        berth: PathBuf,
    },
    Etcd {
        children: Vec<Option<Child>>,
        dir: berth_e2e::TempDir,
        etcd: PathBuf,
    },
}

/// Where member `i` serves clients.
fn client_addr(system: &str, i: usize) -> String {
    match system {
        "berth" => format!("127.0.0.1:{}7443", i + 1),
        _ => format!("127.0.0.1:{}2379", i + 1),
    }
}

impl Cluster {
    fn name(&self) -> &'static str {
        match self {
            Cluster::Berth { .. } => "berth",
            Cluster::Etcd { .. } => "etcd",
        }
    }

    fn start_berth(berth: &Path) -> Cluster {
        let env = TestEnv::new();
        let mut servers = Vec::new();
        for i in 0..MEMBERS {
            let listen = client_addr("berth", i);
            let first = client_addr("berth", 0);
            let mut args = vec!["--listen", listen.as_str()];
            if i == 0 {
                args.push("--init");
            } else {
                args.extend(["--join", first.as_str()]);
            }
            let dir = env.root.path().join(format!("m{}", i + 1));
            servers.push(Some(Server::start_on(None, berth, &env, &dir, &args)));
        }
        Cluster::Berth {
            servers,
            env,
            berth: berth.to_path_buf(),
        }
    }

    fn etcd_command(etcd: &Path, dir: &Path, i: usize) -> Command {
        let n = i + 1;
        let cluster = (1..=MEMBERS)
            .map(|m| format!("m{m}=http://127.0.0.1:{m}2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(etcd);
        command
            .args(["--name", &format!("m{n}")])
            .arg("--data-dir")
            .arg(dir.join(format!("m{n}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{n}2379")])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{n}2379"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{n}2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{n}2380"),
            ])
            .args(["--initial-cluster", &cluster])
            .args([
                "--initial-cluster-token",
                "berth-bench",
                "--initial-cluster-state",
                "new",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn start_etcd(etcd: &Path) -> Result<Cluster> {
        let dir = berth_e2e::TempDir::new()?;
        let mut children = Vec::new();
        for i in 0..MEMBERS {
            children.push(Some(
                Self::etcd_command(etcd, dir.path(), i)
                    .spawn()
                    .context("starting etcd")?,
            ));
        }
        Ok(Cluster::Etcd {
            children,
            dir,
            etcd: etcd.to_path_buf(),
        })
    }

    fn kill(&mut self, i: usize) {
        match self {
            Cluster::Berth { servers, .. } => {
                if let Some(mut server) = servers[i].take() {
                    server.kill();
                }
            }
            Cluster::Etcd { children, .. } => {
                if let Some(mut child) = children[i].take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    fn restart(&mut self, i: usize) -> Result<()> {
        match self {
            Cluster::Berth {
                servers,
                env,
                berth,
            } => {
                let dir = env.root.path().join(format!("m{}", i + 1));
                servers[i] = Some(Server::start_on(None, berth, env, &dir, &[]));
            }
            Cluster::Etcd {
                children,
                dir,
                etcd,
            } => {
                children[i] = Some(Self::etcd_command(etcd, dir.path(), i).spawn()?);
            }
        }
        Ok(())
    }

    /// The member that leads, if one does.
    async fn leader(&self) -> Option<usize> {
        for i in 0..MEMBERS {
            let addr = client_addr(self.name(), i);
            let Ok(channel) = berth_proto::transport::connect(&addr).await else {
                continue;
            };
            match self {
                Cluster::Berth { .. } => {
                    let Ok(members) = ApiClient::new(channel)
                        .members(berth_proto::pb::MembersRequest {})
                        .await
                    else {
                        continue;
                    };
                    let members = members.into_inner();
                    let leader = members.members.iter().find(|m| m.id == members.leader_id)?;
                    return (0..MEMBERS).find(|j| client_addr("berth", *j) == leader.addr);
                }
                Cluster::Etcd { .. } => {
                    let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(channel);
                    let Ok(status) = maintenance.status(etcd::StatusRequest {}).await else {
                        continue;
                    };
                    let status = status.into_inner();
                    if status.leader != 0
                        && status.header.as_ref().map(|h| h.member_id) == Some(status.leader)
                    {
                        return Some(i);
                    }
                }
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..MEMBERS {
            self.kill(i);
        }
    }
}

/// One client connection to one member, of either system.
#[derive(Clone)]
enum Client {
    Berth(ApiClient<Channel>),
    Etcd(etcd::kv_client::KvClient<Channel>),
}

impl Client {
    fn new(system: &str, member: usize) -> Result<Client> {
        let channel = berth_proto::transport::connect_lazy(&client_addr(system, member))?;
        Ok(match system {
            "berth" => Client::Berth(ApiClient::new(channel)),
            _ => Client::Etcd(etcd::kv_client::KvClient::new(channel)),
        })
    }

    /// Writes `key` = a 256-byte value carrying `counter`.
    async fn put(&mut self, key: &str, counter: u64, timeout: Duration) -> Result<()> {
        let mut value = format!("{counter}-");
        value.extend(std::iter::repeat_n(
            'x',
            VALUE_BYTES.saturating_sub(value.len()),
        ));
        match self {
            Client::Berth(api) => {
                let object = serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": key}, "data": {"value": value},
                });
                let mut request = tonic::Request::new(berth_proto::pb::ApplyRequest {
                    object: serde_json::to_vec(&object)?,
                    dry_run: false,
                });
                request.set_timeout(timeout);
                api.apply(request).await?;
            }
            Client::Etcd(kv) => {
                let mut request = tonic::Request::new(etcd::PutRequest {
                    key: key.into(),
                    value: value.into_bytes(),
                });
                request.set_timeout(timeout);
                kv.put(request).await?;
            }
        }
        Ok(())
    }
}

/// A writer of the load: one client, one key of its own.
struct KeyWriter {
    client: Client,
    key: String,
}

impl load::Writer for KeyWriter {
    async fn write(&mut self, n: u64) -> Result<()> {
        self.client.put(&self.key, n, Duration::from_secs(10)).await
    }
}

/// Waits until a write goes through some member.
async fn wait_writable(system: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut member = 0;
    while Instant::now() < deadline {
        if Client::new(system, member)?
            .put("probe", 0, Duration::from_millis(500))
            .await
            .is_ok()
        {
            return Ok(());
        }
        member = (member + 1) % MEMBERS;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{system} did not accept writes within {timeout:?}")
}

/// SIGKILL the leader; time until a surviving member acknowledges a write. Then restart it.
async fn failovers(cluster: &mut Cluster, rounds: usize) -> Result<Vec<Duration>> {
    let system = cluster.name();
    let mut times = Vec::new();
    for round in 0..rounds {
        wait_writable(system, Duration::from_secs(30)).await?;
        let Some(leader) = cluster.leader().await else {
            bail!("{system}: no leader before round {round}")
        };
        cluster.kill(leader);
        let killed = Instant::now();
        let survivors: Vec<usize> = (0..MEMBERS).filter(|m| *m != leader).collect();
        let mut attempt = 0;
        loop {
            let member = survivors[attempt % survivors.len()];
            attempt += 1;
            let mut client = Client::new(system, member)?;
            if client
                .put("failover", round as u64, Duration::from_millis(500))
                .await
                .is_ok()
            {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                if system == "berth" {
                    for m in &survivors {
                        let addr = client_addr(system, *m);
                        if let Ok(channel) = berth_proto::transport::connect(&addr).await {
                            let mut api = ApiClient::new(channel);
                            let cluster = api.cluster(berth_proto::pb::ClusterRequest {}).await;
                            let error = client
                                .put("failover", 0, Duration::from_millis(500))
                                .await
                                .err();
                            eprintln!("member {m}: {cluster:?} put: {error:?}");
                        }
                    }
                }
                bail!("{system}: no write accepted 30 s after killing the leader {leader}");
            }
        }
        times.push(killed.elapsed());
        cluster.restart(leader)?;
        // Let the restarted member catch up before the next kill.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eprintln!(
        "{system} failovers (ms, in order): {:?}",
        times.iter().map(|t| t.as_millis()).collect::<Vec<_>>()
    );
    times.sort();
    Ok(times)
}

/// Times `n` sequential cheap reads on member 0.
async fn round_trips(system: &str, n: usize) -> Result<Vec<Duration>> {
    let channel = berth_proto::transport::connect(&client_addr(system, 0)).await?;
    let mut times = Vec::with_capacity(n);
    let mut api = ApiClient::new(channel.clone());
    let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(channel);
    for _ in 0..n {
        let start = Instant::now();
        if system == "berth" {
            api.get(berth_proto::pb::GetRequest {
                object: Some(berth_proto::pb::ObjectRef {
                    kind: "ConfigMap".into(),
                    namespace: "default".into(),
                    name: "probe".into(),
                }),
                stale_ok: true,
            })
            .await?;
        } else {
            maintenance.status(etcd::StatusRequest {}).await?;
        }
        times.push(start.elapsed());
    }
    Ok(times)
}

/// One concurrency level of one system: medians over the rounds.
struct Level {
    writes_per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Level {
    fn median_of(loads: &[Load]) -> Level {
        let of = |f: &dyn Fn(&Load) -> f64| median(loads.iter().map(f).collect());
        Level {
            writes_per_second: of(&|l| l.writes_per_second),
            p50: Duration::from_secs_f64(of(&|l| l.percentile(0.5).as_secs_f64())),
            p99: Duration::from_secs_f64(of(&|l| l.percentile(0.99).as_secs_f64())),
        }
    }
}

struct Results {
    levels: Vec<Level>,
    failover: Vec<Duration>,
}

/// One level of load on one system. Client `c` talks to member `leader + c`: the first
/// client is the leader's in both systems, so a single client's writes are never forwarded
/// in one system and forwarded in the other (which member leads is up to each election).
async fn load(system: &str, clients: usize, seconds: u64, leader: usize) -> Result<Load> {
    let writer = |c: usize| {
        Ok(KeyWriter {
            client: Client::new(system, (leader + c) % MEMBERS)?,
            key: format!("bench-{c}"),
        })
    };
    load::run(clients, Duration::from_secs(seconds), writer).await
}

/// The loads, alternating between the clusters, round after round; then each system's
/// round trips and failovers.
async fn measure(clusters: &mut [Cluster], args: &Args) -> Result<Vec<Results>> {
    for cluster in clusters.iter() {
        wait_writable(cluster.name(), Duration::from_secs(30)).await?;
    }
    let mut loads: Vec<Vec<Vec<Load>>> = clusters
        .iter()
        .map(|_| args.concurrency.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 1..=args.rounds {
        for (level, &clients) in args.concurrency.iter().enumerate() {
            for (i, cluster) in clusters.iter().enumerate() {
                let system = cluster.name();
                let Some(leader) = cluster.leader().await else {
                    bail!("{system}: no leader before round {round}")
                };
                let result = load(system, clients, args.seconds, leader).await?;
                eprintln!(
                    "round {round}: {system} c={clients} (leader: member {leader}): {:.0} writes/s p50 {:.2} ms p99 {:.2} ms",
                    result.writes_per_second,
                    ms(result.percentile(0.5)),
                    ms(result.percentile(0.99))
                );
                loads[i][level].push(result);
            }
        }
    }
    let mut results = Vec::new();
    for (cluster, loads) in clusters.iter_mut().zip(loads) {
        let system = cluster.name();
        if args.round_trips > 0 {
            let mut times = round_trips(system, args.round_trips).await?;
            times.sort();
            eprintln!(
                "{system} read round trip p50 {:.0} us p99 {:.0} us",
                percentile(&times, 0.5).as_secs_f64() * 1e6,
                percentile(&times, 0.99).as_secs_f64() * 1e6
            );
        }
        let failover = failovers(cluster, args.failovers).await?;
        if !failover.is_empty() {
            eprintln!(
                "{system} failover p50 {:.0} ms p99 {:.0} ms",
                ms(percentile(&failover, 0.5)),
                ms(percentile(&failover, 0.99))
            );
        }
        results.push(Results {
            levels: loads.iter().map(|l| Level::median_of(l)).collect(),
            failover,
        });
    }
    Ok(results)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    isolate_network();
    // The load generator's threads are its own: TOKIO_WORKER_THREADS, which berth's members
    // inherit, does not change them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()?;
    let run_berth = args.only.as_deref() != Some("etcd");
    let run_etcd = args.only.as_deref() != Some("berth");
    let mut clusters = Vec::new();
    if run_berth {
        clusters.push(Cluster::start_berth(&args.berth));
    }
    if run_etcd {
        if !args.etcd.exists() {
            bail!(
                "{} not found: apt-get install etcd-server (or pass --only berth)",
                args.etcd.display()
            );
        }
        clusters.push(Cluster::start_etcd(&args.etcd)?);
    }
    let mut results = runtime.block_on(measure(&mut clusters, &args))?.into_iter();
    let berth = if run_berth { results.next() } else { None };
    let etcd = if run_etcd { results.next() } else { None };
    report(&args, berth.as_ref(), etcd.as_ref());
    Ok(())
}

fn report(args: &Args, berth: Option<&Results>, etcd: Option<&Results>) {
    println!(
        "3-member stores on loopback, {} s per level, medians of {} alternating rounds, \
         {VALUE_BYTES}-byte values, {} failovers",
        args.seconds, args.rounds, args.failovers
    );
    println!(
        "{:<26} {:>12} {:>12} {:>14}",
        "", "berth", "etcd", "berth/etcd"
    );
    let row = |name: String, b: Option<f64>, e: Option<f64>| {
        let cell = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let ratio = match (b, e) {
            (Some(b), Some(e)) if e > 0.0 => format!("{:.2}", b / e),
            _ => "-".into(),
        };
        println!("{name:<26} {:>12} {:>12} {ratio:>14}", cell(b), cell(e));
    };
    for (i, clients) in args.concurrency.iter().enumerate() {
        let pick =
            |r: Option<&Results>, f: &dyn Fn(&Level) -> f64| r.and_then(|r| r.levels.get(i)).map(f);
        row(
            format!("writes/s, {clients} clients"),
            pick(berth, &|l| l.writes_per_second),
            pick(etcd, &|l| l.writes_per_second),
        );
        row(
            format!("p50 ms, {clients} clients"),
            pick(berth, &|l| ms(l.p50)),
            pick(etcd, &|l| ms(l.p50)),
        );
        row(
            format!("p99 ms, {clients} clients"),
            pick(berth, &|l| ms(l.p99)),
            pick(etcd, &|l| ms(l.p99)),
        );
    }
    if args.failovers == 0 {
        return;
    }
    let failover = |r: Option<&Results>, p: f64| r.map(|r| ms(percentile(&r.failover, p)));
    row(
        "failover p50 ms".into(),
        failover(berth, 0.5),
        failover(etcd, 0.5),
    );
    row(
        "failover p99 ms".into(),
        failover(berth, 0.99),
        failover(etcd, 0.99),
    );
}
