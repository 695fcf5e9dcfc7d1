//! ConfigMaps and Secrets reach containers: env (valueFrom, envFrom, the downward API) and
//! configMap, secret (a tmpfs) and emptyDir volumes, on a control-plane member (host 1) and a
//! node agent (host 2), each in its own network namespace. A container naming a ConfigMap that
//! does not exist waits as CreateContainerConfigError until it is applied; nothing stays
//! mounted once a pod is gone.

use berth_e2e::eventually;
use berth_e2e::node::OneNodeCluster;
use berth_e2e::Run;
use serde_json::Value;
use std::time::Duration;

/// Waits for the pod's containers all to be running (t30's `wait_running` waits for Ready).
fn wait_running(node: &OneNodeCluster, name: &str) -> Value {
    node.wait_for(name, "every container running", |p| {
        p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|s| s.iter().all(|c| c["state"]["running"].is_object()))
    })
}

/// `berth exec [-c CONTAINER] POD -- COMMAND`.
fn exec_run(node: &OneNodeCluster, pod: &str, container: Option<&str>, command: &[&str]) -> Run {
    let flags = container.map(|c| vec!["-c", c]).unwrap_or_default();
    node.exec_with(&flags, pod, command)
}

/// [`exec_run`]'s stdout (the command must succeed).
fn exec(node: &OneNodeCluster, pod: &str, container: Option<&str>, command: &[&str]) -> String {
    exec_run(node, pod, container, command).ok().stdout()
}

fn waiting(pod: &Value, container: usize) -> (String, String) {
    let state = &pod["status"]["containerStatuses"][container]["state"]["waiting"];
    (
        state["reason"].as_str().unwrap_or_default().to_string(),
        state["message"].as_str().unwrap_or_default().to_string(),
    )
}

const CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  mode: fast
  app.conf: |
    level=3
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
data:
  token: dG9rZW4=
stringData:
  password: s3cret
"#;

