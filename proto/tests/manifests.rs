//! Manifests as users write them: what parses, and the exact errors and warnings for what
//! does not.

use berth_proto::manifest::{self, ManifestObject};
use berth_proto::{quantity, Kind, Resource};
use std::time::{Duration, Instant};

fn parse_ok(file: &str, text: &str) -> Vec<ManifestObject> {
    match manifest::parse(file, text) {
        Ok(objects) => objects,
        Err(errors) => panic!("expected {file} to parse, got:\n{errors}"),
    }
}

/// Every error `text` draws, as printed.
fn errors(file: &str, text: &str) -> Vec<String> {
    match manifest::parse(file, text) {
        Ok(objects) => panic!("expected errors, parsed {} objects", objects.len()),
        Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn one_error(file: &str, text: &str) -> String {
    let mut errors = errors(file, text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.remove(0)
}

/// A valid Deployment whose container section is `container` (indented as in the file).
fn deployment_with_container(container: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
{container}"
    )
}

#[test]
fn documentation_style_deployment_and_service_parse_cleanly() {
    let text = include_str!("fixtures/web.yaml");
    let objects = parse_ok("web.yaml", text);
    assert_eq!(objects.len(), 2);
    for object in &objects {
        assert_eq!(object.warnings, Vec::<String>::new());
        assert_eq!(object.file, "web.yaml");
    }
    assert_eq!(
        (objects[0].resource.kind(), objects[0].line),
        (Kind::Deployment, 2)
    );
    assert_eq!(
        (objects[1].resource.kind(), objects[1].line),
        (Kind::Service, 36)
    );

    let Resource::Deployment(deployment) = &objects[0].resource else {
        panic!("not a Deployment");
    };
    assert_eq!(deployment.spec.replicas, Some(3));
    // Namespaces are the server's to default.
    assert_eq!(deployment.metadata.namespace, None);
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    let resources = container.resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    assert_eq!(quantity::cpu_millis(&requests["cpu"]), Ok(100));
    assert_eq!(quantity::bytes(&requests["memory"]), Ok(128 * 1024 * 1024));
    let limits = resources.limits.as_ref().unwrap();
    assert_eq!(quantity::bytes(&limits["memory"]), Ok(1536 * 1024 * 1024));

    let Resource::Service(service) = &objects[1].resource else {
        panic!("not a Service");
    };
    let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
}

#[test]
fn flow_style_json_documents_parse() {
    let text = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "fast"}}
---
{
	"apiVersion": "v1",
	"kind": "Namespace",
	"metadata": {"name": "team-a"}
}
"#;
    let objects = parse_ok("objects.json", text);
    assert_eq!(objects.len(), 2);
    let Resource::ConfigMap(config_map) = &objects[0].resource else {
        panic!("not a ConfigMap");
    };
    assert_eq!(config_map.data.as_ref().unwrap()["mode"], "fast");
    assert_eq!(
        (objects[1].resource.kind(), objects[1].line),
        (Kind::Namespace, 3)
    );
}

#[test]
fn empty_and_comment_only_documents_are_skipped() {
    let text = "---\n# nothing here\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n";
    let objects = parse_ok("ns.yaml", text);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].line, 5);
    assert!(parse_ok("empty.yaml", "").is_empty());
    assert!(parse_ok("comments.yaml", "# only a comment\n").is_empty());
}

#[test]
fn lists_are_expanded_into_their_items() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: a
- apiVersion: v1
  kind: Namespace
  metadata:
    name: B
";
    assert_eq!(
        one_error("list.yaml", text),
        "list.yaml:11:11: items[1].metadata.name: \"B\" is not a valid name: must be lowercase alphanumeric characters or '-', start and end with an alphanumeric"
    );
    let objects = parse_ok("list.yaml", &text.replace("name: B", "name: b"));
    assert_eq!(objects.len(), 2);
    assert_eq!((objects[0].line, objects[1].line), (4, 8));
}

#[test]
fn malformed_yaml_reports_its_line() {
    let text =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n data:\n  mode: fast\n";
    let error = one_error("bad.yaml", text);
    assert!(error.starts_with("bad.yaml:5:"), "{error}");
    assert!(error.contains("invalid YAML"), "{error}");
}

