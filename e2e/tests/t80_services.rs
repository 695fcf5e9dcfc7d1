//! Services through the proxy every node agent runs: a control-plane member on host 0 (also
//! the "outside" client: it runs no agent), node agents on hosts 1 and 2, each its own
//! network namespace on one switch. Backends are busybox httpd pods whose page is their own
//! name, Ready while /tmp/ready exists.
//!
//! - ClusterIP from pods on both nodes (so across nodes, through the node routes) and from a
//!   node itself; NodePort and LoadBalancer from host 0 through each node's address.
//! - Readiness off: the endpoint leaves (only the other answers); on: it rejoins.
//! - A rolling update under a constant request stream fails no request.
//! - TLS terminated with a certificate from a Secret (rcgen), checked by a rustls client.

use berth_e2e::cluster::{berth_binary, Cluster};
use berth_e2e::network::Host;
use berth_e2e::node::Agent;
use berth_e2e::{eventually, isolate_network, pod_ready};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The backends: `replicas` httpd pods answering with their name; `version` changes the pod
/// template (a rollout). Ready while /tmp/ready exists.
fn web(replicas: u32, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo $HOSTNAME > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        env:
        - {{name: VERSION, value: "{version}"}}
        ports:
        - {{name: web, containerPort: 8080}}
        readinessProbe:
          exec: {{command: ["test", "-f", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

/// A Service of `type` in front of the web pods, port 80 (named http: L7) → the pods' `web`.
fn web_service(name: &str, service_type: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
{extra}spec:
  type: {service_type}
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: web}}
"#
    )
}

/// A busybox pod on `node` that only waits, to run wget in.
fn client_pod(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#
    )
}

/// One member on host 0, agents `node-1` and `node-2` on hosts 1 and 2, busybox pushed.
struct Services {
    agents: Vec<Agent>,
    cluster: Cluster,
}

