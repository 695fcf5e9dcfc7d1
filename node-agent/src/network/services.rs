//! The node's service interface, `berth-svc`: it holds every ClusterIP the node's proxy serves,
//! each as a /32 (a /128 for IPv6), so that the VIPs are local addresses of the node.
//!
//! ```text
//!  pod 10.244.1.2 ── default via 10.244.1.1 (berth0) ──▶ node: 10.96.0.10 is local
//!                                                        (berth-svc) ──▶ proxy 10.96.0.10:80
//!  node process ───────────────────────────────────────▶ same, over loopback
//! ```
//!
//! Nothing is sent through the interface itself: an address on it is enough for the kernel to
//! deliver packets for the VIP locally, whichever interface they came in on (the proxy, not
//! NAT, takes them on to endpoints). It is a `dummy` link, as kube-proxy's IPVS mode uses;
//! on kernels built without the dummy driver (some VM kernels) a bridge without ports stands
//! in for it, which behaves the same for this. Addresses are added before the listener on them
//! binds and removed after it is gone; every call is idempotent, so an agent restarted (or
//! killed) converges on the same state.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{Handle, LinkBridge, LinkDummy};
use tracing::info;

use super::error::NetworkError;
use super::link;

/// The service interface's name unless configured otherwise.
pub const SERVICE_INTERFACE: &str = "berth-svc";

/// The node's service interface.
#[derive(Debug, Clone)]
pub struct ServiceInterface {
    name: String,
}

impl Default for ServiceInterface {
    fn default() -> Self {
        ServiceInterface::new(SERVICE_INTERFACE.into())
    }
}

impl ServiceInterface {
    pub fn new(name: String) -> ServiceInterface {
        ServiceInterface { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the interface if missing and sets it up. Returns its index.
    pub async fn ensure(&self) -> Result<u32, NetworkError> {
        let handle = link::connect()?;
        self.ensure_with(&handle).await
    }

    async fn ensure_with(&self, handle: &Handle) -> Result<u32, NetworkError> {
        let link = match link::get(handle, &self.name).await? {
            Some(link) => link,
            None => {
                let dummy = handle
                    .link()
                    .add(LinkDummy::new(&self.name).build())
                    .execute()
                    .await;
                match dummy {
                    Ok(()) => {}
                    Err(e) if link::errno(&e) == Some(Errno::EOPNOTSUPP) => {
                        info!(
                            interface = self.name,
                            "no dummy links in this kernel: a bridge without ports holds the ClusterIPs"
                        );
                        handle
                            .link()
                            .add(LinkBridge::new(&self.name).build())
                            .execute()
                            .await
                            .map_err(NetworkError::netlink(format!("create {}", self.name)))?;
                    }
                    // Made meanwhile by someone else (another agent task): use it.
                    Err(e) if link::errno(&e) == Some(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(NetworkError::netlink(format!("create {}", self.name))(e))
                    }
                }
                link::get(handle, &self.name)
                    .await?
                    .ok_or_else(|| NetworkError::LinkVanished(self.name.clone()))?
            }
        };
        let index = link.header.index;
        link::set_up(handle, index, &self.name).await?;
        Ok(index)
    }

    /// The service addresses the interface holds (link-local IPv6 left out).
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>, NetworkError> {
        let handle = link::connect()?;
        let index = self.ensure_with(&handle).await?;
        Ok(self
            .address_messages(&handle, index)
            .await?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Adds each of `ips` the interface does not hold yet.
    pub async fn add(&self, ips: &BTreeSet<IpAddr>) -> Result<(), NetworkError> {
        let handle = link::connect()?;
        let index = self.ensure_with(&handle).await?;
        let held: BTreeSet<IpAddr> = self
            .address_messages(&handle, index)
            .await?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        for ip in ips.difference(&held) {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            handle
                .address()
                .add(index, *ip, prefix)
                .replace()
                .execute()
                .await
                .map_err(NetworkError::netlink(format!(
                    "add {ip}/{prefix} to {}",
                    self.name
                )))?;
            info!(%ip, interface = self.name, "service address added");
        }
        Ok(())
    }

    /// Removes every address but those in `keep`.
    pub async fn retain(&self, keep: &BTreeSet<IpAddr>) -> Result<(), NetworkError> {
        let handle = link::connect()?;
        let Some(link) = link::get(&handle, &self.name).await? else {
            return Ok(());
        };
        for (ip, message) in self.address_messages(&handle, link.header.index).await? {
            if keep.contains(&ip) {
                continue;
            }
            match handle.address().del(message).execute().await {
                Ok(()) => info!(%ip, interface = self.name, "service address removed"),
                Err(e) if link::errno(&e) == Some(Errno::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(NetworkError::netlink(format!(
                        "remove {ip} from {}",
                        self.name
                    ))(e))
                }
            }
        }
        Ok(())
    }

    /// Deletes the interface and with it every address (a node that stops for good).
    pub async fn remove(&self) -> Result<(), NetworkError> {
        let handle = link::connect()?;
        if let Some(link) = link::get(&handle, &self.name).await? {
            link::delete(&handle, link.header.index, &self.name).await?;
        }
        Ok(())
    }

    async fn address_messages(
        &self,
        handle: &Handle,
        index: u32,
    ) -> Result<Vec<(IpAddr, AddressMessage)>, NetworkError> {
        let messages: Vec<AddressMessage> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(NetworkError::netlink(format!(
                "list addresses of {}",
                self.name
            )))?;
        Ok(messages
            .into_iter()
            .filter_map(|message| {
                let ip = message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                let link_local =
                    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                (!link_local).then_some((ip, message))
            })
            .collect())
    }
}
