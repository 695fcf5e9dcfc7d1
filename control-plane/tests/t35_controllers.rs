//! The leader's Deployment and ReplicaSet controllers against a real one-member Raft cluster
//! in this process (in a network namespace of the test's own), with the scheduler binding
//! their pods and the test acting as the nodes' agents: scale, roll out, delete.

mod common;

use berth_proto::pb;
use common::{apply, delete, list, object_ref, register_node, update_status, wait_for_list, Api};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn deployment(replicas: i32, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web"},
           "spec": {"replicas": replicas,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "main", "image": image}]}}}})
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn image_of(pod: &Value) -> &str {
    pod.pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Reports every bound pod that is not Ready yet as running and Ready, as its agent would.
async fn run_bound_pods(api: &mut Api) {
    let now = jiff::Timestamp::now().to_string();
    for pod in list(api, "Pod", "default").await {
        if pod.pointer("/spec/nodeName").is_none() || is_ready(&pod) {
            continue;
        }
        let status = json!({
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": "main", "ready": true, "started": true,
                                   "restartCount": 0, "image": image_of(&pod), "imageID": ""}],
        });
        // A pod deleted meanwhile (scale down) is fine: the next round skips it.
        update_status(
            api,
            pb::StatusUpdate {
                object: object_ref("Pod", "default", pod["metadata"]["name"].as_str().unwrap()),
                status: serde_json::to_vec(&status).unwrap(),
                resource_version: 0,
                uid: pod["metadata"]["uid"].as_str().unwrap().into(),
            },
        )
        .await;
    }
}

struct Cluster {
    pods: Vec<Value>,
    replica_sets: Vec<Value>,
}

impl Cluster {
    fn ready_pods_with(&self, image: &str) -> usize {
        self.pods
            .iter()
            .filter(|p| is_ready(p) && image_of(p) == image)
            .count()
    }

    fn replicas_of_sets(&self) -> Vec<(String, i64)> {
        let mut sets: Vec<(String, i64)> = self
            .replica_sets
            .iter()
            .map(|rs| {
                (
                    rs.pointer("/spec/template/spec/containers/0/image")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    rs.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1),
                )
            })
            .collect();
        sets.sort();
        sets
    }
}

/// Acts as the agents (pods bound become Ready) until `done` holds, for up to 20 s.
async fn wait_for(api: &mut Api, what: &str, done: impl Fn(&Cluster) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        run_bound_pods(api).await;
        let cluster = Cluster {
            pods: list(api, "Pod", "default").await,
            replica_sets: list(api, "ReplicaSet", "default").await,
        };
        if done(&cluster) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: replica sets {:?}, pods {:#?}",
            cluster.replicas_of_sets(),
            cluster.pods
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn t10_a_deployment_scales_rolls_out_and_is_collected() {
    let (member, mut api, _dir) = common::start(|_| {}).await;
    register_node(&mut api, "node-1", "4", "8Gi").await;
    register_node(&mut api, "node-2", "4", "8Gi").await;

    apply(&mut api, &deployment(3, "web:1")).await;
    wait_for(&mut api, "3 ready pods of one ReplicaSet", |c| {
        c.replica_sets.len() == 1 && c.pods.len() == 3 && c.ready_pods_with("web:1") == 3
    })
    .await;
    let pods = list(&mut api, "Pod", "default").await;
    let rs = &list(&mut api, "ReplicaSet", "default").await[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    assert!(rs_name.starts_with("web-"), "{rs_name}");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("{rs_name}-")), "{name}");
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["uid"],
            rs["metadata"]["uid"]
        );
        assert!(pod.pointer("/spec/nodeName").is_some(), "bound: {pod:#}");
    }

    apply(&mut api, &deployment(5, "web:1")).await;
    wait_for(&mut api, "scaled to 5", |c| {
        c.pods.len() == 5 && c.ready_pods_with("web:1") == 5
    })
    .await;
    apply(&mut api, &deployment(2, "web:1")).await;
    wait_for(&mut api, "scaled to 2", |c| {
        c.pods.len() == 2 && c.ready_pods_with("web:1") == 2
    })
    .await;

    apply(&mut api, &deployment(2, "web:2")).await;
    wait_for(&mut api, "rolled out to web:2", |c| {
        c.replicas_of_sets() == [("web:1".to_string(), 0), ("web:2".to_string(), 2)]
            && c.pods.len() == 2
            && c.ready_pods_with("web:2") == 2
    })
    .await;
    // The Deployment's status says so too.
    wait_for_list(&mut api, "Deployment", "default", "its status", |d| {
        d[0]["status"]["updatedReplicas"] == 2 && d[0]["status"]["availableReplicas"] == 2
    })
    .await;

    delete(&mut api, "Deployment", "default", "web").await;
    wait_for(&mut api, "ReplicaSets and pods collected", |c| {
        c.replica_sets.is_empty() && c.pods.is_empty()
    })
    .await;
    member.shutdown().await;
}
