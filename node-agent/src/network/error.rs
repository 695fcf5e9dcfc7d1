//! What can go wrong while wiring pods to the node's network.

use std::io;
use std::path::PathBuf;

use super::ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The uid names files and interfaces, so it must be a plain name.
    #[error("invalid pod uid {0:?}: expected 1-128 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidPodUid(String),

    #[error("invalid interface name {0:?}: expected 1-15 bytes, no '/', ':' or whitespace")]
    InvalidInterfaceName(String),

    #[error(transparent)]
    Ipam(#[from] IpamError),

    /// A netlink request the kernel refused (or the socket failed).
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// A system call or file operation outside netlink: namespaces, mounts, sysctls.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },

    #[error("bridge {0} does not exist (PodNetwork::ensure_bridge creates it)")]
    BridgeMissing(String),

    #[error("interface {0} exists but is not a bridge")]
    NotABridge(String),

    /// Two pod uids hash to the same host interface name (32 bits of hash: rare, not impossible).
    #[error("host interface {veth} for pod {pod_uid} is already used by pod {owner}")]
    VethNameTaken {
        veth: String,
        pod_uid: String,
        owner: String,
    },

    /// Deleted by someone else between creating it and the next request.
    #[error("interface {0} vanished right after it was created")]
    LinkVanished(String),

    /// The pod side of the veth is not in the pod's namespace (checked after creating it).
    #[error("interface {ifname} missing in network namespace {netns}")]
    PodInterfaceMissing { ifname: String, netns: PathBuf },
}

impl NetworkError {
    pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let op = op.into();
        move |source| NetworkError::Netlink { op, source }
    }

    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let op = op.into();
        move |source| NetworkError::Io { op, source }
    }
}