fn services() -> Services {
    isolate_network();
    let cluster = Cluster::with_hosts(3, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let agents = (1..=2)
        .map(|i| Agent::start(&cluster, i, &format!("node-{i}")))
        .collect();
    Services { agents, cluster }
}

impl Services {
    fn apply(&self, yaml: &str) {
        self.cluster.apply_on(0, yaml).ok();
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let run = self.cluster.berth_on(0, &["get", kind, name, "-o", "json"]);
        run.success()
            .then(|| serde_json::from_str(&run.stdout()).ok())
            .flatten()
    }

    /// The web pods not being deleted: (name, node, Ready, VERSION).
    fn web_pods(&self) -> Vec<(String, String, bool, String)> {
        let run = self
            .cluster
            .berth_on(0, &["get", "pods", "-l", "app=web", "-o", "json"]);
        let list: Value = serde_json::from_str(&run.stdout()).unwrap_or(Value::Null);
        let items = match list["kind"].as_str() {
            Some("List") => list["items"].as_array().cloned().unwrap_or_default(),
            Some("Pod") => vec![list],
            _ => Vec::new(),
        };
        items
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["status"]["phase"] == "Running" && pod_ready(p),
                    p["spec"]["containers"][0]["env"][0]["value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    /// Waits for `count` Ready web pods of `version`; returns their names.
    fn wait_web(&self, count: usize, version: &str) -> BTreeSet<String> {
        let ok = eventually(Duration::from_secs(90), || {
            let pods = self.web_pods();
            pods.len() == count && pods.iter().all(|(_, _, ready, v)| *ready && v == version)
        });
        assert!(
            ok,
            "not {count} Ready web pods of {version}: {:?}",
            self.web_pods()
        );
        self.web_pods().into_iter().map(|(name, ..)| name).collect()
    }

    fn wait_pod_ready(&self, name: &str) {
        let ok = eventually(Duration::from_secs(60), || {
            self.get("pod", name).is_some_and(|p| pod_ready(&p))
        });
        assert!(ok, "pod {name} never Ready: {:?}", self.get("pod", name));
    }

    /// The Service once the control plane gave it what `check` wants.
    fn wait_service(&self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        let ok = eventually(Duration::from_secs(30), || {
            self.get("service", name).is_some_and(|s| check(&s))
        });
        let service = self.get("service", name);
        assert!(ok, "service {name} not as expected: {service:#?}");
        service.expect("seen")
    }

    fn cluster_ip(&self, name: &str) -> String {
        let service = self.wait_service(name, |s| s["spec"]["clusterIP"].is_string());
        service["spec"]["clusterIP"].as_str().unwrap().to_string()
    }

    fn node_port(&self, name: &str) -> u16 {
        let service = self.wait_service(name, |s| s["spec"]["ports"][0]["nodePort"].is_u64());
        service["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16
    }

    /// The address of node `i` (host i).
    fn node_ip(&self, i: usize) -> std::net::Ipv4Addr {
        self.cluster.network.hosts[i].addr
    }

    /// `wget` in a pod; the page, trimmed.
    fn wget_in(&self, pod: &str, url: &str) -> Result<String, String> {
        let output = self.cluster.network.hosts[0]
            .command(&berth_binary())
            .args(["--server", &self.cluster.addr(0), "exec", pod, "--"])
            // No -T: Debian's static busybox wget crashes with it.
            .args(["wget", "-qO-", url])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run berth exec");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn exec(&self, pod: &str, command: &[&str]) {
        let output = self.cluster.network.hosts[0]
            .command(&berth_binary())
            .args(["--server", &self.cluster.addr(0), "exec", pod, "--"])
            .args(command)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run berth exec");
        assert!(
            output.status.success(),
            "exec {command:?} in {pod}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `GET /` over a new connection from `host`'s network namespace; the body, trimmed.
fn http_get(host: &Host, addr: SocketAddr) -> Result<String, String> {
    on_host(host, move || get(addr))
}

/// Runs `f` on a thread inside `host`'s network namespace.
fn on_host<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = format!("/run/netns/{}", host.netns);
    std::thread::spawn(move || {
        enter(&netns);
        f()
    })
    .join()
    .expect("thread on the host")
}

fn enter(netns: &str) {
    let file = std::fs::File::open(netns).expect("open the host's namespace");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the host");
}

fn get(addr: SocketAddr) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    body_of(&response)
}

/// The body of a 200 response, trimmed.
fn body_of(response: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("not 200: {head}"));
    }
    Ok(body.trim().to_string())
}

/// Pages from `count` requests made by `request`.
fn pages(count: usize, mut request: impl FnMut() -> Result<String, String>) -> Vec<String> {
    (0..count)
        .map(|_| request().unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

#[test]
fn t10_cluster_ip_node_port_load_balancer_and_readiness() {
    let mut s = services();
    s.apply(&web(2, "v1"));
    s.apply(&web_service("web", "NodePort", ""));
    s.apply(&client_pod("client-1", "node-1"));
    s.apply(&client_pod("client-2", "node-2"));
    let backends = s.wait_web(2, "v1");
    let nodes: BTreeSet<String> = s.web_pods().into_iter().map(|(_, node, ..)| node).collect();
    assert_eq!(
        nodes.len(),
        2,
        "the replicas are not spread: {:?}",
        s.web_pods()
    );
    s.wait_pod_ready("client-1");
    s.wait_pod_ready("client-2");

    // ClusterIP from a pod on each node: each reaches both backends, one of them on the
    // other node.
    let vip = s.cluster_ip("web");
    let url = format!("http://{vip}/");
    for client in ["client-1", "client-2"] {
        let mut seen = BTreeSet::new();
        let mut last_error = String::new();
        let reached = eventually(Duration::from_secs(60), || {
            match s.wget_in(client, &url) {
                Ok(page) if backends.contains(&page) => {
                    seen.insert(page);
                }
                Ok(page) => panic!("{client}: {url} answered {page:?}, not a backend's name"),
                Err(e) => last_error = e,
            }
            seen == backends
        });
        assert!(
            reached,
            "{client} reached only {seen:?} of {backends:?} at {url} (last error: {last_error}); \
             endpoint slices:\n{}",
            s.cluster
                .berth_on(0, &["get", "endpointslices", "-o", "yaml"])
                .stdout()
        );
    }
    // ... and from the node itself.
    let vip_addr: SocketAddr = format!("{vip}:80").parse().unwrap();
    let page = http_get(&s.cluster.network.hosts[1], vip_addr).unwrap();
    assert!(backends.contains(&page), "{page}");

    // NodePort from host 0 (no agent there) through each node's address.
    let node_port = s.node_port("web");
    for i in 1..=2 {
        let addr = SocketAddr::from((s.node_ip(i), node_port));
        let answered = eventually(Duration::from_secs(30), || {
            http_get(&s.cluster.network.hosts[0], addr).is_ok_and(|p| backends.contains(&p))
        });
        assert!(answered, "NodePort {addr} did not answer with a backend");
    }

    // Readiness off: only the other backend answers; on: both again.
    let host0 = &s.cluster.network.hosts[0];
    let node_port_1 = SocketAddr::from((s.node_ip(1), node_port));
    let unready = backends.iter().next().unwrap().clone();
    let other = backends.iter().nth(1).unwrap().clone();
    s.exec(&unready, &["rm", "/tmp/ready"]);
    let left = eventually(Duration::from_secs(30), || {
        pages(10, || http_get(host0, node_port_1))
            .iter()
            .all(|p| *p == other)
    });
    assert!(
        left,
        "{unready} (not Ready) still gets requests: {:?}",
        pages(10, || http_get(host0, node_port_1))
    );
    s.exec(&unready, &["touch", "/tmp/ready"]);
    let mut seen = BTreeSet::new();
    let rejoined = eventually(Duration::from_secs(30), || {
        if let Ok(page) = http_get(host0, node_port_1) {
            seen.insert(page);
        }
        seen.contains(&unready)
    });
    assert!(
        rejoined,
        "{unready} (Ready again) gets no requests: {seen:?}"
    );

    // LoadBalancer: the status lists the nodes, the service port answers on each.
    s.apply(&web_service("web-lb", "LoadBalancer", ""));
    let lb = s.wait_service("web-lb", |s| {
        s["status"]["loadBalancer"]["ingress"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    });
    let ingress: BTreeSet<String> = lb["status"]["loadBalancer"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap_or("").to_string())
        .collect();
    let node_ips: BTreeSet<String> = (1..=2).map(|i| s.node_ip(i).to_string()).collect();
    assert_eq!(ingress, node_ips);
    for i in 1..=2 {
        let addr = SocketAddr::from((s.node_ip(i), 80));
        let answered = eventually(Duration::from_secs(30), || {
            http_get(host0, addr).is_ok_and(|p| backends.contains(&p))
        });
        assert!(
            answered,
            "LoadBalancer {addr} did not answer with a backend"
        );
    }

    // An agent killed and restarted serves the same again, over the same routes and VIPs.
    s.agents[0].kill();
    let cluster = &s.cluster;
    s.agents[0].restart(cluster);
    let lb_1 = SocketAddr::from((s.node_ip(1), 80));
    for addr in [node_port_1, lb_1] {
        let answered = eventually(Duration::from_secs(30), || {
            http_get(&s.cluster.network.hosts[0], addr).is_ok_and(|p| backends.contains(&p))
        });
        assert!(answered, "{addr} not served after the agent's restart");
    }
    let page = s.wget_in("client-1", &url).unwrap();
    assert!(backends.contains(&page), "{page}");
    let ip = |args: &[&str]| {
        let output = std::process::Command::new("ip")
            .args(["-n", &s.cluster.network.hosts[1].netns])
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let routes = ip(&["route", "show", "proto", "98"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(
        routes.contains(&format!("via {}", s.node_ip(2))),
        "{routes}"
    );
    let addresses = ip(&["-4", "-o", "addr", "show", "dev", "berth-svc"]);
    let vips: Vec<&str> = addresses
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    let lb_vip = lb["spec"]["clusterIP"].as_str().unwrap();
    assert_eq!(
        vips.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            format!("{vip}/32").as_str(),
            format!("{lb_vip}/32").as_str()
        ]),
        "{addresses}"
    );
}

#[test]
fn t20_a_rolling_update_behind_the_proxy_fails_no_request() {
    let s = services();
    s.apply(&web(3, "v1"));
    s.apply(&web_service("web", "NodePort", ""));
    let before = s.wait_web(3, "v1");
    let node_port = s.node_port("web");
    let addr = SocketAddr::from((s.node_ip(1), node_port));
    let host0 = &s.cluster.network.hosts[0];
    let served = eventually(Duration::from_secs(30), || {
        http_get(host0, addr).is_ok_and(|p| before.contains(&p))
    });
    assert!(served, "NodePort {addr} never answered");

    // One request after another, each on a new connection, from host 0 until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        let netns = format!("/run/netns/{}", host0.netns);
        std::thread::spawn(move || {
            enter(&netns);
            let (mut ok, mut failed) = (0usize, Vec::new());
            let mut pages = BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                match get(addr) {
                    Ok(page) => {
                        ok += 1;
                        pages.insert(page);
                    }
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed, pages)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    s.apply(&web(3, "v2"));
    let after = s.wait_web(3, "v2");
    // Let the old pods finish terminating under the load too.
    let gone = eventually(Duration::from_secs(60), || {
        let run = s
            .cluster
            .berth_on(0, &["get", "pods", "-l", "app=web", "-o", "name"]);
        run.stdout().lines().count() == 3
    });
    assert!(gone, "old pods are still there");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, pages) = stream.join().expect("request stream");
    eprintln!(
        "rolling update of 3 pods behind the NodePort: {} ms, {ok} requests answered, {} failed",
        started.elapsed().as_millis(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 0);
    assert!(
        after.iter().any(|p| pages.contains(p)),
        "the new pods never answered: {pages:?} (new: {after:?})"
    );
}

#[test]
fn t30_tls_terminated_with_a_certificate_from_a_secret() {
    let s = services();
    let made = rcgen::generate_simple_self_signed(vec!["web.example".to_string()]).unwrap();
    let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    s.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-tls\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert),
        indent(&key)
    ));
    s.apply(&web(2, "v1"));
    s.apply(
        &web_service(
            "web",
            "NodePort",
            "  annotations:\n    service.berth.dev/tls-secret: web-tls\n",
        )
        .replace("{name: http, port: 80,", "{name: https, port: 443,"),
    );
    let backends = s.wait_web(2, "v1");
    let node_port = s.node_port("web");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    for i in 1..=2 {
        let addr = SocketAddr::from((s.node_ip(i), node_port));
        let config = config.clone();
        let mut last = Err(String::new());
        let answered = eventually(Duration::from_secs(30), || {
            let config = config.clone();
            last = on_host(&s.cluster.network.hosts[0], move || https_get(config, addr));
            last.as_ref().is_ok_and(|p| backends.contains(p))
        });
        assert!(answered, "https://{addr}/ (TLS from the Secret): {last:?}");
    }
    // Plain HTTP on the TLS port is no HTTP response.
    let addr = SocketAddr::from((s.node_ip(1), node_port));
    assert!(http_get(&s.cluster.network.hosts[0], addr).is_err());
}

/// `GET /` over TLS, verifying the server's certificate for web.example.
fn https_get(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<String, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("web.example").unwrap();
    let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET / HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A server that closes without close_notify: the response is complete all the same.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    body_of(&response)
}