#[test]
fn wrong_types_name_the_field_line_and_column() {
    let text =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n";
    assert_eq!(
        one_error("web.yaml", text),
        "web.yaml:6:13: spec.replicas: invalid type: string \"three\", expected i32"
    );
}

#[test]
fn numbers_where_strings_belong_get_a_hint() {
    let text = deployment_with_container(
        "      - name: web\n        image: nginx\n        env:\n        - name: PORT\n          value: 8080\n",
    );
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:19:18: spec.template.spec.containers[0].env[0].value: invalid type: integer `8080`, expected a string (quote the value to make it a string)"
    );
}

#[test]
fn missing_container_image_points_at_the_container() {
    let text = deployment_with_container("      - name: web\n");
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:15:9: spec.template.spec.containers[0].image: is required"
    );
}

#[test]
fn invalid_names_are_rejected() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web_1\nspec:\n  ports:\n  - port: 80\n";
    assert_eq!(
        one_error("svc.yaml", text),
        "svc.yaml:4:9: metadata.name: \"Web_1\" is not a valid name: must be lowercase alphanumeric characters or '-', start and end with an alphanumeric"
    );
}

#[test]
fn port_out_of_range_has_the_exact_message_and_position() {
    let text = deployment_with_container(
        "      - name: web\n        image: nginx\n        ports:\n        - containerPort: 70000\n",
    );
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:18:26: spec.template.spec.containers[0].ports[0].containerPort: 70000 is out of range 1..65535"
    );
}

#[test]
fn selector_must_match_template_labels() {
    let text = deployment_with_container("      - name: web\n        image: nginx\n").replace(
        "      labels:\n        app: web",
        "      labels:\n        app: api",
    );
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:11:7: spec.template.metadata.labels: selector does not match template labels (needs app=web)"
    );
}

#[test]
fn unknown_kinds_list_what_berth_serves() {
    let text = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n";
    assert_eq!(
        one_error("widget.yaml", text),
        "widget.yaml:2:7: kind: berth does not serve kind \"Widget\" (apiVersion \"example.com/v1\"); it serves Pod, Service, ConfigMap, Secret, Namespace, Node, Event (v1); Deployment, ReplicaSet (apps/v1); EndpointSlice (discovery.k8s.io/v1)"
    );
    let text = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: w\n";
    assert_eq!(
        one_error("old.yaml", text),
        "old.yaml:1:13: apiVersion: berth serves Deployment as apiVersion apps/v1, not \"extensions/v1beta1\""
    );
    let text = "metadata:\n  name: w\n";
    assert_eq!(
        errors("bare.yaml", text),
        [
            "bare.yaml:1:1: apiVersion: is required (a string)",
            "bare.yaml:1:1: kind: is required (a string)",
        ]
    );
    assert_eq!(
        one_error("list.yaml", "- a\n- b\n"),
        "list.yaml:1:1: expected an object (a mapping with apiVersion and kind), found a list"
    );
}

#[test]
fn unknown_fields_are_errors() {
    let text = deployment_with_container(
        "      - name: web\n        image: nginx\n        imagePullPolcy: Always\n",
    );
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:17:9: spec.template.spec.containers[0].imagePullPolcy: unknown field (Kubernetes' Container has no such field; did you mean imagePullPolicy?)"
    );
    // Also inside fields berth does not implement, and where no type is on record.
    let text = deployment_with_container(
        "      - name: web\n        image: nginx\n        securityContext:\n          runAsUsr: 1000\n",
    );
    assert_eq!(
        one_error("web.yaml", &text),
        "web.yaml:18:11: spec.template.spec.containers[0].securityContext.runAsUsr: unknown field (Kubernetes has no such field here)"
    );
}

#[test]
fn unimplemented_fields_warn_once_and_still_parse() {
    let text = deployment_with_container(
        "      - name: web\n        image: nginx\n        securityContext:\n          runAsUser: 1000\n          runAsNonRoot: true\n",
    );
    let objects = parse_ok("web.yaml", &text);
    assert_eq!(
        objects[0].warnings,
        ["web.yaml:17:9: warning: spec.template.spec.containers[0].securityContext is not implemented by berth yet and is ignored"]
    );

    let text = "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  affinity:
    nodeAffinity: {}
  containers:
  - name: web
    image: nginx
";
    let objects = parse_ok("pod.yaml", text);
    assert_eq!(
        objects[0].warnings,
        ["pod.yaml:6:3: warning: spec.affinity is not implemented by berth yet and is ignored"]
    );
}

