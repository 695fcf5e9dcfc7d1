//! A control-plane member on host 1 and a node agent on host 2 (each its own network
//! namespace); busybox pods bound to the node by hand (spec.nodeName), or by the scheduler;
//! the demo Deployment's replicas made by the controllers.

use berth_e2e::eventually;
use berth_e2e::images::archives;
use berth_e2e::node::{cgroups_with, pids_with_cmdline, OneNodeCluster};
use berth_e2e::pod_ready as ready;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `berth image demo`: berth itself as the image `demo`, pushed to the registry.
fn push_demo(node: &OneNodeCluster) {
    let store = node.cluster.env.root.path().join("demo-store");
    node.berth(&["image", "demo", "--store", store.to_str().unwrap()])
        .ok();
}

fn restart_count(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

fn pod_yaml(name: &str, command: &str, extra_container: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 2
{extra_spec}  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", {command:?}]
{extra_container}"#
    )
}

#[test]
fn t10_a_pod_runs_isolated() {
    let node = OneNodeCluster::start();
    node.apply(&pod_yaml("iso", "echo started; exec sleep 3601", "", ""));
    let pod = node.wait_running("iso");
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string();
    assert!(pod_ip.starts_with("10.244."), "{pod_ip}");

    // pid 1 is the pod's own process; no host process is visible.
    let comm = node.exec("iso", &["cat", "/proc/1/comm"]).ok().stdout();
    assert_eq!(comm.trim(), "sleep");
    let procs = node
        .exec("iso", &["sh", "-c", "ls /proc | grep -c '^[0-9]'"])
        .ok()
        .stdout();
    // pid 1, and this exec's sh, ls and grep.
    assert!(procs.trim().parse::<i32>().unwrap() <= 4, "{procs}");
    assert_eq!(node.exec("iso", &["hostname"]).ok().stdout().trim(), "iso");
    // Only lo and eth0, with the pod's address.
    let links = node.exec("iso", &["ls", "/sys/class/net"]).ok().stdout();
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort();
    assert_eq!(links, ["eth0", "lo"]);
    let addrs = node
        .exec("iso", &["ip", "addr", "show", "eth0"])
        .ok()
        .stdout();
    assert!(addrs.contains(&pod_ip), "{addrs}");
    // No CAP_NET_ADMIN; unshare is refused by seccomp.
    node.exec("iso", &["ip", "link", "add", "d0", "type", "dummy"])
        .failed();
    node.exec("iso", &["unshare", "-U", "true"]).failed();
    // -t gives the command a terminal.
    let tty = node.exec_with(&["-t"], "iso", &["tty"]).ok().stdout();
    assert!(tty.contains("/dev/pts/"), "{tty:?}");
    // -i passes stdin through.
    let mut cat = node
        .exec_command(&["-i"], "iso", &["cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let output = cat.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through stdin\n");
    // The exit code of an exec comes back.
    let run = node.exec("iso", &["sh", "-c", "exit 7"]);
    assert_eq!(run.0.status.code(), Some(7));

    // Writes land in the container's upper directory; the image is untouched.
    node.exec("iso", &["sh", "-c", "echo hi > /written && rm /bin/true"])
        .ok();
    let layers = walk(&node.agent.data_dir.join("images/layers"));
    assert!(!layers.iter().any(|p| p.ends_with("written")));
    assert!(layers.iter().any(|p| p.ends_with("bin/true")));
    let upper_has_it = walk(&node.agent.data_dir)
        .iter()
        .any(|p| p.ends_with("written") && p.to_string_lossy().contains("upper"));
    assert!(upper_has_it, "no upper dir holds /written");

    // Logs.
    let logs = node.berth(&["logs", "iso"]).ok().stdout();
    assert_eq!(logs, "started\n");
}

#[test]
fn t15_a_pod_without_a_node_is_scheduled_and_runs() {
    let node = OneNodeCluster::start();
    let yaml = pod_yaml("placed", "exec sleep 3601", "", "").replace("  nodeName: node-1\n", "");
    assert!(!yaml.contains("nodeName"));
    node.apply(&yaml);
    let pod = node.wait_running("placed");
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
    assert!(scheduled, "{pod:#}");
    // Its events: the scheduler's, then the agent's.
    let described = || node.berth(&["describe", "pod", "placed"]).ok().stdout();
    let reasons = ["Scheduled", "Pulling", "Pulled", "Created", "Started"];
    let recorded = eventually(Duration::from_secs(10), || {
        let text = described();
        reasons.iter().all(|reason| text.contains(reason))
    });
    assert!(recorded, "{}", described());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                // Do not descend into mounted root filesystems.
                if !path.ends_with("rootfs") {
                    stack.push(path.clone());
                }
            }
            found.push(path);
        }
    }
    found
}

