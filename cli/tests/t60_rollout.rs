//! `berth scale` and `berth rollout ...` against a one-member server with its controllers.
//! No agent runs, so pods are made but never Ready: what is tested here is what the
//! controllers and the commands do with the Deployment and its ReplicaSets, and how status
//! waits, times out, fails on the progress deadline and ends when a rollout is complete (a
//! Deployment scaled to 0 is complete without any Ready pod).

use berth_e2e::{eventually, isolate_network, Run, Server, TestEnv};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  annotations:
    kubernetes.io/change-cause: first release
spec:
  replicas: 2
  progressDeadlineSeconds: DEADLINE
  selector:
    matchLabels: {app: NAME}
  template:
    metadata:
      labels: {app: NAME}
    spec:
      containers:
        - name: app
          image: berth/demo:latest
"#;

fn apply(env: &TestEnv, name: &str, deadline_seconds: u32) {
    let yaml = DEPLOYMENT
        .replace("NAME", name)
        .replace("DEADLINE", &deadline_seconds.to_string());
    env.run_with_stdin(berth(), &["apply", "-f", "-"], Some(yaml.as_bytes()))
        .ok();
}

fn run(env: &TestEnv, args: &[&str]) -> Run {
    env.run(berth(), args)
}

fn get_json(env: &TestEnv, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&run(env, &all).ok().stdout()).expect("get -o json")
}

