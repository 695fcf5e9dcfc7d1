//! Bad input: every kind of mistake gets a precise error naming file, line, column and
//! field, the command exits non-zero, and nothing is stored.

use berth_e2e::{isolate_network, Server, TestEnv};
use std::path::Path;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

const GOOD_CONFIG: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\ndata:\n  a: b\n---\n";

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: berth/demo:latest
          ports:
            - name: http
              containerPort: 8080
"#;

/// Applies `text` (after a valid ConfigMap, to show that nothing of a bad file is stored)
/// and returns stderr.
fn refused(env: &TestEnv, name: &str, text: &str) -> String {
    let path = env.root.path().join(name);
    std::fs::write(&path, format!("{GOOD_CONFIG}{text}")).unwrap();
    let run = env
        .run(berth(), &["apply", "-f", path.to_str().unwrap()])
        .failed();
    assert!(
        run.stdout().is_empty(),
        "nothing may be applied, yet: {}",
        run.stdout()
    );
    run.stderr()
}

fn assert_mentions(stderr: &str, parts: &[&str]) {
    for part in parts {
        assert!(stderr.contains(part), "expected {part:?} in:\n{stderr}");
    }
}

#[test]
fn bad_manifests_are_refused_precisely_and_store_nothing() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    // GOOD_CONFIG is 7 lines; the bad document starts on line 8.

    let port = refused(
        &env,
        "port.yaml",
        &DEPLOYMENT.replace("containerPort: 8080", "containerPort: 70000"),
    );
    assert_mentions(&port, &["port.yaml:27:", "spec.template.spec.containers[0].ports[0].containerPort: 70000 is out of range 1..65535"]);

    let wrong_type = refused(
        &env,
        "type.yaml",
        &DEPLOYMENT.replace("replicas: 2", "replicas: three"),
    );
    assert_mentions(&wrong_type, &["type.yaml:13:", "spec.replicas", "three"]);

    let malformed = refused(
        &env,
        "malformed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: indentation\n",
    );
    assert_mentions(&malformed, &["malformed.yaml:12:"]);

    let missing_image = refused(
        &env,
        "image.yaml",
        &DEPLOYMENT.replace("          image: berth/demo:latest\n", ""),
    );
    assert_mentions(
        &missing_image,
        &[
            "image.yaml:",
            "spec.template.spec.containers[0].image",
            "required",
        ],
    );

    let bad_name = refused(
        &env,
        "name.yaml",
        &DEPLOYMENT.replace("name: web\nspec", "name: Web_1\nspec"),
    );
    assert_mentions(&bad_name, &["name.yaml:11:", "metadata.name", "Web_1"]);

    let selector = refused(
        &env,
        "selector.yaml",
        &DEPLOYMENT.replace("        app: web\n    spec", "        app: other\n    spec"),
    );
    assert_mentions(
        &selector,
        &["selector.yaml:", "selector does not match template labels"],
    );

    let unknown_kind = refused(
        &env,
        "kind.yaml",
        "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n",
    );
    assert_mentions(&unknown_kind, &["kind.yaml:9:", "Widget"]);

    let unknown_field = refused(
        &env,
        "field.yaml",
        &DEPLOYMENT.replace(
            "          image:",
            "          imagePullPolcy: Always\n          image:",
        ),
    );
    assert_mentions(
        &unknown_field,
        &[
            "field.yaml:",
            "spec.template.spec.containers[0].imagePullPolcy",
        ],
    );

    // 5 MB of pseudo-random bytes: a clean, short error, quickly.
    let mut garbage = Vec::with_capacity(5 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while garbage.len() < 5 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.extend_from_slice(&x.to_le_bytes());
    }
    let path = env.root.path().join("garbage.yaml");
    std::fs::write(&path, &garbage).unwrap();
    let run = env
        .run(berth(), &["apply", "-f", path.to_str().unwrap()])
        .failed();
    assert!(run.stderr().contains("garbage.yaml"), "{}", run.stderr());
    assert!(
        run.stderr().len() < 4096,
        "the error should be short, was {} bytes",
        run.stderr().len()
    );

    let stored = env
        .run(
            berth(),
            &["get", "deploy,svc,cm,secret,po", "-A", "-o", "name"],
        )
        .ok()
        .stdout();
    assert!(stored.is_empty(), "nothing may be stored, found:\n{stored}");
}

#[test]
fn documentation_style_manifests_apply_unchanged() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    let doc = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
          name: http-web-svc
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-service
spec:
  selector:
    app: nginx
  ports:
  - name: name-of-service-port
    protocol: TCP
    port: 80
    targetPort: http-web-svc
"#;
    let run = env
        .run_with_stdin(berth(), &["apply", "-f", "-"], Some(doc.as_bytes()))
        .ok();
    assert_eq!(
        run.stdout(),
        "deployment.apps/nginx-deployment created\nservice/nginx-service created\n"
    );
    assert!(
        run.stderr().is_empty(),
        "no warnings expected: {}",
        run.stderr()
    );
    let svc = env
        .run(berth(), &["get", "svc", "nginx-service", "-o", "yaml"])
        .ok()
        .stdout();
    assert!(svc.contains("targetPort: http-web-svc"), "{svc}");
}

#[test]
fn unimplemented_fields_warn_once_and_still_apply() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    let doc = DEPLOYMENT.replace(
        "    spec:\n      containers:",
        "    spec:\n      hostNetwork: true\n      containers:",
    );
    let run = env
        .run_with_stdin(berth(), &["apply", "-f", "-"], Some(doc.as_bytes()))
        .ok();
    assert!(run.stdout().contains("deployment.apps/web created"));
    let stderr = run.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr());
    assert!(
        warnings[0].contains("spec.template.spec.hostNetwork"),
        "{}",
        warnings[0]
    );
}

#[test]
fn apply_takes_directories_and_flow_style_documents() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init"]);
    let dir = env.root.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), GOOD_CONFIG).unwrap();
    std::fs::write(
        dir.join("b.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flow"}, "data": {"k": "v"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let run = env
        .run(berth(), &["apply", "-f", dir.to_str().unwrap()])
        .ok();
    assert_eq!(
        run.stdout(),
        "configmap/fine created\nconfigmap/flow created\n"
    );
    let dry = env
        .run(
            berth(),
            &["apply", "-f", dir.to_str().unwrap(), "--dry-run"],
        )
        .ok();
    assert_eq!(
        dry.stdout(),
        "configmap/fine unchanged (dry run)\nconfigmap/flow unchanged (dry run)\n"
    );
}