/// Two containers: `main` reads everything, `writer` shares an emptyDir with it.
const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: configured
  labels: {app: web}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap:
      name: app-config
      items:
      - {key: app.conf, path: conf/app.conf, mode: 384}
  - name: sec
    secret: {secretName: creds, defaultMode: 256}
  - name: shared
    emptyDir: {}
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo $(MODE)-expanded $PW; exec sleep 3620"]
    resources:
      limits: {memory: 64Mi}
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: app-config, key: mode}}
    - name: PW
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: URL
      value: "$(MODE)://$(PW)"
    - name: ABSENT
      valueFrom: {configMapKeyRef: {name: nope, key: x, optional: true}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: APP_LABEL
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: MEMORY_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CFG_mode
      value: overridden
    envFrom:
    - configMapRef: {name: app-config}
      prefix: CFG_
    - secretRef: {name: creds}
    volumeMounts:
    - {name: cfg, mountPath: /etc/app}
    - {name: cfg, mountPath: /etc/app.conf, subPath: conf/app.conf}
    - {name: sec, mountPath: /etc/creds}
    - {name: shared, mountPath: /shared}
    - {name: mem, mountPath: /mem}
  - name: writer
    image: busybox
    command: ["sh", "-c", "echo from-writer > /data/note; exec sleep 3621"]
    volumeMounts:
    - {name: shared, mountPath: /data}
    - {name: shared, mountPath: /sub, subPath: nested/dir}
    - {name: shared, mountPath: /ro, readOnly: true}
"#;

#[test]
fn t10_config_maps_and_secrets_reach_env_and_volumes() {
    let node = OneNodeCluster::start();
    node.apply(CONFIG);
    node.apply(POD);
    let pod = wait_running(&node, "configured");
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string();

    // Env: valueFrom, envFrom with its prefix (an explicit env entry wins), the downward
    // API, `$(VAR)` expansion; an optional reference to nothing sets nothing. An exec gets
    // the container's env; the main process has it too, but its shell drops names that are
    // no shell variables (CFG_app.conf).
    let main_env = exec(&node, "configured", None, &["cat", "/proc/1/environ"]);
    assert!(
        main_env.split('\0').any(|e| e == "URL=fast://s3cret"),
        "{main_env:?}"
    );
    let environ = exec(&node, "configured", None, &["cat", "/proc/self/environ"]);
    let env: Vec<&str> = environ.split('\0').collect();
    for expected in [
        "MODE=fast".to_string(),
        "PW=s3cret".into(),
        "URL=fast://s3cret".into(),
        "POD_NAME=configured".into(),
        "POD_NAMESPACE=default".into(),
        format!("POD_IP={pod_ip}"),
        "APP_LABEL=web".into(),
        "MEMORY_MI=64".into(),
        "CFG_mode=overridden".into(),
        "CFG_app.conf=level=3\n".into(),
        "password=s3cret".into(),
        "token=token".into(),
    ] {
        assert!(
            env.contains(&expected.as_str()),
            "{expected:?} not in {env:?}"
        );
    }
    assert!(!env.iter().any(|e| e.starts_with("ABSENT=")), "{env:?}");
    let logs = node
        .berth(&["logs", "configured", "-c", "main"])
        .ok()
        .stdout();
    assert_eq!(logs, "fast-expanded s3cret\n");

    // A configMap volume with items (nested path, mode), read-only; a subPath of it.
    let sh = |container: Option<&str>, script: &str| {
        exec(&node, "configured", container, &["sh", "-c", script])
    };
    assert_eq!(sh(None, "cat /etc/app/conf/app.conf"), "level=3\n");
    assert_eq!(sh(None, "ls /etc/app"), "conf\n");
    assert_eq!(sh(None, "stat -L -c %a /etc/app/conf/app.conf"), "600\n");
    assert_eq!(sh(None, "cat /etc/app.conf"), "level=3\n");
    exec_run(&node, "configured", None, &["touch", "/etc/app/new"]).failed();
    // A secret volume: on a tmpfs, files 0400.
    assert_eq!(
        sh(None, "cat /etc/creds/password /etc/creds/token"),
        "s3crettoken"
    );
    assert_eq!(sh(None, "stat -L -c %a /etc/creds/password"), "400\n");
    let mounts = sh(None, "cat /proc/mounts");
    let mount_of = |path: &str| {
        mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(path))
            .unwrap_or_else(|| panic!("{path} not mounted:\n{mounts}"))
            .to_string()
    };
    assert!(mount_of("/etc/creds").contains(" tmpfs ro,"), "{mounts}");
    assert!(mount_of("/etc/app").contains(" ro,"), "{mounts}");
    // emptyDir with medium Memory: a tmpfs of sizeLimit.
    let mem = mount_of("/mem");
    assert!(
        mem.contains(" tmpfs rw,") && mem.contains("size=8192k"),
        "{mem}"
    );
    sh(None, "echo in-memory > /mem/file");
    // On the node, secret data is on a tmpfs too, under the pod's directory.
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let on_node = node.pod_mounts();
    assert!(
        on_node
            .iter()
            .any(|m| m.ends_with(&format!("{uid}/volumes/sec"))),
        "{on_node:?}"
    );
    // An emptyDir shared by the two containers, a subPath of it, a read-only view of it.
    assert_eq!(sh(None, "cat /shared/note"), "from-writer\n");
    sh(Some("writer"), "echo deep > /sub/file");
    assert_eq!(sh(None, "cat /shared/nested/dir/file"), "deep\n");
    exec_run(&node, "configured", Some("writer"), &["touch", "/ro/x"]).failed();

    // A changed ConfigMap reaches the volume (the kubelet's refresh), through a new ..data.
    node.apply(&CONFIG.replace("level=3", "level=4"));
    let refreshed = eventually(Duration::from_secs(40), || {
        exec_run(
            &node,
            "configured",
            None,
            &["cat", "/etc/app/conf/app.conf"],
        )
        .stdout()
            == "level=4\n"
    });
    assert!(refreshed, "the configMap volume was not refreshed");

    // Deleting the pod unmounts and removes its volumes.
    node.berth(&["delete", "pod", "configured"]).ok();
    let clean = eventually(Duration::from_secs(20), || {
        node.pod_mounts().is_empty() && !node.agent.data_dir.join("pods").join(&uid).exists()
    });
    assert!(clean, "left behind: mounts {:?}", node.pod_mounts());
}

