//! Pod networking: each pod gets a network namespace of its own, wired to a bridge on the
//! node by a veth pair.
//!
//! ```text
//!  node's network namespace (ip_forward on)        pod namespaces, bound at <state_dir>/netns/<uid>
//!
//!  berth0: bridge, 10.244.1.1/24 ─┬─ veth1a2b3c4d ═══ eth0 10.244.1.2/24, lo   default via 10.244.1.1
//!         (the pods' gateway)     └─ veth5e6f7a8b ═══ eth0 10.244.1.3/24, lo   default via 10.244.1.1
//!                                    (alias: pod uid)
//! ```
//!
//! - The node's pod subnet (a /24 of 10.244.0.0/16, assigned by the control plane) belongs to
//!   the bridge: its first address is the pods' gateway, the others go to pods through
//!   [`ipam`], the lowest free one first; `<state_dir>/ipam.json` keeps them across restarts.
//! - All of it is netlink (rtnetlink), no `ip` command. A netlink socket acts on the namespace
//!   it was opened in: the node's side uses one opened by the agent, the pod's side one opened
//!   on a thread that entered the pod's namespace ([`netns`]); the veth's pod end is created
//!   directly inside the pod's namespace, already named eth0.
//! - Every step is idempotent and the state lives where the kernel keeps it (links, addresses,
//!   routes, mounts) plus the IPAM file, so [`PodNetwork::setup_pod`] after an agent restart
//!   re-adopts a pod (same address, same interfaces) and repairs what is missing, and
//!   [`PodNetwork::teardown_pod`] removes whatever a crash at any step left behind. Setup
//!   allocates the address first and teardown releases it last; the host veth carries the pod
//!   uid as its alias: [`PodNetwork::list_pods`] finds every pod with anything left.
//! - Operations on one node are serialized (one lock): each takes milliseconds.
//! - Other nodes' pod subnets are reached through routes via their node addresses ([`routes`],
//!   host-gw style); the node's ClusterIPs live on its service interface ([`services`]).
//! - Not here yet: masquerading of traffic leaving the node.

mod error;
pub mod ipam;
mod link;
pub mod netns;
pub mod routes;
pub mod services;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use tracing::{info, warn};

pub use error::NetworkError;
pub use ipam::{Ipam, IpamError};

use link::PodSideError;

/// The bridge's name unless configured otherwise.
pub const DEFAULT_BRIDGE: &str = "berth0";

/// The pod's interface, inside its namespace.
pub const POD_INTERFACE: &str = "eth0";

/// What a pod's containers need to know about its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkInfo {
    /// The pod's network namespace, for the container runtime to join.
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// The node's end of the pod's veth pair.
    pub host_veth: String,
}

/// The pod network of one node.
pub struct PodNetwork {
    netns_dir: PathBuf,
    ipam_path: PathBuf,
    bridge: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// The allocations as stored; its lock also serializes this node's network operations.
    ipam: tokio::sync::Mutex<Ipam>,
}

impl PodNetwork {
    /// Loads the node's network state from `state_dir` (created if missing) and prepares
    /// `state_dir/netns` for namespace files. Touches no interface: see [`Self::ensure_bridge`].
    pub fn new(
        state_dir: PathBuf,
        subnet: Ipv4Net,
        bridge_name: String,
    ) -> Result<PodNetwork, NetworkError> {
        validate_interface_name(&bridge_name)?;
        let netns_dir = state_dir.join("netns");
        netns::prepare_dir(&netns_dir).map_err(NetworkError::io(format!(
            "prepare {} for network namespaces",
            netns_dir.display()
        )))?;
        let ipam_path = state_dir.join("ipam.json");
        let ipam = ipam::load(&ipam_path, subnet)?;
        Ok(PodNetwork {
            netns_dir,
            ipam_path,
            bridge: bridge_name,
            subnet: ipam.subnet(),
            gateway: ipam.gateway(),
            ipam: tokio::sync::Mutex::new(ipam),
        })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// Where the pod's network namespace is bound (whether or not it exists).
    pub fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.netns_dir.join(pod_uid)
    }

    /// Creates the bridge if missing, gives it the gateway address, sets it up, and turns on
    /// IPv4 forwarding in the calling thread's network namespace. Idempotent.
    pub async fn ensure_bridge(&self) -> Result<(), NetworkError> {
        let _serialized = self.ipam.lock().await;
        let handle = link::connect()?;
        link::ensure_bridge(
            &handle,
            &self.bridge,
            self.bridge_mac(),
            self.gateway,
            self.subnet.prefix_len(),
        )
        .await?;
        enable_ip_forward()
    }

    /// Deletes the bridge and unmounts the namespace directory (once every pod's network is
    /// torn down): a node that stops for good (`berth up` on Ctrl-C) leaves no interface and
    /// no mount behind.
    pub async fn remove_node_network(&self) -> Result<(), NetworkError> {
        let _serialized = self.ipam.lock().await;
        let handle = link::connect()?;
        if let Some(link) = link::get(&handle, &self.bridge).await? {
            link::delete(&handle, link.header.index, &self.bridge).await?;
        }
        match nix::mount::umount2(&self.netns_dir, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(NetworkError::io(format!(
                "unmount {}",
                self.netns_dir.display()
            ))(e.into())),
        }
    }

