//! `berth get deploy -w` prints changes as another client applies, changes and deletes.

use berth_e2e::{isolate_network, Server, TestEnv};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: watched
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: watched}
  template:
    metadata:
      labels: {app: watched}
    spec:
      containers:
        - name: app
          image: berth/demo:latest
"#;

/// A watching client whose output lines arrive on a channel; killed when dropped.
struct Watcher {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(env: &TestEnv, args: &[&str]) -> Watcher {
        let mut child = env
            .command(berth())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the watch printed nothing within 10 s")
    }

    /// The next event of a `-o json` watch: its pretty-printed JSON spans several lines.
    fn next_json(&self) -> serde_json::Value {
        let mut text = String::new();
        loop {
            let line = self.next_line();
            let done = line == "}";
            text.push_str(&line);
            text.push('\n');
            if done {
                return serde_json::from_str(&text).expect("watch event JSON");
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn apply(env: &TestEnv, replicas: u32) {
    let yaml = DEPLOYMENT.replace("REPLICAS", &replicas.to_string());
    env.run_with_stdin(berth(), &["apply", "-f", "-"], Some(yaml.as_bytes()))
        .ok();
}

#[test]
fn watch_prints_added_modified_deleted() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);

    let json = Watcher::start(&env, &["get", "deploy", "-w", "-o", "json"]);
    let table = Watcher::start(&env, &["get", "deploy", "-w"]);
    // Both have listed (nothing yet) and are watching once the first change reaches them.
    std::thread::sleep(Duration::from_millis(500));

    apply(&env, 1);
    apply(&env, 2);
    env.run(berth(), &["delete", "deploy", "watched"]).ok();

    // The Deployment controller writes too (its revision annotation, its status): those are
    // MODIFIED events between the client's own.
    let mut events: Vec<serde_json::Value> = Vec::new();
    while events.last().is_none_or(|e| e["type"] != "DELETED") {
        events.push(json.next_json());
    }
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["spec"]["replicas"], 1);
    assert!(
        events[1..events.len() - 1]
            .iter()
            .all(|e| e["type"] == "MODIFIED"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "MODIFIED" && e["object"]["spec"]["replicas"] == 2),
        "the scale to 2 was seen"
    );
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions increase: {revisions:?}"
    );

    for _ in 0..events.len() {
        let row = table.next_line();
        assert!(row.starts_with("watched "), "table watch printed {row:?}");
    }
}

#[test]
fn watch_lists_first_then_follows() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    for replicas in 1..=6 {
        apply(&env, replicas);
    }
    // The watch lists first (replicas 6), then follows: the next change arrives.
    let watcher = Watcher::start(&env, &["get", "deploy", "-w", "-o", "json"]);
    let first = watcher.next_json();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(
        first["object"]["spec"]["replicas"], 6,
        "the list comes first"
    );
    apply(&env, 7);
    // Controller writes (status) may come first; each is a MODIFIED of the same object.
    loop {
        let next = watcher.next_json();
        assert_eq!(next["type"], "MODIFIED");
        if next["object"]["spec"]["replicas"] == 7 {
            break;
        }
    }
}