fn replica_sets(env: &TestEnv) -> Vec<Value> {
    get_json(env, &["rs"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn revision(object: &Value) -> &str {
    object["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or("")
}

fn replica_set_of_revision(env: &TestEnv, wanted: &str) -> Option<Value> {
    replica_sets(env)
        .into_iter()
        .find(|rs| revision(rs) == wanted)
}

fn within_a_minute(what: &str, check: impl FnMut() -> bool) {
    assert!(
        eventually(Duration::from_secs(60), check),
        "{what} did not happen within a minute"
    );
}

fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "expected {part:?} in:\n{text}");
}

#[test]
fn scale_restart_history_and_undo() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    apply(&env, "web", 600);
    within_a_minute("the first ReplicaSet", || {
        replica_set_of_revision(&env, "1").is_some()
    });
    let first = replica_set_of_revision(&env, "1").unwrap();
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();

    // Scaling changes the ReplicaSet's size, not the revision.
    let scaled = run(&env, &["scale", "deploy", "web", "--replicas", "3"]).ok();
    assert_eq!(scaled.stdout(), "deployment.apps/web scaled\n");
    within_a_minute("the ReplicaSet scaled to 3", || {
        let sets = replica_sets(&env);
        sets.len() == 1 && sets[0]["spec"]["replicas"] == 3
    });
    let precondition = run(
        &env,
        &[
            "scale",
            "deploy/web",
            "--current-replicas",
            "1",
            "--replicas",
            "4",
        ],
    )
    .failed();
    assert_contains(&precondition.stderr(), "Expected replicas to be 1, was 3");
    assert_eq!(get_json(&env, &["deploy", "web"])["spec"]["replicas"], 3);

    // A restart is a new template: a new ReplicaSet, revision 2, which takes the replicas.
    let restarted = run(&env, &["rollout", "restart", "deploy/web"]).ok();
    assert_eq!(restarted.stdout(), "deployment.apps/web restarted\n");
    within_a_minute("revision 2", || {
        replica_set_of_revision(&env, "2").is_some()
    });
    let second = replica_set_of_revision(&env, "2").unwrap();
    assert_ne!(second["metadata"]["name"], first_name.as_str());
    assert!(second["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .is_string());
    assert_eq!(
        second["metadata"]["annotations"]["kubernetes.io/change-cause"], "first release",
        "the change-cause is copied to the ReplicaSet"
    );

    let history = run(&env, &["rollout", "history", "deploy/web"]).ok();
    assert_eq!(
        history.stdout(),
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         first release\n2         first release\n\n"
    );
    let one = run(
        &env,
        &["rollout", "history", "deploy", "web", "--revision", "2"],
    )
    .ok();
    let one = one.stdout();
    assert!(
        one.starts_with("deployment.apps/web with revision #2\nPod Template:\n"),
        "{one}"
    );
    assert_contains(&one, "kubectl.kubernetes.io/restartedAt");
    assert_contains(&one, "Image:");
    let unknown = run(
        &env,
        &["rollout", "history", "deploy/web", "--revision", "9"],
    )
    .failed();
    assert_contains(&unknown.stderr(), "unable to find the specified revision");
    let unknown = run(
        &env,
        &["rollout", "undo", "deploy/web", "--to-revision", "9"],
    )
    .failed();
    assert_contains(
        &unknown.stderr(),
        "unable to find specified revision 9 in history",
    );

    // Undo to 1: the Deployment gets the v1 template back, and the v1 ReplicaSet comes back
    // under revision 3 (no third ReplicaSet).
    let undone = run(
        &env,
        &["rollout", "undo", "deploy/web", "--to-revision", "1"],
    )
    .ok();
    assert_eq!(undone.stdout(), "deployment.apps/web rolled back\n");
    let deployment = get_json(&env, &["deploy", "web"]);
    assert_eq!(
        deployment["spec"]["template"],
        without_hash(&first["spec"]["template"]),
        "the v1 template, without its pod-template-hash"
    );
    within_a_minute("revision 3", || {
        revision(&get_json(&env, &["deploy", "web"])) == "3"
    });
    within_a_minute("a ReplicaSet of revision 3", || {
        replica_set_of_revision(&env, "3").is_some()
    });
    let third = replica_set_of_revision(&env, "3").unwrap();
    assert_eq!(third["metadata"]["name"], first_name.as_str());
    assert_eq!(replica_sets(&env).len(), 2);
    let history = run(&env, &["rollout", "history", "deploy/web"]).ok();
    assert_contains(
        &history.stdout(),
        "2         first release\n3         first release\n",
    );

    let again = run(
        &env,
        &["rollout", "undo", "deploy/web", "--to-revision", "3"],
    )
    .ok();
    assert_eq!(
        again.stdout(),
        "deployment.apps/web skipped rollback (current template already matches revision 3)\n"
    );
    // Without --to-revision: the one before the latest, the restarted template.
    run(&env, &["rollout", "undo", "deploy/web"]).ok();
    within_a_minute("revision 4", || {
        revision(&get_json(&env, &["deploy", "web"])) == "4"
    });
    within_a_minute("a ReplicaSet of revision 4", || {
        replica_set_of_revision(&env, "4").is_some()
    });
    let fourth = replica_set_of_revision(&env, "4").unwrap();
    assert_eq!(fourth["metadata"]["name"], second["metadata"]["name"]);
}

fn without_hash(template: &Value) -> Value {
    let mut template = template.clone();
    let labels = template["metadata"]["labels"].as_object_mut().unwrap();
    assert!(labels.remove("pod-template-hash").is_some());
    template
}

#[test]
fn pause_resume_and_refusals() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    apply(&env, "web", 600);

    let paused = run(&env, &["rollout", "pause", "deploy/web"]).ok();
    assert_eq!(paused.stdout(), "deployment.apps/web paused\n");
    assert_eq!(get_json(&env, &["deploy", "web"])["spec"]["paused"], true);
    let again = run(&env, &["rollout", "pause", "deploy/web"]).failed();
    assert_contains(
        &again.stderr(),
        "error: deployments.apps \"web\" is already paused",
    );
    let restart = run(&env, &["rollout", "restart", "deploy/web"]).failed();
    assert_contains(&restart.stderr(), "can't restart paused deployment");
    let undo = run(&env, &["rollout", "undo", "deploy/web"]).failed();
    assert_contains(&undo.stderr(), "you cannot rollback a paused deployment");
    // Scaling a paused Deployment still works.
    run(&env, &["scale", "deploy", "web", "--replicas", "1"]).ok();

    let resumed = run(&env, &["rollout", "resume", "deploy/web"]).ok();
    assert_eq!(resumed.stdout(), "deployment.apps/web resumed\n");
    assert_eq!(get_json(&env, &["deploy", "web"])["spec"]["paused"], false);
    let again = run(&env, &["rollout", "resume", "deploy/web"]).failed();
    assert_contains(&again.stderr(), "deployments.apps \"web\" is not paused");

    // Only one revision: nothing to go back to.
    let undo = run(&env, &["rollout", "undo", "deploy/web"]).failed();
    assert_contains(
        &undo.stderr(),
        "no rollout history found for deployment \"web\"",
    );

    // Names that do not exist, kinds that have no rollouts, arguments that name nothing.
    for args in [
        &["rollout", "status", "deploy/nope"][..],
        &["rollout", "history", "deploy/nope"],
        &["rollout", "undo", "deploy/nope"],
        &["rollout", "pause", "deploy", "nope"],
        &["scale", "deploy", "nope", "--replicas", "1"],
    ] {
        let failed = run(&env, args).failed();
        assert_contains(&failed.stderr(), "NotFound");
    }
    let kind = run(&env, &["rollout", "status", "rs/web"]).failed();
    assert_contains(&kind.stderr(), "deployments only");
    let pods = run(&env, &["scale", "pods", "x", "--replicas", "1"]).failed();
    assert_contains(&pods.stderr(), "pods cannot be scaled");
    let no_name = run(&env, &["rollout", "status", "deploy"]).failed();
    assert_contains(&no_name.stderr(), "no name");
    let negative = run(&env, &["scale", "deploy/web", "--replicas", "-1"]).failed();
    assert_contains(&negative.stderr(), "greater than or equal to 0");
}

#[test]
fn status_waits_times_out_fails_on_the_deadline_and_ends_when_complete() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    apply(&env, "web", 600);

    // No pod ever gets Ready here: the timeout ends the wait, with kubectl's message.
    let waited = run(
        &env,
        &["rollout", "status", "deploy/web", "--timeout", "2s"],
    )
    .failed();
    assert_contains(
        &waited.stdout(),
        "Waiting for deployment \"web\" rollout to finish: ",
    );
    assert_contains(&waited.stderr(), "timed out waiting for the condition");
    let once = run(&env, &["rollout", "status", "deploy/web", "--watch=false"]).ok();
    assert_eq!(once.stdout().lines().count(), 1, "{}", once.stdout());
    assert_contains(&once.stdout(), "Waiting for");
    let wrong = run(
        &env,
        &["rollout", "status", "deploy/web", "--revision", "5"],
    )
    .failed();
    assert_contains(
        &wrong.stderr(),
        "desired revision (5) is different from the running revision (1)",
    );

    // A follower ends, successfully, once the rollout is complete: scaled to 0, nothing needs
    // to be Ready. Its first line says it is waiting; only then is the Deployment scaled.
    let mut follower = env
        .command(berth())
        .args(["rollout", "status", "deploy/web", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("Waiting for deployment \"web\" rollout to finish: "),
        "{first}"
    );
    run(&env, &["scale", "deploy/web", "--replicas", "0"]).ok();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(follower.wait().unwrap().success(), "{first}{rest}");
    assert!(
        rest.ends_with("deployment \"web\" successfully rolled out\n"),
        "{first}{rest}"
    );
    // Complete already: one line, at once.
    let complete = run(&env, &["rollout", "status", "deploy/web"]).ok();
    assert_eq!(
        complete.stdout(),
        "deployment \"web\" successfully rolled out\n"
    );

    // A rollout that stops making progress fails once its deadline passes.
    apply(&env, "stuck", 1);
    let stuck = run(
        &env,
        &["rollout", "status", "deploy/stuck", "--timeout", "60s"],
    )
    .failed();
    assert_contains(
        &stuck.stderr(),
        "error: deployment \"stuck\" exceeded its progress deadline",
    );
}