#[test]
fn t20_memory_limit_oom_kills_and_says_so() {
    let node = OneNodeCluster::start();
    let limits = "    resources:\n      limits:\n        memory: 16Mi\n";
    node.apply(&pod_yaml(
        "hog",
        "head -c 200m /dev/zero | tail",
        limits,
        "  restartPolicy: Never\n",
    ));
    let pod = node.wait_for("hog", "OOMKilled", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    });
    assert_eq!(pod["status"]["phase"], "Failed");
}

#[test]
fn t30_pods_reach_each_other_and_logs_follow() {
    let node = OneNodeCluster::start();
    // Ready only once its HTTP endpoint answers; alive while its port accepts connections.
    let probes = r#"    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /index.html, port: http}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
"#;
    node.apply(&pod_yaml(
        "server",
        "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 8080 -h /www",
        probes,
        "",
    ));
    node.apply(&pod_yaml(
        "talker",
        "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done",
        "",
        "",
    ));
    let server = node.wait_running("server");
    node.wait_running("talker");
    let ip = server["status"]["podIP"].as_str().unwrap();
    let page = node
        .exec("talker", &["wget", "-qO-", &format!("http://{ip}:8080/")])
        .ok()
        .stdout();
    assert_eq!(page.trim(), "hello-from-server");

    // --tail, then -f streams lines written after it started.
    assert!(eventually(Duration::from_secs(5), || {
        node.berth(&["logs", "talker", "--tail", "2"])
            .stdout()
            .lines()
            .count()
            == 2
    }));
    let mut follow = node.cluster.network.hosts[0]
        .command(&berth_e2e::cluster::berth_binary())
        .args([
            "logs",
            "talker",
            "-f",
            "--tail",
            "1",
            "--server",
            &node.cluster.addr(0),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: u32 = number(&lines.next().unwrap().unwrap());
    let later: u32 = number(&lines.nth(3).unwrap().unwrap());
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(later > first, "{first} then {later}");
}

fn number(line: &str) -> u32 {
    line.trim_start_matches("line-").trim().parse().unwrap()
}

#[test]
fn t40_liveness_restarts_and_readiness_flips() {
    let node = OneNodeCluster::start();
    let probes = r#"    livenessProbe:
      exec:
        command: ["cat", "/tmp/alive"]
      periodSeconds: 1
      failureThreshold: 1
    readinessProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
"#;
    node.apply(&pod_yaml(
        "probed",
        "echo booted; touch /tmp/alive /tmp/ready; exec sleep 3602",
        probes,
        "",
    ));
    node.wait_running("probed");
    node.exec("probed", &["rm", "/tmp/ready"]).ok();
    node.wait_for("probed", "not ready", |p| !ready(p));
    node.exec("probed", &["touch", "/tmp/ready"]).ok();
    node.wait_for("probed", "ready again", ready);
    // Liveness fails: the container is restarted (a fresh upper dir: /tmp/alive is back).
    node.exec("probed", &["rm", "/tmp/alive"]).ok();
    let pod = node.wait_for("probed", "a restart", |p| restart_count(p) >= 1);
    assert!(pod["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object());
    node.wait_running("probed");
    // The previous instance's log is still there.
    let previous = node.berth(&["logs", "probed", "--previous"]).ok().stdout();
    assert_eq!(previous, "booted\n");
}

#[test]
fn t50_agent_sigkill_and_restart_keeps_containers() {
    let mut node = OneNodeCluster::start();
    node.apply(&pod_yaml("keeper", "exec sleep 3603", "", ""));
    node.wait_running("keeper");
    let before = pids_with_cmdline("sleep 3603");
    assert_eq!(before.len(), 1, "{before:?}");
    node.agent.kill();
    node.agent.restart(&node.cluster);
    // Still running, same process, still reported Running; and exec still works.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pids_with_cmdline("sleep 3603"), before);
    let pod = node.wait_running("keeper");
    assert_eq!(restart_count(&pod), 0);
    node.exec("keeper", &["true"]).ok();
}

#[test]
fn t60_deleting_a_pod_leaves_nothing_behind() {
    let node = OneNodeCluster::start();
    node.apply(&pod_yaml(
        "gone",
        "trap 'exit 0' TERM; sleep 3604 & wait",
        "",
        "",
    ));
    let pod = node.wait_running("gone");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    // The node's own mount (the directory pod netns files live in) stays; a pod's go.
    assert!(!node.pod_mounts().is_empty());
    node.berth(&["delete", "pod", "gone"]).ok();
    let clean = eventually(Duration::from_secs(20), || {
        pids_with_cmdline("sleep 3604").is_empty()
            && node.pod_mounts().is_empty()
            && cgroups_with(&uid).is_empty()
    });
    assert!(
        clean,
        "left behind: processes {:?}, mounts {:?}, cgroups {:?}",
        pids_with_cmdline("sleep 3604"),
        node.pod_mounts(),
        cgroups_with(&uid)
    );
    // No veth on the node but the bridge's own links, and the address is free again.
    let links = std::process::Command::new("ip")
        .args(["-n", &node.cluster.network.hosts[1].netns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).to_string();
    assert!(!links.contains("veth"), "{links}");
    node.apply(&pod_yaml("next", "exec sleep 3605", "", ""));
    let next = node.wait_running("next");
    assert_eq!(next["status"]["podIP"].as_str(), Some(ip.as_str()));
}

#[test]
fn t70_a_pod_deleted_while_the_agent_is_down_is_cleaned_up_on_restart() {
    let mut node = OneNodeCluster::start();
    node.apply(&pod_yaml("orphan", "exec sleep 3606", "", ""));
    node.apply(&pod_yaml("stays", "exec sleep 3607", "", ""));
    node.wait_running("orphan");
    node.wait_running("stays");
    let staying = pids_with_cmdline("sleep 3607");
    node.agent.kill();
    node.berth(&["delete", "pod", "orphan"]).ok();
    assert_eq!(
        pids_with_cmdline("sleep 3606").len(),
        1,
        "still running while the agent is down"
    );
    node.agent.restart(&node.cluster);
    assert!(
        eventually(Duration::from_secs(20), || pids_with_cmdline("sleep 3606")
            .is_empty()),
        "the orphaned container was not removed"
    );
    assert_eq!(pids_with_cmdline("sleep 3607"), staying);
    node.wait_running("stays");
}

#[test]
fn t80_termination_runs_pre_stop_then_sigterm() {
    let node = OneNodeCluster::start();
    let pre_stop = r#"    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo prestop-ran > /proc/1/fd/1"]
"#;
    node.apply(&pod_yaml(
        "polite",
        "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.1; done",
        pre_stop,
        "",
    ));
    node.wait_running("polite");
    let mut follow = node.cluster.network.hosts[0]
        .command(&berth_e2e::cluster::berth_binary())
        .args(["logs", "polite", "-f", "--server", &node.cluster.addr(0)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "up");
    node.berth(&["delete", "pod", "polite"]).ok();
    // The stream ends when the container stops: the hook ran first, then SIGTERM.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = follow.wait();
    assert_eq!(rest, ["prestop-ran", "got-term"]);
}

#[test]
fn t90_the_demo_app_runs_from_berth_itself() {
    let node = OneNodeCluster::start();
    // berth as an image: its binary and the shared libraries it names.
    push_demo(&node);
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: demo
spec:
  nodeName: node-1
  containers:
  - name: web
    image: demo
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
"#,
    );
    node.apply(&pod_yaml("client", "exec sleep 3608", "", ""));
    let demo = node.wait_running("demo");
    node.wait_running("client");
    let ip = demo["status"]["podIP"].as_str().unwrap().to_string();
    let get = || {
        node.exec("client", &["wget", "-qO-", &format!("http://{ip}:8080/")])
            .ok()
            .stdout()
    };
    let first = get();
    assert!(
        first.starts_with(&format!("pod demo ip {ip} requests ")),
        "{first}"
    );
    let n: u64 = first.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let second = get();
    assert_eq!(
        second.trim(),
        format!("pod demo ip {ip} requests {}", n + 1)
    );
}

#[test]
fn t91_the_demo_deployment_runs_its_replicas_and_takes_them_away() {
    let node = OneNodeCluster::start();
    push_demo(&node);
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/demo.yaml");
    node.berth(&["apply", "-f", manifest]).ok();
    let demo_pods = || -> Vec<Value> {
        let run = node.berth(&["get", "pods", "-l", "app=demo", "-o", "json"]);
        run.success()
            .then(|| serde_json::from_str::<Value>(&run.stdout()).ok())
            .flatten()
            .and_then(|list| list["items"].as_array().cloned())
            .unwrap_or_default()
    };
    let all_ready = eventually(Duration::from_secs(60), || {
        let pods = demo_pods();
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["status"]["phase"] == "Running" && ready(p))
    });
    assert!(all_ready, "3 demo pods never ran Ready: {:#?}", demo_pods());
    for pod in demo_pods() {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("demo-"), "{name}");
        assert_eq!(pod["spec"]["nodeName"], "node-1");
    }

    node.berth(&["delete", "deployment", "demo"]).ok();
    let gone = eventually(Duration::from_secs(30), || demo_pods().is_empty());
    assert!(
        gone,
        "demo pods outlived their deployment: {:#?}",
        demo_pods()
    );
    let replica_sets = node.berth(&["get", "rs", "-o", "name"]).ok().stdout();
    assert_eq!(replica_sets.trim(), "", "ReplicaSets left behind");
}

#[test]
fn t95_an_abandoned_exec_session_ends_its_processes() {
    let node = OneNodeCluster::start();
    node.apply(&pod_yaml("host", "exec sleep 3610", "", ""));
    node.wait_running("host");
    let mut session = node
        .exec_command(&["-i"], "host", &["sleep", "3611"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The session's process, not the client (whose command line names it too).
    let sleeping = || {
        pids_with_cmdline("sleep 3611")
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"sleep\0"))
            })
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || sleeping() == 1));
    // The client dies without closing anything cleanly.
    let _ = session.kill();
    let _ = session.wait();
    assert!(
        eventually(Duration::from_secs(10), || sleeping() == 0),
        "the exec'd process outlived its session"
    );
    assert_eq!(
        pids_with_cmdline("sleep 3610").len(),
        1,
        "the container itself lives on"
    );
}

