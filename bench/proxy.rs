//! Load-balancer benchmark: berth's proxy against nginx and HAProxy, each a round-robin load
//! balancer in front of the same 3 local backends (nginx `return 200`), driven by the same
//! wrk load in the same run, alternating systems between rounds. HTTP keep-alive (L7) against
//! nginx `http` and HAProxy `mode http`; TCP (L4) against HAProxy `mode tcp` and nginx
//! `stream`. Prints req/s, p50 and p99 (medians over rounds) and the ratios to the peers.
//! Everything runs on loopback inside a network namespace of the benchmark's own (needs root).
//!
//! Usage: proxy-bench [--berth PATH] [--seconds N] [--connections N] [--threads N]
//!                    [--rounds N] [--only http|tcp]

use anyhow::{bail, Context, Result};
use clap::Parser;
use load::median;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    #[arg(long, default_value = "/usr/sbin/haproxy")]
    haproxy: PathBuf,
    #[arg(long, default_value = "/usr/bin/wrk")]
    wrk: PathBuf,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    connections: u32,
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Rounds per system; each round runs every system once, in a rotated order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run one mode only.
    #[arg(long)]
    only: Option<String>,
}

const BACKENDS: [u16; 3] = [9001, 9002, 9003];

/// A system under test: a name, the port wrk drives, and its mode.
struct Target {
    name: &'static str,
    port: u16,
    mode: &'static str,
}