#[test]
fn t20_a_missing_config_map_holds_the_container_until_it_is_applied() {
    let node = OneNodeCluster::start();
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: patient
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo greeting=$GREETING; exec sleep 3622"]
    env:
    - name: GREETING
      valueFrom: {configMapKeyRef: {name: late, key: greeting}}
---
apiVersion: v1
kind: Pod
metadata:
  name: mounting
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap: {name: late-volume}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "exec sleep 3623"]
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
"#,
    );
    let pod = node.wait_for("patient", "CreateContainerConfigError", |p| {
        waiting(p, 0).0 == "CreateContainerConfigError"
    });
    assert_eq!(waiting(&pod, 0).1, "configmap \"late\" not found");
    assert_eq!(pod["status"]["phase"], "Pending");
    let pod = node.wait_for("mounting", "a volume that cannot be set up", |p| {
        waiting(p, 0).1.contains("MountVolume.SetUp failed")
    });
    assert_eq!(
        waiting(&pod, 0),
        (
            "ContainerCreating".to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-volume\" not found"
                .to_string()
        )
    );

    // The ConfigMap without the key: the message says which key.
    node.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {other: x}\n");
    node.wait_for("patient", "the missing key named", |p| {
        waiting(p, 0).1 == "couldn't find key greeting in ConfigMap default/late"
    });
    // With the key it starts.
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {greeting: hello}\n",
    );
    wait_running(&node, "patient");
    let logs = eventually(Duration::from_secs(10), || {
        node.berth(&["logs", "patient"]).stdout() == "greeting=hello\n"
    });
    assert!(logs, "{}", node.berth(&["logs", "patient"]).stdout());
    node.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late-volume}\ndata: {a.txt: A}\n",
    );
    wait_running(&node, "mounting");
    assert_eq!(exec(&node, "mounting", None, &["cat", "/cfg/a.txt"]), "A");
}

#[test]
fn t30_a_pod_deleted_while_the_agent_is_down_leaves_no_volume_mounted() {
    let mut node = OneNodeCluster::start();
    node.apply(CONFIG);
    node.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: orphan
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  volumes:
  - name: sec
    secret: {secretName: creds}
  - name: mem
    emptyDir: {medium: Memory}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "exec sleep 3624"]
    volumeMounts:
    - {name: sec, mountPath: /sec}
    - {name: mem, mountPath: /mem}
"#,
    );
    let pod = wait_running(&node, "orphan");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let volume_mounts = |node: &OneNodeCluster| {
        node.pod_mounts()
            .into_iter()
            .filter(|m| m.contains("/volumes/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(volume_mounts(&node).len(), 2, "{:?}", node.pod_mounts());
    // An agent restart finds its volumes as they are and takes them over.
    node.agent.kill();
    node.agent.restart(&node.cluster);
    wait_running(&node, "orphan");
    assert_eq!(
        exec(&node, "orphan", None, &["cat", "/sec/password"]),
        "s3cret"
    );
    assert_eq!(volume_mounts(&node).len(), 2, "{:?}", node.pod_mounts());
    // Deleted while the agent is away: the restarted agent removes it, tmpfs mounts included.
    node.agent.kill();
    node.berth(&["delete", "pod", "orphan"]).ok();
    node.agent.restart(&node.cluster);
    let clean = eventually(Duration::from_secs(20), || {
        node.pod_mounts().is_empty() && !node.agent.data_dir.join("pods").join(&uid).exists()
    });
    assert!(clean, "left behind: mounts {:?}", node.pod_mounts());
}
