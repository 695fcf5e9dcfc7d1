// Temporary scratch test (H2), removed before handing in.
use berth_e2e::cluster::{berth_binary, Cluster};
use berth_e2e::node::Agent;
use berth_e2e::{eventually, isolate_network, pod_ready};
use serde_json::Value;
use std::time::Duration;

#[test]
fn scratch() {
    isolate_network();
    let cluster = Cluster::with_hosts(3, 1, &[]);
    berth_e2e::images::push_busybox(&cluster, 0, "busybox");
    let _agents: Vec<Agent> = (1..=2).map(|i| Agent::start(&cluster, i, &format!("node-{i}"))).collect();
    for (name, node) in [("server-1", "node-1"), ("server-2", "node-2"), ("client-1", "node-1"), ("client-2", "node-2")] {
        let cmd = if name.starts_with("server") {
            "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"
        } else { "exec sleep 3600" };
        cluster.apply_on(0, &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: x}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: busybox\n    command: [\"sh\", \"-c\", \"{cmd}\"]\n")).ok();
    }
    let ips: Vec<String> = ["server-1", "server-2", "client-1", "client-2"].iter().map(|n| {
        let mut ip = String::new();
        assert!(eventually(Duration::from_secs(60), || {
            let run = cluster.berth_on(0, &["get", "pod", n, "-o", "json"]);
            let v: Value = serde_json::from_str(&run.stdout()).unwrap_or(Value::Null);
            ip = v["status"]["podIP"].as_str().unwrap_or("").to_string();
            pod_ready(&v) && !ip.is_empty()
        }));
        ip
    }).collect();
    eprintln!("pod ips {ips:?}");
    cluster.apply_on(0, "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  type: NodePort\n  ports:\n  - {name: http, port: 80}\n").ok();
    cluster.apply_on(0, &format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual-1\n  labels: {{kubernetes.io/service-name: manual}}\naddressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n- addresses: [\"{}\"]\n- addresses: [\"{}\"]\n", ips[0], ips[1])).ok();
    let svc: Value = serde_json::from_str(&cluster.berth_on(0, &["get", "svc", "manual", "-o", "json"]).ok().stdout()).unwrap();
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    eprintln!("vip {vip} svc {svc}");
    std::thread::sleep(Duration::from_secs(1));
    let exec = |pod: &str, cmd: &[&str]| {
        let out = cluster.network.hosts[0].command(&berth_binary()).args(["--server", &cluster.addr(0), "exec", pod, "--"]).args(cmd).output().unwrap();
        format!("{} {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    eprintln!("echo: {}", exec("client-1", &["echo", "hi"]));
    let t = format!("http://{}:8080/", ips[0]);
    eprintln!("noT: {}", exec("client-1", &["wget", "-qO-", &t]));
    eprintln!("T: {}", exec("client-1", &["wget", "-qO-", "-T", "3", &t]));
    eprintln!("nc: {}", exec("client-1", &["sh", "-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {} 8080", ips[0])]));

    eprintln!("wget help: {}", exec("client-1", &["wget", "--help"]));
    let out = cluster.network.hosts[0].command(&berth_binary()).args(["--server", &cluster.addr(0), "get", "pods"]).output().unwrap();
    eprintln!("get pods: {:?} {}", out.status, String::from_utf8_lossy(&out.stdout));
    for c in ["client-1", "client-2"] {
        for target in [format!("http://{}:8080/", ips[0]), format!("http://{}:8080/", ips[1]), format!("http://{vip}/")] {
            for _ in 0..3 {
                eprintln!("{c} -> {target}: {}", exec(c, &["wget", "-qO-", &target]));
            }
        }
    }
    for h in 1..=2 {
        let ns = &cluster.network.hosts[h].netns;
        for args in [vec!["addr"], vec!["route"], vec!["route", "show", "table", "local"]] {
            let out = std::process::Command::new("ip").args(["-n", ns]).args(&args).output().unwrap();
            eprintln!("host {h} ip {args:?}:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        let out = std::process::Command::new("ip").args(["netns", "exec", ns, "wget", "-qO-", "http://127.0.0.1:10249/metrics"]).output().unwrap();
        eprintln!("metrics host {h}:\n{}", String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#') && !l.contains("bucket")).collect::<Vec<_>>().join("\n"));
    }
}
