//! The spine end to end: bootstrap, apply the example manifests, SIGKILL the server, restart
//! it on the same data dir, and find every object and the revision as they were.

use berth_e2e::{isolate_network, Server, TestEnv};
use std::path::Path;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

fn manifests() -> String {
    format!("{}/../manifests", env!("CARGO_MANIFEST_DIR"))
}

/// The store revision a list was read at (kubectl's List metadata.resourceVersion).
fn list_revision(env: &TestEnv) -> u64 {
    let out = env
        .run(berth(), &["get", "deploy,svc,cm,secret", "-o", "json"])
        .ok()
        .stdout();
    let list: serde_json::Value = serde_json::from_str(&out).expect("json list");
    list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list revision")
        .parse()
        .expect("number")
}

#[test]
fn objects_and_revision_survive_sigkill() {
    isolate_network();
    let env = TestEnv::new();
    let mut server = Server::start(berth(), &env, &["--init", "--listen", "127.0.0.1:7443"]);
    assert_eq!(server.addr, "127.0.0.1:7443");

    let applied = env
        .run(berth(), &["apply", "-f", &manifests()])
        .ok()
        .stdout();
    for line in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/web-config created",
        "secret/web-token created",
    ] {
        assert!(applied.contains(line), "missing {line:?} in:\n{applied}");
    }
    let table = env.run(berth(), &["get", "deploy,svc"]).ok().stdout();
    assert!(table.contains("deployment.apps/web"), "{table}");
    assert!(table.contains("service/web"), "{table}");
    // The controllers and the scheduler act on what was applied: let them settle (no new
    // revision for a second) before taking the picture.
    let mut revision = list_revision(&env);
    let settling = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = list_revision(&env);
        if now == revision || settling.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
        revision = now;
    }
    let before = env
        .run(berth(), &["get", "deploy,svc,cm,secret", "-o", "yaml"])
        .ok()
        .stdout();
    let revision = list_revision(&env);
    assert!(
        revision >= 5,
        "namespace + 4 objects written, revision {revision}"
    );

    server.kill();
    let _server = Server::start(berth(), &env, &[]);
    let after = env
        .run(berth(), &["get", "deploy,svc,cm,secret", "-o", "yaml"])
        .ok()
        .stdout();
    assert_eq!(
        before, after,
        "objects changed across a SIGKILL and restart"
    );
    assert_eq!(
        list_revision(&env),
        revision,
        "revision changed across restart"
    );

    // Unchanged manifests stay unchanged; the revision continues where it was.
    let again = env
        .run(berth(), &["apply", "-f", &manifests()])
        .ok()
        .stdout();
    assert_eq!(again.matches("unchanged").count(), 6, "{again}");
    let scaled = std::fs::read_to_string(format!("{}/web.yaml", manifests()))
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    let out = env
        .run_with_stdin(berth(), &["apply", "-f", "-"], Some(scaled.as_bytes()))
        .ok()
        .stdout();
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let web: serde_json::Value = serde_json::from_str(
        &env.run(berth(), &["get", "deploy", "web", "-o", "json"])
            .ok()
            .stdout(),
    )
    .unwrap();
    assert_eq!(web["spec"]["replicas"], 5);
    assert_eq!(web["metadata"]["generation"], 2);
    // The controllers write too (the Deployment's ReplicaSet and status), so the exact
    // revision is theirs to move; the scale-up is a newer one than before the restart.
    let version: u64 = web["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(version > revision, "{version} after {revision}");
}

#[test]
fn restart_without_sigkill_also_keeps_everything() {
    isolate_network();
    let env = TestEnv::new();
    let mut server = Server::start(berth(), &env, &["--init"]);
    env.run(berth(), &["apply", "-f", &manifests()]).ok();
    // The objects, not the list's revision: the controllers keep writing pods meanwhile.
    let items = || -> serde_json::Value {
        let out = env
            .run(berth(), &["get", "cm,secret", "-o", "json"])
            .ok()
            .stdout();
        serde_json::from_str::<serde_json::Value>(&out).expect("json list")["items"].clone()
    };
    let before = items();
    assert!(
        server.stop().success(),
        "server should exit cleanly on SIGTERM"
    );
    let _server = Server::start(berth(), &env, &[]);
    assert_eq!(items(), before);
}

#[test]
fn unreachable_server_is_one_clear_line() {
    isolate_network();
    let env = TestEnv::new();
    let run = env
        .run(berth(), &["get", "pods", "--server", "127.0.0.1:1"])
        .failed();
    let stderr = run.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the berth server at 127.0.0.1:1"),
        "{stderr}"
    );
    let no_config = env.run(berth(), &["get", "pods"]).failed().stderr();
    assert!(no_config.contains("berth server --init"), "{no_config}");
}

#[test]
fn init_refuses_an_existing_member() {
    isolate_network();
    let env = TestEnv::new();
    let mut server = Server::start(berth(), &env, &["--init"]);
    server.kill();
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    let run = env
        .run(berth(), &["server", "--data-dir", &data_dir, "--init"])
        .failed();
    assert!(
        run.stderr().contains("already holds a member"),
        "{}",
        run.stderr()
    );
}
