//! A three-member control plane, each member on a host (network namespace) of its own.

use berth_e2e::cluster::Cluster;
use berth_e2e::{eventually, isolate_network};
use std::time::Duration;

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

fn value_on(cluster: &Cluster, member: usize, name: &str) -> Option<String> {
    let run = cluster.berth_on(member, &["get", "cm", name, "-o", "json"]);
    if !run.success() {
        eprintln!("get cm {name} on member {member}: {}", run.stderr().trim());
        return None;
    }
    let object: serde_json::Value = serde_json::from_str(&run.stdout()).ok()?;
    object["data"]["value"].as_str().map(str::to_string)
}

#[test]
fn t10_bootstrap_join_and_any_member_serves() {
    isolate_network();
    let cluster = Cluster::start(3, &[]);
    // A write through each member (followers forward to the leader) is read back through
    // every member (followers wait for the leader's read index).
    for writer in 0..3 {
        let name = format!("from-{writer}");
        cluster.apply_on(writer, &config_map(&name, "x")).ok();
        for reader in 0..3 {
            assert_eq!(
                value_on(&cluster, reader, &name).as_deref(),
                Some("x"),
                "{name} read through member {reader}"
            );
        }
    }
}

#[test]
fn t20_leader_sigkill_writes_resume_on_the_new_leader() {
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    cluster.apply_on(0, &config_map("before", "1")).ok();
    let leader = cluster.leader(0).expect("a leader");
    cluster.kill(leader);
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let resumed = eventually(Duration::from_secs(10), || {
        cluster
            .apply_on(survivor, &config_map("after", "2"))
            .success()
    });
    assert!(resumed, "writes did not resume after the leader was killed");
    let new_leader = cluster.leader(survivor).expect("a new leader");
    assert_ne!(new_leader, leader);
    for member in (0..3).filter(|i| *i != leader) {
        assert_eq!(value_on(&cluster, member, "before").as_deref(), Some("1"));
        assert_eq!(value_on(&cluster, member, "after").as_deref(), Some("2"));
    }
    // The old leader comes back as a follower and catches up.
    cluster.restart(leader);
    assert!(eventually(Duration::from_secs(10), || value_on(
        &cluster, leader, "after"
    )
    .as_deref()
        == Some("2")));
}

#[test]
fn t30_minority_partition_refuses_writes_then_heals() {
    isolate_network();
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(0).expect("a leader");
    let cut = (0..3).find(|i| *i != leader).unwrap();
    cluster.apply_on(leader, &config_map("early", "1")).ok();
    assert!(eventually(Duration::from_secs(5), || {
        cluster
            .berth_on(cut, &["get", "cm", "early", "--stale"])
            .success()
    }));
    cluster.network.partition(cut);
    assert!(
        !cluster
            .apply_on(cut, &config_map("minority", "no"))
            .success(),
        "a cut-off member must refuse writes"
    );
    // It still answers reads that accept staleness, and refuses linearizable ones.
    cluster
        .berth_on(cut, &["get", "cm", "early", "--stale"])
        .ok();
    assert!(
        !cluster.berth_on(cut, &["get", "cm", "early"]).success(),
        "a linearizable read on a cut-off member"
    );
    let majority = (0..3).find(|i| *i != cut).unwrap();
    cluster
        .apply_on(majority, &config_map("majority", "yes"))
        .ok();
    cluster.network.heal(cut);
    assert!(
        eventually(Duration::from_secs(10), || value_on(
            &cluster, cut, "majority"
        )
        .as_deref()
            == Some("yes")),
        "the healed member did not catch up"
    );
    assert_eq!(
        value_on(&cluster, majority, "minority"),
        None,
        "the refused write must not appear"
    );
}

