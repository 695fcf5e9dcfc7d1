//! The netlink requests pod networking needs, each idempotent: asking for a state that is
//! already there succeeds and changes nothing.
//!
//! A netlink socket acts on the network namespace it was opened in, so [`connect`] binds a
//! connection to the calling thread's namespace for good, whichever thread polls it later.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::error::NetworkError;

/// A netlink connection in the calling thread's network namespace, served by a task on the
/// current tokio runtime until the handle (and its clones) are dropped.
pub(crate) fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(NetworkError::io("open netlink socket"))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The link named `name`, if there is one.
pub(crate) async fn get(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
    let mut request = handle.link().get().match_name(name.to_string()).execute();
    match request.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(NetworkError::netlink(format!("get link {name}"))(e)),
    }
}

/// All links in the namespace.
pub(crate) async fn list(handle: &Handle) -> Result<Vec<LinkMessage>, NetworkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink("list links"))
}

pub(crate) fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

pub(crate) fn alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) if !alias.is_empty() => Some(alias.as_str()),
        _ => None,
    })
}

fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// Creates the bridge `name` if missing (with a fixed MAC address), gives it exactly the
/// IPv4 address `gateway/prefix_len`, sets it up. Returns its index.
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    mac: [u8; 6],
    gateway: Ipv4Addr,
    prefix_len: u8,
) -> Result<u32, NetworkError> {
    let link = match get(handle, name).await? {
        Some(link) => link,
        None => {
            // Without a set address a bridge takes the lowest MAC of its ports and changes it
            // as pods come and go, leaving the pods with a stale ARP entry for the gateway.
            let message = LinkBridge::new(name).address(mac.to_vec()).build();
            handle
                .link()
                .add(message)
                .execute()
                .await
                .map_err(NetworkError::netlink(format!("create bridge {name}")))?;
            get(handle, name)
                .await?
                .ok_or_else(|| NetworkError::LinkVanished(name.to_string()))?
        }
    };
    if kind(&link) != Some(&InfoKind::Bridge) {
        return Err(NetworkError::NotABridge(name.to_string()));
    }
    let index = link.header.index;
    set_up(handle, index, name).await?;
    ensure_only_address(handle, index, name, gateway, prefix_len).await?;
    Ok(index)
}

/// Creates the veth pair `host` ↔ `peer`, the peer directly inside the namespace bound at
/// `netns`: it never exists under its pod name in the node's namespace.
pub(crate) async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    netns: &Path,
) -> Result<(), NetworkError> {
    let ns = std::fs::File::open(netns)
        .map_err(NetworkError::io(format!("open {}", netns.display())))?;
    let peer = LinkUnspec::new_with_name(peer)
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    let created = handle.link().add(message).execute().await;
    drop(ns);
    created.map_err(NetworkError::netlink(format!("create veth {host}")))
}

/// Attaches link `index` to the bridge, labels it with the pod uid (its alias) and sets it up.
pub(crate) async fn attach(
    handle: &Handle,
    index: u32,
    name: &str,
    bridge: u32,
    pod_uid: &str,
) -> Result<(), NetworkError> {
    let message = LinkUnspec::new_with_index(index)
        .controller(bridge)
        .append_extra_attribute(LinkAttribute::IfAlias(pod_uid.to_string()))
        .up()
        .build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(NetworkError::netlink(format!(
            "attach {name} to the bridge"
        )))
}

pub(crate) async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(NetworkError::netlink(format!("set {name} up")))
}

/// Deletes link `index`; one already gone is fine.
pub(crate) async fn delete(handle: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    match handle.link().del(index).execute().await {
        Err(e) if errno(&e) != Some(Errno::ENODEV) => {
            Err(NetworkError::netlink(format!("delete {name}"))(e))
        }
        _ => Ok(()),
    }
}

/// Gives link `index` the IPv4 address `ip/prefix_len` and removes any other IPv4 address,
/// so a re-run after a changed allocation converges instead of piling up addresses.
async fn ensure_only_address(
    handle: &Handle,
    index: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetworkError> {
    let existing: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink(format!("list addresses of {name}")))?;
    for address in existing {
        if address.header.family != AddressFamily::Inet {
            continue;
        }
        let local = address.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(local)) => Some(*local),
            _ => None,
        });
        if local == Some(ip) && address.header.prefix_len == prefix_len {
            continue;
        }
        handle
            .address()
            .del(address)
            .execute()
            .await
            .map_err(NetworkError::netlink(format!(
                "remove a stale address of {name}"
            )))?;
    }
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix_len)
        .replace()
        .execute()
        .await
        .map_err(NetworkError::netlink(format!(
            "add {ip}/{prefix_len} to {name}"
        )))
}

/// The pod's side, run with a connection opened inside the pod's namespace: loopback up,
/// `ifname` up with `ip/prefix_len`, default route via `gateway`.
pub(crate) async fn configure_pod_side(
    handle: &Handle,
    ifname: &'static str,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> Result<(), PodSideError> {
    let lo = get(handle, "lo")
        .await?
        .ok_or(PodSideError::Missing("lo"))?;
    set_up(handle, lo.header.index, "lo").await?;
    let eth = get(handle, ifname)
        .await?
        .ok_or(PodSideError::Missing(ifname))?;
    let index = eth.header.index;
    // Up before the address: the kernel adds the connected route, which the default route's
    // gateway must be reachable through, only for an interface that is up.
    set_up(handle, index, ifname).await?;
    ensure_only_address(handle, index, ifname, ip, prefix_len).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(NetworkError::netlink(format!(
            "add default route via {gateway}"
        )))?;
    Ok(())
}

/// Why the pod's side could not be configured: an interface is missing (the veth must be
/// made again), or anything else.
#[derive(Debug)]
pub(crate) enum PodSideError {
    Missing(&'static str),
    Failed(NetworkError),
}

impl From<NetworkError> for PodSideError {
    fn from(e: NetworkError) -> Self {
        PodSideError::Failed(e)
    }
}

pub(crate) fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(-message.raw_code())),
        _ => None,
    }
}
