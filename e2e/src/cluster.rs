//! A multi-member berth control plane for tests: member i runs on host i of a [`Network`],
//! at 10.77.0.i:7443, with its own data directory.

use crate::network::Network;
use crate::{eventually, Run, Server, TestEnv};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `berth` binary next to the running test executable (target/<profile>/berth).
pub fn berth_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let berth = profile_dir.join("berth");
    // `cargo test --workspace` builds it; a test run of this crate alone may not have.
    assert!(
        berth.exists(),
        "{} is missing: run `cargo build -p berth` first",
        berth.display()
    );
    berth
}

pub struct Cluster {
    // Dropped in this order: processes first, then the network they ran in, then their files.
    pub members: Vec<Option<Server>>,
    pub network: Network,
    pub env: TestEnv,
    berth: PathBuf,
}

impl Cluster {
    /// Member 1 bootstraps; the others join it. Returns once all are voters.
    pub fn start(size: usize, extra: &[&str]) -> Cluster {
        Cluster::with_hosts(size, size, extra)
    }

    /// `size` members on a network of `hosts` hosts (the rest are free for members to come).
    pub fn with_hosts(hosts: usize, size: usize, extra: &[&str]) -> Cluster {
        let network = Network::new(hosts);
        let mut cluster = Cluster {
            members: Vec::new(),
            network,
            env: TestEnv::new(),
            berth: berth_binary(),
        };
        for i in 0..size {
            cluster.join(i, extra);
        }
        cluster.wait_for_voters(size);
        cluster
    }

    /// Starts member `i` (the next one): the first bootstraps, the others join member 1.
    pub fn join(&mut self, i: usize, extra: &[&str]) {
        assert_eq!(i, self.members.len(), "members start in order");
        let listen = self.addr(i);
        let first = self.addr(0);
        let mut args = vec!["--listen", &listen];
        if i == 0 {
            args.push("--init");
        } else {
            args.extend(["--join", &first]);
        }
        args.extend(extra);
        let server = Server::start_on(
            Some(&self.network.hosts[i]),
            &self.berth,
            &self.env,
            &self.data_dir(i),
            &args,
        );
        self.members.push(Some(server));
    }

    /// Waits until `count` members are voters (the leader among them).
    pub fn wait_for_voters(&self, count: usize) {
        let voters = |run: &Run| {
            run.stdout()
                .lines()
                .filter(|l| l.contains("Leader") || l.contains("Voter"))
                .count()
        };
        let all_voters = eventually(Duration::from_secs(20), || {
            let run = self.berth_on(0, &["members"]);
            run.success() && voters(&run) == count
        });
        assert!(
            all_voters,
            "members never all became voters:\n{}",
            self.berth_on(0, &["members"]).stdout()
        );
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}:7443", self.network.hosts[i].addr)
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.env.root.path().join(format!("member-{}", i + 1))
    }

    /// Runs a client command on host `i` against member `i`.
    pub fn berth_on(&self, i: usize, args: &[&str]) -> Run {
        let mut command = self.network.hosts[i].command(&self.berth);
        command
            .env("XDG_CONFIG_HOME", self.env.root.path().join("config"))
            .env_remove("BERTH_SERVER");
        let output = command
            .args(args)
            .arg("--server")
            .arg(self.addr(i))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run berth");
        Run(output)
    }

    /// Applies a manifest through member `i`.
    pub fn apply_on(&self, i: usize, yaml: &str) -> Run {
        let path = self
            .env
            .root
            .path()
            .join(format!("manifest-{}.yaml", std::process::id()));
        std::fs::write(&path, yaml).expect("write manifest");
        self.berth_on(i, &["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    /// The index of the member that leads, as member `asking` sees it.
    pub fn leader(&self, asking: usize) -> Option<usize> {
        let out = self.berth_on(asking, &["members"]).stdout();
        let line = out.lines().find(|l| l.contains("Leader"))?;
        let addr = line.split_whitespace().nth(1)?;
        (0..self.members.len()).find(|i| self.addr(*i) == addr)
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.members[i].take() {
            server.kill();
        }
    }

    /// Restarts member `i` from its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "member {i} is still running");
        let server = Server::start_on(
            Some(&self.network.hosts[i]),
            &self.berth,
            &self.env,
            &self.data_dir(i),
            &[],
        );
        self.members[i] = Some(server);
    }
}