#[test]
fn server_set_fields_and_nulls_draw_nothing() {
    let text = "apiVersion: v1
kind: ConfigMap
metadata:
  name: c
  uid: 6f1c
  resourceVersion: \"12\"
  creationTimestamp: null
  annotations: {}
data:
  a: b
";
    let objects = parse_ok("c.yaml", text);
    assert_eq!(objects[0].warnings, Vec::<String>::new());
}

#[test]
fn every_error_of_every_document_is_reported() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad\n---\napiVersion: v1\nkind: Widget\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: good\n";
    let errors = errors("many.yaml", text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("many.yaml:4:9: metadata.name:"));
    assert!(errors[1].starts_with("many.yaml:7:7: kind:"));
}

#[test]
fn duplicate_keys_are_errors() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n";
    assert_eq!(
        one_error("dup.yaml", text),
        "dup.yaml:5:3: metadata.name: duplicate key (first at line 4)"
    );
}

fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

#[test]
fn binary_garbage_fails_fast_and_briefly() {
    let bytes = pseudo_random_bytes(5 * 1024 * 1024);
    let text = String::from_utf8_lossy(&bytes);
    let started = Instant::now();
    let garbage = errors("garbage.yaml", &text);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(garbage.len(), 1);
    assert!(
        garbage[0].contains("is this a binary file?"),
        "{}",
        garbage[0]
    );
    assert!(garbage[0].len() < 200);

    // Printable garbage reaches the YAML parser, and must still end in a short error.
    let printable: String = bytes
        .iter()
        .map(|b| char::from(b' ' + b % 95))
        .collect::<String>();
    let started = Instant::now();
    let noise = errors("noise.yaml", &printable);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(noise.iter().all(|e| e.len() < 1000), "{noise:?}");
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "berth-proto-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

#[test]
fn directories_load_yaml_yml_and_json_files_in_order() {
    let dir = TempDir::new("load");
    dir.write("b.yml", namespace("b").as_bytes());
    dir.write("a.yaml", namespace("a").as_bytes());
    dir.write(
        "c.json",
        br#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
    );
    dir.write("README.md", b"# not a manifest: {{{");
    dir.write("notes.txt", b"garbage: [");
    std::fs::create_dir(dir.0.join("nested.yaml")).unwrap();
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    dir.write("sub/d.yaml", namespace("d").as_bytes());

    let objects = manifest::load(&[dir.0.to_string_lossy().into_owned()]).unwrap();
    let names: Vec<_> = objects
        .iter()
        .map(|o| o.resource.metadata().name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(objects[0].file.ends_with("a.yaml"));
}

#[test]
fn load_reports_unreadable_and_binary_files() {
    let dir = TempDir::new("bad");
    let binary = dir.write("image.yaml", &pseudo_random_bytes(5 * 1024 * 1024));
    let missing = dir.0.join("missing.yaml").to_string_lossy().into_owned();
    let good = dir.write("ok.yaml", namespace("ok").as_bytes());
    let errors = manifest::load(&[good, binary.clone(), missing.clone()]).unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
    assert_eq!(errors.0[0].file, binary);
    assert!(errors.0[0].message.contains("binary file"), "{errors}");
    assert!(errors.0[1]
        .to_string()
        .starts_with(&format!("{missing}: cannot read:")));

    let empty = TempDir::new("empty");
    empty.write("notes.txt", b"hello");
    let errors = manifest::load(&[empty.0.to_string_lossy().into_owned()]).unwrap_err();
    assert!(
        errors.to_string().contains("directory has no manifests"),
        "{errors}"
    );
}

#[test]
fn endpoint_slices_parse_and_their_addresses_are_checked() {
    let text = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-1
  targetRef: {kind: Pod, name: web-1, namespace: default}
";
    let objects = parse_ok("slice.yaml", text);
    assert_eq!(objects[0].resource.kind(), Kind::EndpointSlice);
    assert_eq!(objects[0].warnings, Vec::<String>::new());

    let bad = text.replace("10.244.1.5", "10.244.1.500");
    assert_eq!(
        one_error("slice.yaml", &bad),
        "slice.yaml:13:15: endpoints[0].addresses[0]: \"10.244.1.500\" is not a valid IPv4 address"
    );
}