    /// Gives the pod a network namespace wired to the bridge, with an address of the node's
    /// subnet. For a pod already set up (an agent restart) it returns the same information,
    /// repairing what is missing. On error the pod may be half set up: call this again or
    /// [`Self::teardown_pod`].
    pub async fn setup_pod(
        &self,
        pod_uid: &str,
        pod_name: &str,
    ) -> Result<PodNetworkInfo, NetworkError> {
        validate_pod_uid(pod_uid)?;
        let mut ipam = self.ipam.lock().await;
        let handle = link::connect()?;
        let bridge = link::get(&handle, &self.bridge)
            .await?
            .ok_or_else(|| NetworkError::BridgeMissing(self.bridge.clone()))?
            .header
            .index;
        let mut next = ipam.clone();
        let ip = next.allocate(pod_uid)?;
        self.commit(&mut ipam, next).await?;

        let info = PodNetworkInfo {
            netns_path: self.netns_path(pod_uid),
            ip,
            gateway: self.gateway,
            prefix_len: self.subnet.prefix_len(),
            host_veth: host_veth_name(pod_uid),
        };
        if !netns::is_mounted(&info.netns_path) {
            netns::create(info.netns_path.clone())
                .await
                .map_err(NetworkError::io(format!(
                    "create network namespace {}",
                    info.netns_path.display()
                )))?;
        }

        let mut replaced = false;
        loop {
            let host = match link::get(&handle, &info.host_veth).await? {
                Some(host) => {
                    // No alias: made by a setup that crashed before attaching it.
                    if let Some(owner) = link::alias(&host).filter(|owner| *owner != pod_uid) {
                        return Err(NetworkError::VethNameTaken {
                            veth: info.host_veth.clone(),
                            pod_uid: pod_uid.to_string(),
                            owner: owner.to_string(),
                        });
                    }
                    host
                }
                None => {
                    link::create_veth(&handle, &info.host_veth, POD_INTERFACE, &info.netns_path)
                        .await?;
                    link::get(&handle, &info.host_veth)
                        .await?
                        .ok_or_else(|| NetworkError::LinkVanished(info.host_veth.clone()))?
                }
            };
            let index = host.header.index;
            link::attach(&handle, index, &info.host_veth, bridge, pod_uid).await?;
            match configure_pod_side(&info).await {
                Ok(()) => break,
                // The host end is from before and its peer lives in another namespace (ours
                // was made anew): make the pair again, once.
                Err(PodSideError::Missing(ifname)) if !replaced => {
                    warn!(
                        pod = pod_name,
                        pod_uid, ifname, "pod interface missing: recreating the veth pair"
                    );
                    link::delete(&handle, index, &info.host_veth).await?;
                    replaced = true;
                }
                Err(PodSideError::Missing(ifname)) => {
                    return Err(NetworkError::PodInterfaceMissing {
                        ifname: ifname.to_string(),
                        netns: info.netns_path.clone(),
                    })
                }
                Err(PodSideError::Failed(e)) => return Err(e),
            }
        }
        info!(pod = pod_name, pod_uid, ip = %info.ip, veth = info.host_veth, "pod network ready");
        Ok(info)
    }

    /// Removes the pod's veth pair and namespace file and releases its address. Idempotent,
    /// and fine with any part already gone.
    pub async fn teardown_pod(&self, pod_uid: &str) -> Result<(), NetworkError> {
        validate_pod_uid(pod_uid)?;
        let mut ipam = self.ipam.lock().await;
        let handle = link::connect()?;
        let host_veth = host_veth_name(pod_uid);
        if let Some(host) = link::get(&handle, &host_veth).await? {
            match link::alias(&host) {
                Some(owner) if owner != pod_uid => {
                    warn!(
                        pod_uid,
                        owner,
                        veth = host_veth,
                        "veth belongs to another pod: left alone"
                    )
                }
                // Deleting one end deletes the pair.
                _ => link::delete(&handle, host.header.index, &host_veth).await?,
            }
        }
        let netns_path = self.netns_path(pod_uid);
        netns::remove(&netns_path).map_err(NetworkError::io(format!(
            "remove network namespace {}",
            netns_path.display()
        )))?;
        let mut next = ipam.clone();
        if let Some(ip) = next.release(pod_uid) {
            self.commit(&mut ipam, next).await?;
            info!(pod_uid, %ip, "pod network removed");
        }
        Ok(())
    }