#[test]
fn t40_full_cluster_sigkill_and_restart_loses_nothing() {
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    for i in 0..20 {
        cluster
            .apply_on(i % 3, &config_map(&format!("c{i}"), &i.to_string()))
            .ok();
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    assert!(
        eventually(Duration::from_secs(10), || cluster.leader(0).is_some()),
        "no leader after restart"
    );
    for i in 0..20 {
        assert_eq!(
            value_on(&cluster, (i + 1) % 3, &format!("c{i}")),
            Some(i.to_string())
        );
    }
}

#[test]
fn t50_new_member_catches_up_by_snapshot() {
    isolate_network();
    // A tiny snapshot threshold, so the log is compacted long before the third member joins:
    // it can only catch up by installing a snapshot.
    let mut cluster = Cluster::with_hosts(3, 2, &["--snapshot-threshold", "10"]);
    for i in 0..40 {
        cluster
            .apply_on(i % 2, &config_map(&format!("c{i}"), &i.to_string()))
            .ok();
    }
    cluster.join(2, &["--snapshot-threshold", "10"]);
    cluster.wait_for_voters(3);
    for i in 0..40 {
        assert_eq!(
            value_on(&cluster, 2, &format!("c{i}")),
            Some(i.to_string()),
            "c{i} on the new member"
        );
    }
}

/// The TERM column of `berth members` as member `i` sees it.
fn term_on(cluster: &Cluster, i: usize) -> Option<u64> {
    let out = cluster.berth_on(i, &["members"]).stdout();
    out.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn t60_a_rejoining_partitioned_member_does_not_depose_the_leader() {
    isolate_network();
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader(0).expect("a leader");
    let term = term_on(&cluster, leader).expect("a term");
    let cut = (0..3).find(|i| *i != leader).unwrap();
    cluster.network.partition(cut);
    // Many election timeouts long: an unguarded member would bump its term again and again.
    std::thread::sleep(Duration::from_secs(3));
    cluster.network.heal(cut);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster.leader(leader),
        Some(leader),
        "the leader was deposed"
    );
    assert_eq!(term_on(&cluster, leader), Some(term), "the term moved");
    // And the healed member is back in the cluster.
    let rejoined = eventually(Duration::from_secs(10), || {
        cluster
            .apply_on(cut, &config_map("after-heal", "ok"))
            .success()
    });
    assert!(rejoined, "the healed member never found the leader again");
}

#[test]
fn t70_a_member_with_lost_disk_is_removed_and_replaced() {
    isolate_network();
    let mut cluster = Cluster::with_hosts(4, 3, &[]);
    cluster.apply_on(0, &config_map("kept", "1")).ok();
    let leader = cluster.leader(0).expect("a leader");
    let lost = (0..3).find(|i| *i != leader).unwrap();
    cluster.kill(lost);
    std::fs::remove_dir_all(cluster.data_dir(lost)).unwrap();
    let members = cluster.berth_on(leader, &["members"]).ok().stdout();
    let lost_addr = cluster.addr(lost);
    let id = members
        .lines()
        .find(|l| l.contains(&lost_addr))
        .and_then(|l| l.split_whitespace().next())
        .expect("the lost member is listed")
        .to_string();
    let after = cluster
        .berth_on(leader, &["members", "remove", &id])
        .ok()
        .stdout();
    assert!(
        !after.contains(&lost_addr),
        "still listed after removal:\n{after}"
    );
    // A replacement joins on a fresh host and catches up.
    cluster.join(3, &[]);
    cluster.wait_for_voters(3);
    assert_eq!(value_on(&cluster, 3, "kept").as_deref(), Some("1"));
    cluster.apply_on(3, &config_map("after", "2")).ok();
    assert_eq!(value_on(&cluster, leader, "after").as_deref(), Some("2"));
}

#[test]
fn t80_a_watch_given_every_member_fails_over() {
    use std::io::{BufRead, BufReader};
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    let all = (0..3)
        .map(|i| cluster.addr(i))
        .collect::<Vec<_>>()
        .join(",");
    let mut watch = cluster.network.hosts[1]
        .command(&berth_e2e::cluster::berth_binary())
        .args(["get", "cm", "-w", "-o", "name", "--server", &all])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    cluster.apply_on(1, &config_map("one", "1")).ok();
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(10)).unwrap(),
        "configmap/one"
    );
    // The watch is connected to the first address: that member goes away.
    cluster.kill(0);
    let written = eventually(Duration::from_secs(10), || {
        cluster.apply_on(1, &config_map("two", "2")).success()
    });
    assert!(written);
    let next = lines.recv_timeout(Duration::from_secs(10));
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        next.unwrap(),
        "configmap/two",
        "the watch did not resume on another member"
    );
}

/// `berth members leave` through member `i`: it is removed, then its process exits cleanly.
fn leave(cluster: &mut Cluster, i: usize) {
    let remaining = cluster.berth_on(i, &["members", "leave"]).ok().stdout();
    assert!(
        !remaining.contains(&cluster.addr(i)),
        "member {i} still listed after leaving:\n{remaining}"
    );
    let server = cluster.members[i].as_mut().expect("running");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "member {i} did not exit cleanly after leaving: {status:?}"
    );
    cluster.members[i] = None;
}

#[test]
fn t90_members_leave_cleanly_follower_then_leader() {
    isolate_network();
    let mut cluster = Cluster::with_hosts(4, 4, &[]);
    cluster.apply_on(0, &config_map("kept", "1")).ok();
    let leader = cluster.leader(0).expect("a leader");
    let follower = (0..4).find(|i| *i != leader).unwrap();
    leave(&mut cluster, follower);
    // The leader leaves too: the two that remain elect a new one and take writes.
    leave(&mut cluster, leader);
    let rest: Vec<usize> = (0..4).filter(|i| ![leader, follower].contains(i)).collect();
    assert!(
        eventually(Duration::from_secs(10), || cluster
            .apply_on(rest[0], &config_map("after", "2"))
            .success()),
        "no writes after the leader left"
    );
    let members = cluster.berth_on(rest[1], &["members"]).ok().stdout();
    assert_eq!(
        members
            .lines()
            .filter(|l| l.contains("Leader") || l.contains("Voter"))
            .count(),
        2,
        "{members}"
    );
    for i in &rest {
        assert_eq!(value_on(&cluster, *i, "kept").as_deref(), Some("1"));
        assert_eq!(value_on(&cluster, *i, "after").as_deref(), Some("2"));
    }
    // A member that left does not come back from its old data directory.
    let restart = cluster.network.hosts[follower]
        .command(&berth_e2e::cluster::berth_binary())
        .arg("server")
        .arg("--data-dir")
        .arg(cluster.data_dir(follower))
        .output()
        .unwrap();
    assert!(!restart.status.success());
    let stderr = String::from_utf8_lossy(&restart.stderr);
    assert!(stderr.contains("left its cluster"), "{stderr}");
}