#[test]
fn t97_a_new_image_replaces_the_container() {
    let node = OneNodeCluster::start();
    // A second image: the same one under another name.
    node.berth(&["image", "tag", "busybox", "busybox2"]).ok();
    node.apply(&pod_yaml("upd", "exec sleep 3612", "", ""));
    node.wait_running("upd");
    node.apply(
        &pod_yaml("upd", "exec sleep 3612", "", "").replace("image: busybox", "image: busybox2"),
    );
    let pod = node.wait_for("upd", "the new image running", |p| {
        p["status"]["containerStatuses"][0]["image"] == "busybox2"
            && restart_count(p) == 1
            && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    // Replaced, not crashed: the old instance ended by SIGKILL and no back-off followed.
    assert_eq!(
        pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
    assert_eq!(pids_with_cmdline("sleep 3612").len(), 1);
}

#[test]
fn t98_images_loaded_from_archives_or_pushed_by_skopeo_run_and_pull_errors_say_why() {
    let node = OneNodeCluster::start();
    let rootfs = node.cluster.env.root.path().join("rootfs/busybox-rootfs");
    let layer = archives::tar_of_dir(&rootfs);
    let dir = node.cluster.env.root.path();
    let saved = dir.join("saved.tar");
    std::fs::write(
        &saved,
        archives::docker_save("saved:v1", std::slice::from_ref(&layer), &["/bin/sh"]),
    )
    .unwrap();
    let layout = dir.join("layout.tar");
    let platforms = [(berth_image::images::host_arch(), vec![layer])];
    std::fs::write(
        &layout,
        archives::oci_layout("team/layout:v2", &platforms, &["/bin/sh"]),
    )
    .unwrap();
    // skopeo pushes an OCI layout directory (the same image, unpacked from a layout tar).
    let layout_dir = dir.join("layout-dir");
    std::fs::create_dir_all(&layout_dir).unwrap();
    tar::Archive::new(&std::fs::read(&layout).unwrap()[..])
        .unpack(&layout_dir)
        .unwrap();
    let source = format!("oci:{}:team/layout:v2", layout_dir.display());
    let target = format!("docker://{}/skopeo/pushed:v3", node.cluster.addr(0));
    let pushed = node.cluster.network.hosts[0]
        .command(Path::new("skopeo"))
        .args(["copy", "--dest-tls-verify=false", &source, &target])
        .output()
        .expect("run skopeo (apt-get install skopeo; .ci/run does)");
    assert!(pushed.status.success(), "skopeo: {pushed:?}");
    let store = dir.join("load-store");
    for archive in [&saved, &layout] {
        node.berth(&[
            "image",
            "load",
            "--store",
            store.to_str().unwrap(),
            "-i",
            archive.to_str().unwrap(),
        ])
        .ok();
    }
    // A pod whose image nobody pushed: ErrImagePull, then ImagePullBackOff, both saying why.
    node.apply(
        &pod_yaml("missing", "exec sleep 3613", "", "")
            .replace("image: busybox", "image: nowhere:v1"),
    );
    let waiting = |p: &Value| p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
    let pod = node.wait_for("missing", "ImagePullBackOff", |p| {
        waiting(p)["reason"] == "ImagePullBackOff"
    });
    let message = waiting(&pod)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("nowhere") && message.contains("MANIFEST_UNKNOWN"),
        "{message}"
    );
    // Never pulls: an absent image stays absent.
    node.apply(
        &pod_yaml(
            "never",
            "exec sleep 3614",
            "    imagePullPolicy: Never\n",
            "",
        )
        .replace("image: busybox", "image: saved:v1"),
    );
    node.wait_for("never", "ErrImageNeverPull", |p| {
        waiting(p)["reason"] == "ErrImageNeverPull"
    });
    // The loaded images run, and their statuses name what was pulled.
    for (name, image) in [
        ("from-save", "saved:v1"),
        ("from-layout", "team/layout:v2"),
        ("from-skopeo", "skopeo/pushed:v3"),
    ] {
        node.apply(
            &pod_yaml(name, "echo ran from $0; exec sleep 3615", "", "")
                .replace("image: busybox", &format!("image: {image}")),
        );
        let pod = node.wait_running(name);
        let image_id = pod["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(image_id.contains("@sha256:"), "{image_id}");
        let out = node.exec(name, &["cat", "/etc/passwd"]).ok().stdout();
        assert!(out.starts_with("root:"), "{out}");
    }
}

/// Sum of the sizes of the regular files under `dir` (links not followed).
fn disk_usage(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn t99_twenty_containers_of_one_image_store_its_layer_once() {
    let node = OneNodeCluster::start();
    let names: Vec<String> = (0..20).map(|i| format!("many-{i}")).collect();
    for name in &names {
        node.apply(&pod_yaml(name, "exec sleep 3616", "", ""));
    }
    for name in &names {
        node.wait_running(name);
    }
    let images = node.agent.data_dir.join("images");
    let layers: Vec<_> = std::fs::read_dir(images.join("layers/sha256"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(layers.len(), 1, "one unpacked layer for 20 containers");
    let layer = disk_usage(&layers[0].path());
    let stored = disk_usage(&images);
    let uppers: u64 = walk(&node.agent.data_dir.join("containers"))
        .iter()
        .filter(|p| p.ends_with("upper"))
        .map(|p| disk_usage(p))
        .sum();
    eprintln!(
        "20 containers: unpacked layer {layer} B, image store {stored} B, upper dirs {uppers} B"
    );
    // The busybox binary alone is about 2 MB: 20 copies would be 40 MB.
    assert!(layer > 1_000_000, "{layer}");
    assert!(
        stored < 2 * layer,
        "image store {stored} B for a {layer} B layer"
    );
    assert!(uppers < 100_000, "upper dirs hold {uppers} B");
}

#[test]
fn t96_an_image_built_from_a_dockerfile_runs() {
    let node = OneNodeCluster::start();
    let context = node.cluster.env.root.path().join("build-context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("hello.txt"), "hello from a Dockerfile\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY hello.txt /app/\nWORKDIR /app\nENV WHO=berth\n\
         RUN echo \"built by $WHO\" >> hello.txt\n\
         CMD [\"sh\", \"-c\", \"cat hello.txt; exec sleep 3617\"]\n",
    )
    .unwrap();
    let store = node.cluster.env.root.path().join("build-store");
    // RUN makes containers: like the agent, the build must see the machine's cgroup mounts,
    // which `ip netns exec` would hide.
    let built = node.cluster.network.hosts[0]
        .command_sharing_mounts(&berth_e2e::cluster::berth_binary())
        .args(["image", "build", "--store", store.to_str().unwrap()])
        .args(["-t", "built:v1", context.to_str().unwrap()])
        .args(["--server", &node.cluster.addr(0)])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: built
spec:
  nodeName: node-1
  containers:
  - name: main
    image: built:v1
"#,
    );
    node.wait_running("built");
    assert!(eventually(Duration::from_secs(10), || {
        node.berth(&["logs", "built"]).stdout() == "hello from a Dockerfile\nbuilt by berth\n"
    }));
    let pwd = node.exec("built", &["pwd"]).ok().stdout();
    assert_eq!(pwd.trim(), "/app");
}