    /// The uids of all pods with anything of their network left on this node (an address, a
    /// namespace file, a veth): after a restart the agent tears down those it no longer runs.
    pub async fn list_pods(&self) -> Result<Vec<String>, NetworkError> {
        let ipam = self.ipam.lock().await;
        let mut pods: BTreeSet<String> =
            ipam.allocations().map(|(uid, _)| uid.to_string()).collect();
        let entries = std::fs::read_dir(&self.netns_dir).map_err(NetworkError::io(format!(
            "list {}",
            self.netns_dir.display()
        )))?;
        for entry in entries {
            let entry = entry.map_err(NetworkError::io(format!(
                "list {}",
                self.netns_dir.display()
            )))?;
            if let Some(uid) = entry
                .file_name()
                .to_str()
                .filter(|uid| validate_pod_uid(uid).is_ok())
            {
                pods.insert(uid.to_string());
            }
        }
        let handle = link::connect()?;
        for host in link::list(&handle).await? {
            if let (Some(name), Some(uid)) = (link::name(&host), link::alias(&host)) {
                if validate_pod_uid(uid).is_ok() && host_veth_name(uid) == name {
                    pods.insert(uid.to_string());
                }
            }
        }
        Ok(pods.into_iter().collect())
    }

    /// Stores `next` and makes it the current state; nothing is written if nothing changed.
    async fn commit(&self, ipam: &mut Ipam, next: Ipam) -> Result<(), NetworkError> {
        if *ipam == next {
            return Ok(());
        }
        let path = self.ipam_path.clone();
        let snapshot = next.clone();
        tokio::task::spawn_blocking(move || ipam::store(&path, &snapshot))
            .await
            .map_err(|e| NetworkError::io("store IPAM state")(std::io::Error::other(e)))??;
        *ipam = next;
        Ok(())
    }

    /// A locally administered MAC address derived from the subnet: stable across restarts,
    /// different on every node.
    fn bridge_mac(&self) -> [u8; 6] {
        let [_, b, c, d] = self.subnet.network().octets();
        [0x02, b'b', b'r', b, c, d]
    }
}

/// Configures the pod's end of the veth with a netlink socket opened inside its namespace.
async fn configure_pod_side(info: &PodNetworkInfo) -> Result<(), PodSideError> {
    let (ip, prefix_len, gateway) = (info.ip, info.prefix_len, info.gateway);
    let failed = |e: std::io::Error| {
        PodSideError::Failed(NetworkError::io(format!(
            "enter network namespace {}",
            info.netns_path.display()
        ))(e))
    };
    netns::run_in(&info.netns_path, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        Ok(runtime.block_on(async {
            let handle = link::connect()?;
            link::configure_pod_side(&handle, POD_INTERFACE, ip, prefix_len, gateway).await
        }))
    })
    .await
    .and_then(|built| built)
    .map_err(failed)?
}

/// The node's end of the pod's veth: `veth` and 8 hex digits of a stable hash of the uid,
/// within the 15 bytes an interface name may have.
pub fn host_veth_name(pod_uid: &str) -> String {
    // FNV-1a: fixed forever, unlike std's hasher, since the names outlive agent versions.
    let hash = pod_uid.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("veth{hash:08x}")
}

fn validate_pod_uid(pod_uid: &str) -> Result<(), NetworkError> {
    let valid = (1..=128).contains(&pod_uid.len())
        && !pod_uid.starts_with('.')
        && pod_uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(NetworkError::InvalidPodUid(pod_uid.to_string()))
    }
}

fn validate_interface_name(name: &str) -> Result<(), NetworkError> {
    let valid = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if valid {
        Ok(())
    } else {
        Err(NetworkError::InvalidInterfaceName(name.to_string()))
    }
}

/// Pods reach beyond the bridge only if the node forwards. /proc/sys/net is the calling
/// thread's network namespace: the node's for the agent, a test's own in tests.
fn enable_ip_forward() -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    let current = std::fs::read_to_string(path)
        .map_err(NetworkError::io(format!("read {}", path.display())))?;
    if current.trim() != "1" {
        std::fs::write(path, "1").map_err(NetworkError::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("8f14e45f-ceea-467a-9af0-1c2e3d4b5a69");
        assert_eq!(a, host_veth_name("8f14e45f-ceea-467a-9af0-1c2e3d4b5a69"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert_ne!(a, host_veth_name("8f14e45f-ceea-467a-9af0-1c2e3d4b5a6a"));
        // Pinned: a changed hash would orphan the veths of running pods on upgrade.
        assert_eq!(host_veth_name(""), "veth811c9dc5");
        assert_eq!(host_veth_name("a"), "vethe40c292c");
    }

    #[test]
    fn pod_uids_must_be_plain_names() {
        for ok in ["8f14e45f-ceea-467a-9af0-1c2e3d4b5a69", "pod_1.a"] {
            assert!(validate_pod_uid(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_pod_uid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names_fit_the_kernel() {
        assert!(validate_interface_name(DEFAULT_BRIDGE).is_ok());
        assert!(validate_interface_name("123456789012345").is_ok());
        for bad in ["", "1234567890123456", "a/b", "a:b", "a b", ".."] {
            assert!(validate_interface_name(bad).is_err(), "{bad}");
        }
    }
}
