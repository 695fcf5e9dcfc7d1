//! IP address management for the node's pod subnet: which pod holds which address.
//!
//! [`Ipam`] is a plain value: `allocate` and `release` change memory only, so the rules (the
//! lowest free address; network, gateway and broadcast never handed out; one address per pod
//! uid, the same one on every call) are tested without a file system. [`load`] and [`store`]
//! persist it as JSON, written atomically (temporary file, fsync, rename, fsync of the
//! directory): after a crash the file holds the old state or the new one, never a torn mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pod subnet {0} is too small: it needs a gateway and at least one pod address (/30 at most)")]
    SubnetTooSmall(Ipv4Net),

    #[error("pod subnet {subnet} is exhausted: all {capacity} pod addresses are allocated")]
    Exhausted { subnet: Ipv4Net, capacity: u32 },

    #[error("IPAM state {path} is for pod subnet {stored}, not {requested}, and {pods} pods still hold addresses in it")]
    SubnetChanged {
        path: PathBuf,
        stored: Ipv4Net,
        requested: Ipv4Net,
        pods: usize,
    },

    #[error("IPAM state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The allocations of one pod subnet, keyed by pod uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    subnet: Ipv4Net,
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// An empty allocator for `subnet` (host bits are ignored: 10.244.1.7/24 is 10.244.1.0/24).
    pub fn new(subnet: Ipv4Net) -> Result<Ipam, IpamError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        Ok(Ipam {
            subnet,
            allocations: BTreeMap::new(),
        })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The subnet's first address, held by the node's bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// How many pods the subnet holds: all but network, gateway and broadcast.
    pub fn capacity(&self) -> u32 {
        u32::from(self.subnet.broadcast()) - u32::from(self.subnet.network()) - 2
    }

    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.allocations.get(pod_uid).copied()
    }

    /// Pod uids and their addresses, ordered by uid.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.allocations.iter().map(|(uid, ip)| (uid.as_str(), *ip))
    }

    /// The pod's address: the one it already holds, else the lowest free one.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.get(pod_uid) {
            return Ok(ip);
        }
        let used: BTreeSet<u32> = self.allocations.values().map(|ip| u32::from(*ip)).collect();
        let first = u32::from(self.gateway()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let ip = (first..=last)
            .find(|candidate| !used.contains(candidate))
            .map(Ipv4Addr::from)
            .ok_or(IpamError::Exhausted {
                subnet: self.subnet,
                capacity: self.capacity(),
            })?;
        self.allocations.insert(pod_uid.to_string(), ip);
        Ok(ip)
    }

    /// Frees the pod's address; `None` if it held none.
    pub fn release(&mut self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(pod_uid)
    }

    /// Whether `ip` may be handed to a pod: inside the subnet, not network, gateway or broadcast.
    fn is_pod_address(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.gateway()
            && ip != self.subnet.broadcast()
    }
}

