//! `berth get events [-w]` and the `Events:` section of `berth describe`, against a server with
//! no nodes: a Deployment's scaling and pod creations are recorded, and its pod's failure to
//! schedule.

use berth_e2e::{isolate_network, Server, TestEnv};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: berth/demo:latest
"#;

/// Runs `berth ARGS` until its output satisfies `done`, for up to 20 s.
fn wait_for_output(env: &TestEnv, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = env.run(berth(), args).ok().stdout();
        if done(&output) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "`berth {}` never printed what was expected:\n{output}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn get_events_and_describe_show_what_happened() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);

    // A watch started before anything happens prints each event as a row.
    let mut watcher = env
        .command(berth())
        .args(["get", "events", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, watched) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    env.run_with_stdin(berth(), &["apply", "-f", "-"], Some(DEPLOYMENT.as_bytes()))
        .ok();
    let table = wait_for_output(&env, &["get", "events"], |out| {
        ["ScalingReplicaSet", "SuccessfulCreate", "FailedScheduling"]
            .iter()
            .all(|reason| out.contains(reason))
    });
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{table}"
    );
    let scaling = table
        .lines()
        .find(|l| l.contains("ScalingReplicaSet"))
        .unwrap();
    assert!(scaling.contains("Normal"), "{scaling}");
    assert!(scaling.contains("deployment/web"), "{scaling}");
    assert!(
        scaling.contains("Scaled up replica set web-") && scaling.ends_with(" to 1"),
        "{scaling}"
    );
    let failed = table
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .unwrap();
    assert!(
        failed.contains("Warning") && failed.contains("pod/web-"),
        "{failed}"
    );
    let pod = failed
        .split_whitespace()
        .find_map(|word| word.strip_prefix("pod/"))
        .unwrap()
        .to_string();

    // Across namespaces, a NAMESPACE column comes first.
    let all = env.run(berth(), &["get", "ev", "-A"]).ok().stdout();
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines().skip(1).all(|l| l.starts_with("default ")),
        "{all}"
    );

    // describe ends with the object's own events.
    let described = env
        .run(berth(), &["describe", "deploy", "web"])
        .ok()
        .stdout();
    let events = described
        .split("\nEvents:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{described}"));
    let rows: Vec<Vec<&str>> = events
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["Type", "Reason", "Age", "From", "Message"]);
    assert!(
        rows[2..]
            .iter()
            .all(|r| r[1] == "ScalingReplicaSet" && r.contains(&"deployment-controller")),
        "only the Deployment's events: {events}"
    );
    let described = env.run(berth(), &["describe", "pod", &pod]).ok().stdout();
    assert!(described.contains("FailedScheduling"), "{described}");
    assert!(described.contains("default-scheduler"), "{described}");
    assert!(!described.contains("ScalingReplicaSet"), "{described}");

    // An object nothing happened to.
    env.run_with_stdin(
        berth(),
        &["apply", "-f", "-"],
        Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: quiet}\ndata: {a: b}\n"),
    )
    .ok();
    let described = env.run(berth(), &["describe", "cm", "quiet"]).ok().stdout();
    assert!(described.ends_with("\nEvents:  <none>\n"), "{described}");

    // The watch printed the events as rows as they came.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("ScalingReplicaSet"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match watched.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the watch printed no ScalingReplicaSet: {seen:#?}"),
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
}
