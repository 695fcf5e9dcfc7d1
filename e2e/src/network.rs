//! Hosts for multi-node tests: each a network namespace of its own with one address on a
//! shared switch (a bridge in another namespace), and nothing else: no route out of the
//! machine. Links can be cut and restored to partition a host. Everything is removed when
//! the `Network` is dropped, also when a test fails.

use std::net::Ipv4Addr;
use std::process::Command;

pub struct Network {
    switch: String,
    pub hosts: Vec<Host>,
}

pub struct Host {
    /// The network namespace, for `ip netns exec`.
    pub netns: String,
    pub addr: Ipv4Addr,
    /// This host's end of the link, inside the switch namespace.
    port: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running `ip` (iproute2)");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Network {
    /// `hosts` hosts at 10.77.0.1, 10.77.0.2, ... on one switch.
    pub fn new(hosts: usize) -> Network {
        // Names are unique per test process; interface names must fit in 15 bytes.
        let id = std::process::id() % 100_000;
        let tag = std::thread::current().id();
        let tag = format!("{tag:?}")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        let prefix = format!("berth-{id}-{tag}");
        let switch = format!("{prefix}-sw");
        let mut network = Network {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let netns = format!("{prefix}-h{i}");
            let inside = format!("b{id}t{tag}h{i}");
            let port = format!("b{id}t{tag}p{i}");
            assert!(port.len() <= 15, "interface name {port} too long");
            ip(&["netns", "add", &netns]);
            // Registered before it is complete, so that a failure below still cleans it up.
            network.hosts.push(Host {
                netns: netns.clone(),
                addr: Ipv4Addr::new(10, 77, 0, i as u8),
                port: port.clone(),
            });
            ip(&[
                "link", "add", &inside, "type", "veth", "peer", "name", &port,
            ]);
            ip(&["link", "set", &inside, "netns", &netns]);
            ip(&["link", "set", &port, "netns", &switch]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                &inside,
            ]);
            ip(&["-n", &netns, "link", "set", &inside, "up"]);
        }
        network
    }

    /// Cuts host `i` (0-based) off the switch.
    pub fn partition(&self, i: usize) {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.hosts[i].port,
            "down",
        ]);
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &self.hosts[i].port, "up"]);
    }
}

impl Host {
    /// Moves the calling thread into this host's network namespace (threads and processes it
    /// starts afterwards are on this host too).
    pub fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.netns))
            .expect("open the host's namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the host");
    }

    /// A command that runs `program` in this host's network namespace only: unlike `ip netns
    /// exec`, it keeps the machine's mount namespace, so mounts it makes (overlays, netns
    /// files) stay visible to the test and to a restarted process.
    pub fn command_sharing_mounts(&self, program: &std::path::Path) -> Command {
        use std::os::unix::process::CommandExt;
        let path = format!("/run/netns/{}", self.netns);
        let mut command = Command::new(program);
        // SAFETY: only an open(2) and setns(2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        command
    }

    /// A command that runs `program` on this host.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the other end.
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.netns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}