#[derive(Serialize, Deserialize)]
struct IpamFile {
    subnet: String,
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// Reads the state at `path`; a missing file is an empty allocator. The stored subnet must be
/// `subnet` unless nothing is allocated in it (the control plane may reassign an empty node).
pub fn load(path: &Path, subnet: Ipv4Net) -> Result<Ipam, IpamError> {
    let mut ipam = Ipam::new(subnet)?;
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ipam),
        Err(source) => {
            return Err(IpamError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| IpamError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: IpamFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let stored: Ipv4Net = file
        .subnet
        .parse()
        .map_err(|e| corrupt(format!("subnet {:?}: {e}", file.subnet)))?;
    if stored != ipam.subnet {
        if file.allocations.is_empty() {
            return Ok(ipam);
        }
        return Err(IpamError::SubnetChanged {
            path: path.to_path_buf(),
            stored,
            requested: ipam.subnet,
            pods: file.allocations.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for (uid, ip) in &file.allocations {
        if !ipam.is_pod_address(*ip) {
            return Err(corrupt(format!(
                "pod {uid} holds {ip}, not a pod address of {stored}"
            )));
        }
        if !seen.insert(*ip) {
            return Err(corrupt(format!("{ip} is allocated twice")));
        }
    }
    ipam.allocations = file.allocations;
    Ok(ipam)
}

/// Writes `ipam` to `path` atomically and durably.
pub fn store(path: &Path, ipam: &Ipam) -> Result<(), IpamError> {
    let file = IpamFile {
        subnet: ipam.subnet.to_string(),
        allocations: ipam.allocations.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("IPAM state serializes");
    write_atomic(path, &bytes).map_err(|source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_the_lowest_free_address_after_the_gateway() {
        let mut ipam = Ipam::new(net("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.gateway(), ip("10.244.1.1"));
        assert_eq!(ipam.capacity(), 253);
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.1.2"));
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.244.1.3"));
        assert_eq!(ipam.allocate("c").unwrap(), ip("10.244.1.4"));
    }

    #[test]
    fn the_same_pod_gets_the_same_address() {
        let mut ipam = Ipam::new(net("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), a);
        assert_eq!(ipam.allocations().count(), 2);
    }

    #[test]
    fn release_frees_the_address_for_the_next_pod() {
        let mut ipam = Ipam::new(net("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a"), Some(a));
        assert_eq!(ipam.release("a"), None);
        assert_eq!(ipam.get("a"), None);
        assert_eq!(ipam.allocate("c").unwrap(), a);
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast() {
        let mut ipam = Ipam::new(net("10.244.7.0/29")).unwrap();
        assert_eq!(ipam.capacity(), 5);
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "10.244.7.2",
                "10.244.7.3",
                "10.244.7.4",
                "10.244.7.5",
                "10.244.7.6"
            ]
            .map(ip)
        );
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert!(
            matches!(err, IpamError::Exhausted { capacity: 5, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("10.244.7.0/29 is exhausted"),
            "{err}"
        );
        // Exhaustion leaves the state alone, and a release makes room again.
        assert_eq!(ipam.allocations().count(), 5);
        ipam.release("pod-3");
        assert_eq!(ipam.allocate("one-too-many").unwrap(), ip("10.244.7.5"));
    }

    #[test]
    fn a_full_slash_24_holds_253_pods() {
        let mut ipam = Ipam::new(net("10.244.0.0/24")).unwrap();
        for i in 0..253 {
            ipam.allocate(&i.to_string()).unwrap();
        }
        assert_eq!(
            ipam.allocate("253").unwrap_err().to_string(),
            "pod subnet 10.244.0.0/24 is exhausted: all 253 pod addresses are allocated"
        );
    }

    #[test]
    fn subnets_without_room_for_a_pod_are_refused() {
        assert!(matches!(
            Ipam::new(net("10.244.1.0/31")),
            Err(IpamError::SubnetTooSmall(_))
        ));
        assert!(matches!(
            Ipam::new(net("10.244.1.0/32")),
            Err(IpamError::SubnetTooSmall(_))
        ));
        let mut smallest = Ipam::new(net("10.244.1.4/30")).unwrap();
        assert_eq!(smallest.allocate("a").unwrap(), ip("10.244.1.6"));
        assert!(smallest.allocate("b").is_err());
    }

    #[test]
    fn host_bits_of_the_subnet_are_ignored() {
        let ipam = Ipam::new(net("10.244.1.9/24")).unwrap();
        assert_eq!(ipam.subnet(), net("10.244.1.0/24"));
        assert_eq!(ipam.gateway(), ip("10.244.1.1"));
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let subnet = net("10.244.1.0/24");
        assert_eq!(load(&path, subnet).unwrap(), Ipam::new(subnet).unwrap());

        let mut ipam = load(&path, subnet).unwrap();
        ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        ipam.release("a");
        store(&path, &ipam).unwrap();

        let mut reloaded = load(&path, subnet).unwrap();
        assert_eq!(reloaded, ipam);
        assert_eq!(reloaded.allocate("b").unwrap(), ip("10.244.1.3"));
        assert_eq!(reloaded.allocate("c").unwrap(), ip("10.244.1.2"));
        assert!(!dir.path().join("ipam.json.tmp").exists());
    }

    #[test]
    fn a_changed_subnet_is_refused_while_pods_hold_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::new(net("10.244.1.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        store(&path, &ipam).unwrap();
        let err = load(&path, net("10.244.2.0/24")).unwrap_err();
        assert!(
            matches!(err, IpamError::SubnetChanged { pods: 1, .. }),
            "{err}"
        );

        ipam.release("a");
        store(&path, &ipam).unwrap();
        let moved = load(&path, net("10.244.2.0/24")).unwrap();
        assert_eq!(moved.subnet(), net("10.244.2.0/24"));
    }

    #[test]
    fn corrupt_state_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let subnet = net("10.244.1.0/24");
        for bad in [
            "{not json",
            r#"{"subnet":"10.244.1.0/24","allocations":{"a":"10.244.1.1"}}"#,
            r#"{"subnet":"10.244.1.0/24","allocations":{"a":"10.244.9.2"}}"#,
            r#"{"subnet":"10.244.1.0/24","allocations":{"a":"10.244.1.2","b":"10.244.1.2"}}"#,
            r#"{"subnet":"nonsense","allocations":{}}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let err = load(&path, subnet).unwrap_err();
            assert!(matches!(err, IpamError::Corrupt { .. }), "{bad}: {err}");
        }
    }
}
