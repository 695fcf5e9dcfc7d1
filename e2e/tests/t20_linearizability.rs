//! Linearizability under faults: concurrent clients read, write and compare-and-set a few
//! keys (ConfigMaps) through different members while the test kills the leader, pauses a
//! member and partitions one; every operation's invocation and completion is recorded and the
//! history checked. Operations whose effect is in doubt (timeouts, lost connections) are
//! recorded as such, not dropped.

use berth_e2e::cluster::Cluster;
use berth_e2e::isolate_network;
use berth_e2e::linearizability::{check, History, Op, Outcome, Verdict};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{ApplyRequest, GetRequest, ObjectRef};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

const MEMBERS: usize = 3;
const CLIENTS: usize = 5;
const KEYS: usize = 3;
const HISTORIES: usize = 10;
const OP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    PauseMember,
    PartitionMember,
}

#[test]
fn t10_histories_under_faults_are_linearizable() {
    isolate_network();
    // Three members and a fourth host for the clients.
    let mut cluster = Cluster::with_hosts(MEMBERS + 1, MEMBERS, &[]);
    cluster.network.hosts[MEMBERS].enter();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let faults = [
        Fault::KillLeader,
        Fault::PauseMember,
        Fault::PartitionMember,
    ];
    let mut report = Vec::new();
    for round in 0..HISTORIES {
        let fault = faults[round % faults.len()];
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let addrs: Vec<String> = (0..MEMBERS).map(|m| cluster.addr(m)).collect();
                runtime.spawn(run_client(
                    client,
                    round,
                    addrs,
                    history.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        inject(&mut cluster, fault);
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Release);
        for client in clients {
            runtime.block_on(client).unwrap();
        }
        let events = history.events();
        let unknown = events
            .iter()
            .filter(|e| e.outcome == Outcome::Unknown)
            .count();
        let verdict = check(&events);
        report.push(format!(
            "history {round} ({fault:?}): {} ops, {unknown} indeterminate: {verdict}",
            events.len()
        ));
        assert!(
            matches!(verdict, Verdict::Linearizable),
            "{}",
            report.join("\n")
        );
        assert!(
            events.len() > 20,
            "too few operations to mean anything: {}",
            report.join("\n")
        );
        // The same history with one read answered by a value nobody wrote must be refused:
        // the recorded histories are rich enough for the checker to tell.
        let swaps = events
            .iter()
            .filter(|e| e.outcome == Outcome::Cas(true))
            .count();
        assert!(
            swaps > 0,
            "no compare-and-set succeeded: {}",
            report.join("\n")
        );
        let mut forged = events.clone();
        let read = forged
            .iter_mut()
            .find(|e| matches!(e.outcome, Outcome::Read(Some(_))));
        read.expect("a read that found a value").outcome = Outcome::Read(Some("forged".into()));
        assert!(
            matches!(check(&forged), Verdict::NotLinearizable { .. }),
            "a forged read went unnoticed"
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// Injects a fault and lets the cluster recover from it before returning.
fn inject(cluster: &mut Cluster, fault: Fault) {
    let leader = cluster.leader(0).or_else(|| cluster.leader(1)).unwrap_or(0);
    match fault {
        Fault::KillLeader => {
            cluster.kill(leader);
            std::thread::sleep(Duration::from_millis(800));
            cluster.restart(leader);
        }
        Fault::PauseMember => {
            let pid = cluster.members[leader]
                .as_ref()
                .and_then(|m| m.pid())
                .expect("running");
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
            std::thread::sleep(Duration::from_millis(800));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        }
        Fault::PartitionMember => {
            cluster.network.partition(leader);
            std::thread::sleep(Duration::from_millis(800));
            cluster.network.heal(leader);
        }
    }
}

fn key_name(round: usize, key: usize) -> String {
    format!("h{round}-k{key}")
}

/// Unique values, so that a compare-and-set on resourceVersion is one on the value.
static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);

async fn run_client(
    client: usize,
    round: usize,
    addrs: Vec<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut member = client % addrs.len();
    let mut api: Option<ApiClient<Channel>> = None;
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ ((client as u64 + 1) << 32) ^ round as u64;
    while !stop.load(Ordering::Acquire) {
        if api.is_none() {
            api = berth_proto::transport::connect_lazy(&addrs[member])
                .ok()
                .map(ApiClient::new);
        }
        let Some(client_api) = api.as_mut() else {
            continue;
        };
        // Key and operation drawn independently (a cheap per-client xorshift), so that every
        // key sees reads, writes and compare-and-sets.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = key_name(round, (rng % KEYS as u64) as usize);
        let ok = match (rng >> 8) % 3 {
            0 => write(client_api, &history, client, &key).await,
            1 => read(client_api, &history, client, &key).await.is_some(),
            _ => cas(client_api, &history, client, &key).await,
        };
        if !ok {
            // Try another member; give a failed-over cluster a moment.
            member = (member + 1) % addrs.len();
            api = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn config_map(key: &str, value: &str, resource_version: Option<&str>) -> Vec<u8> {
    let mut object = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": key}, "data": {"value": value},
    });
    if let Some(rv) = resource_version {
        object["metadata"]["resourceVersion"] = rv.into();
    }
    serde_json::to_vec(&object).unwrap()
}

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(OP_TIMEOUT);
    request
}

/// An error that proves the operation did not take effect.
fn definitely_failed(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::NotFound | Code::Aborted
    )
}

async fn write(api: &mut ApiClient<Channel>, history: &History, client: usize, key: &str) -> bool {
    let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed).to_string();
    let id = history.invoke(client, key, Op::Write(value.clone()));
    let request = ApplyRequest {
        object: config_map(key, &value, None),
        dry_run: false,
    };
    match api.apply(with_timeout(request)).await {
        Ok(_) => {
            history.complete(id, Outcome::Ok);
            true
        }
        Err(status) => {
            assert!(
                !definitely_failed(&status),
                "unexpected write error: {status}"
            );
            history.complete(id, Outcome::Unknown);
            false
        }
    }
}

/// Reads a key: its value and resourceVersion, or `Some(None)` when absent.
async fn read(
    api: &mut ApiClient<Channel>,
    history: &History,
    client: usize,
    key: &str,
) -> Option<Option<(String, String)>> {
    let id = history.invoke(client, key, Op::Read);
    let object = ObjectRef {
        kind: "ConfigMap".into(),
        namespace: "default".into(),
        name: key.into(),
    };
    match api
        .get(with_timeout(GetRequest {
            object: Some(object),
            stale_ok: false,
        }))
        .await
    {
        Ok(response) => {
            let object: serde_json::Value =
                serde_json::from_slice(&response.into_inner().object).unwrap();
            let value = object["data"]["value"].as_str().unwrap().to_string();
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
            history.complete(id, Outcome::Read(Some(value.clone())));
            Some(Some((value, rv)))
        }
        Err(status) if status.code() == Code::NotFound => {
            history.complete(id, Outcome::Read(None));
            Some(None)
        }
        Err(_) => {
            history.complete(id, Outcome::Unknown);
            None
        }
    }
}

/// Read, then compare-and-set on the version read (as Kubernetes clients update objects).
async fn cas(api: &mut ApiClient<Channel>, history: &History, client: usize, key: &str) -> bool {
    let Some(current) = read(api, history, client, key).await else {
        return false;
    };
    let Some((expected, rv)) = current else {
        return true;
    };
    let new = NEXT_VALUE.fetch_add(1, Ordering::Relaxed).to_string();
    let id = history.invoke(
        client,
        key,
        Op::Cas {
            expected: Some(expected),
            new: new.clone(),
        },
    );
    let request = ApplyRequest {
        object: config_map(key, &new, Some(&rv)),
        dry_run: false,
    };
    match api.apply(with_timeout(request)).await {
        Ok(_) => {
            history.complete(id, Outcome::Cas(true));
            true
        }
        Err(status) if status.code() == Code::Aborted => {
            history.complete(id, Outcome::Cas(false));
            true
        }
        Err(status) => {
            assert!(
                !definitely_failed(&status),
                "unexpected compare-and-set error: {status}"
            );
            history.complete(id, Outcome::Unknown);
            false
        }
    }
}