const TARGETS: [Target; 7] = [
    Target {
        name: "direct (1 backend)",
        port: 9001,
        mode: "http",
    },
    Target {
        name: "berth http",
        port: 8083,
        mode: "http",
    },
    Target {
        name: "nginx http",
        port: 8081,
        mode: "http",
    },
    Target {
        name: "haproxy http",
        port: 8082,
        mode: "http",
    },
    Target {
        name: "berth tcp",
        port: 8093,
        mode: "tcp",
    },
    Target {
        name: "nginx stream",
        port: 8091,
        mode: "tcp",
    },
    Target {
        name: "haproxy tcp",
        port: 8092,
        mode: "tcp",
    },
];

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Process> {
        let log = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            name: name.to_string(),
            child,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

fn upstreams(indent: &str, prefix: &str, suffix: &str) -> String {
    BACKENDS
        .iter()
        .enumerate()
        .fold(String::new(), |mut out, (i, port)| {
            let _ = writeln!(out, "{indent}{prefix}{i} 127.0.0.1:{port}{suffix}");
            out
        })
}

fn nginx_backend_conf(dir: &Path, port: u16) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {dir}/backend-{port}.pid;\nerror_log {dir}/backend-{port}.err warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         server {{ listen 127.0.0.1:{port} reuseport backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        dir = dir.display()
    )
}

fn nginx_lb_conf(dir: &Path) -> String {
    let servers: String = BACKENDS
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes 2;\ndaemon off;\npid {dir}/nginx-lb.pid;\nerror_log {dir}/nginx-lb.err warn;\n\
         worker_rlimit_nofile 16384;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         upstream backends {{\n{servers}    keepalive 64;\n  }}\n\
         server {{\n    listen 127.0.0.1:8081 backlog=4096;\n    location / {{\n\
               proxy_pass http://backends;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n\
         stream {{\n  upstream backends {{\n{servers}  }}\n  server {{ listen 127.0.0.1:8091 backlog=4096; proxy_pass backends; }}\n}}\n",
        dir = dir.display()
    )
}

fn haproxy_conf() -> String {
    format!(
        "global\n  nbthread 2\n  maxconn 4096\n\
         defaults\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  maxconn 4096\n\
         frontend http_in\n  mode http\n  bind 127.0.0.1:8082\n  default_backend http_out\n\
         backend http_out\n  mode http\n  balance roundrobin\n  http-reuse always\n{}\
         frontend tcp_in\n  mode tcp\n  bind 127.0.0.1:8092\n  default_backend tcp_out\n\
         backend tcp_out\n  mode tcp\n  balance roundrobin\n{}",
        upstreams("  ", "server b", ""),
        upstreams("  ", "server b", ""),
    )
}

fn berth_conf() -> String {
    let endpoints = BACKENDS
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "admin: 127.0.0.1:9901\nlisteners:\n\
         - name: bench/web:http\n  listen: 127.0.0.1:8083\n  mode: http\n  balancer: round-robin\n  endpoints: [{endpoints}]\n\
         - name: bench/web:tcp\n  listen: 127.0.0.1:8093\n  mode: tcp\n  balancer: round-robin\n  endpoints: [{endpoints}]\n"
    )
}

/// One wrk run's result.
#[derive(Clone, Copy, Debug)]
struct Sample {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx responses plus socket errors.
    errors: u64,
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(output: &str) -> Result<Sample> {
    let mut sample = Sample {
        requests_per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
    };
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => sample.requests_per_second = value.parse()?,
            ["50%", value] => sample.p50_ms = parse_duration_ms(value).context("p50")?,
            ["99%", value] => sample.p99_ms = parse_duration_ms(value).context("p99")?,
            ["Non-2xx", "or", "3xx", "responses:", n] => sample.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for n in rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                {
                    sample.errors += n;
                }
            }
            _ => {}
        }
    }
    if sample.requests_per_second == 0.0 {
        bail!("no Requests/sec in wrk's output:\n{output}");
    }
    Ok(sample)
}

fn run_wrk(args: &Args, port: u16, seconds: u64) -> Result<Sample> {
    let output = Command::new(&args.wrk)
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

fn main() -> Result<()> {
    let args = Args::parse();
    berth_e2e::isolate_network();
    let dir = berth_e2e::TempDir::new()?;
    let path = dir.path();
    let mut processes = Vec::new();
    for port in BACKENDS {
        let conf = path.join(format!("backend-{port}.conf"));
        std::fs::write(&conf, nginx_backend_conf(path, port))?;
        processes.push(Process::spawn(
            &format!("nginx backend {port}"),
            Command::new(&args.nginx)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(path),
            &path.join(format!("backend-{port}.log")),
        )?);
    }
    let conf = path.join("nginx-lb.conf");
    std::fs::write(&conf, nginx_lb_conf(path))?;
    processes.push(Process::spawn(
        "nginx lb",
        Command::new(&args.nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(path),
        &path.join("nginx-lb.log"),
    )?);
    let conf = path.join("haproxy.cfg");
    std::fs::write(&conf, haproxy_conf())?;
    processes.push(Process::spawn(
        "haproxy",
        Command::new(&args.haproxy).arg("-db").arg("-f").arg(&conf),
        &path.join("haproxy.log"),
    )?);
    let conf = path.join("berth-proxy.yaml");
    std::fs::write(&conf, berth_conf())?;
    processes.push(Process::spawn(
        "berth proxy",
        Command::new(&args.berth)
            .arg("proxy")
            .arg("--config")
            .arg(&conf),
        &path.join("berth-proxy.log"),
    )?);
    for target in &TARGETS {
        wait_for_port(target.port).with_context(|| target.name)?;
    }

    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| args.only.as_deref().is_none_or(|only| only == t.mode))
        .collect();
    println!(
        "wrk -t{} -c{} -d{}s, {} rounds, systems alternated; 3 nginx backends (return 200)",
        args.threads, args.connections, args.seconds, args.rounds
    );
    // Warm up every system (connection pools, caches) before measuring.
    for target in &targets {
        run_wrk(&args, target.port, 1)?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let sample = run_wrk(&args, targets[i].port, args.seconds)?;
            eprintln!(
                "round {} {:<20} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                round + 1,
                targets[i].name,
                sample.requests_per_second,
                sample.p50_ms,
                sample.p99_ms,
                sample.errors
            );
            samples[i].push(sample);
        }
    }

    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>7}",
        "system", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let mut medians = Vec::new();
    for (target, samples) in targets.iter().zip(&samples) {
        let rps = median(samples.iter().map(|s| s.requests_per_second).collect());
        let p50 = median(samples.iter().map(|s| s.p50_ms).collect());
        let p99 = median(samples.iter().map(|s| s.p99_ms).collect());
        let errors: u64 = samples.iter().map(|s| s.errors).sum();
        println!(
            "{:<20} {rps:>10.0} {p50:>9.2} {p99:>9.2} {errors:>7}",
            target.name
        );
        medians.push((target.name, rps, p99));
    }
    let find = |name: &str| medians.iter().find(|m| m.0 == name).copied();
    for (ours, peer) in [
        ("berth http", "nginx http"),
        ("berth http", "haproxy http"),
        ("berth tcp", "haproxy tcp"),
        ("berth tcp", "nginx stream"),
    ] {
        if let (Some(ours), Some(peer)) = (find(ours), find(peer)) {
            println!(
                "{} / {}: req/s x{:.2}, p99 x{:.2}",
                ours.0,
                peer.0,
                ours.1 / peer.1,
                ours.2 / peer.2
            );
        }
    }
    drop(processes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let output = "Running 10s test @ http://127.0.0.1:8081/\n  2 threads and 64 connections\n\
  Latency Distribution\n     50%    1.19ms\n     75%    1.50ms\n     90%  800.00us\n     99%    3.40ms\n\
  510000 requests in 10.00s, 80.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
  Non-2xx or 3xx responses: 4\nRequests/sec:  51000.12\nTransfer/sec:      8.00MB\n";
        let sample = parse_wrk(output).unwrap();
        assert_eq!(sample.requests_per_second, 51000.12);
        assert_eq!(sample.p50_ms, 1.19);
        assert_eq!(sample.p99_ms, 3.4);
        assert_eq!(sample.errors, 7);
        assert_eq!(parse_duration_ms("800.00us"), Some(0.8));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500.0));
    }
}
