//! Routes to the other nodes' pod subnets, host-gw style: `<podCIDR> via <node InternalIP>` in
//! the main table for every other node, which must share an L2 segment with this one (the
//! e2e hosts share a switch). With them a pod, or the proxy on this node, reaches pods on
//! every node by their own addresses, and replies find their way back the same way.
//!
//! The agent's routes carry their own protocol number ([`ROUTE_PROTOCOL`], shown by `ip
//! route` as `proto 98`), which is how a restarted agent tells them from anyone else's: it
//! removes those no node wants any more and leaves every other route alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::RouteMessageBuilder;
use tracing::info;

use super::error::NetworkError;
use super::link;

/// The `rtm_protocol` of the agent's routes ('b').
pub const ROUTE_PROTOCOL: u8 = 98;

/// Makes the agent's routes exactly `desired` (pod subnet → the node address it is reached
/// through): stale ones removed, missing or changed ones (re)placed. Idempotent.
pub async fn sync_node_routes(desired: &BTreeMap<Ipv4Net, Ipv4Addr>) -> Result<(), NetworkError> {
    let handle = link::connect()?;
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(NetworkError::netlink("list routes"))?;
    let mut present = BTreeMap::new();
    for route in routes {
        if route.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
            || route.header.table != RouteHeader::RT_TABLE_MAIN
        {
            continue;
        }
        let (Some(subnet), gateway) = (destination(&route), gateway(&route)) else {
            continue;
        };
        if gateway.is_some() && desired.get(&subnet) == gateway.as_ref() {
            present.insert(subnet, route);
            continue;
        }
        match handle.route().del(route).execute().await {
            Ok(()) => info!(%subnet, "route to a pod subnet removed"),
            Err(e) if link::errno(&e) == Some(Errno::ESRCH) => {}
            Err(e) => return Err(NetworkError::netlink(format!("remove route {subnet}"))(e)),
        }
    }
    let mut failed = None;
    for (subnet, via) in desired {
        if present.contains_key(subnet) {
            continue;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .gateway(*via)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        // One unreachable node (not on this segment) must not keep the others' routes out.
        match handle.route().add(route).replace().execute().await {
            Ok(()) => info!(%subnet, %via, "route to a pod subnet added"),
            Err(e) => {
                failed.get_or_insert(NetworkError::netlink(format!(
                    "add route {subnet} via {via}"
                ))(e));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

fn destination(route: &RouteMessage) -> Option<Ipv4Net> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Ipv4Net::new(*ip, route.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

fn gateway(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// The routes this node needs: each other node's pod subnet via its InternalIP. Nodes without
/// either, and IPv6 ones, are left out (routes only IPv4 pod networks, as the bridge does).
pub fn desired_node_routes<'a>(
    nodes: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<IpAddr>)>,
    me: &str,
    my_address: IpAddr,
) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    nodes
        .into_iter()
        .filter(|(name, _, _)| *name != me)
        .filter_map(|(_, pod_cidr, address)| {
            let subnet: Ipv4Net = pod_cidr?.parse().ok()?;
            match address? {
                IpAddr::V4(via) if IpAddr::V4(via) != my_address => Some((subnet.trunc(), via)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_go_to_every_other_node_with_a_subnet_and_an_address() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let nodes = [
            ("node-1", Some("10.244.1.0/24"), ip("10.77.0.1")),
            ("node-2", Some("10.244.2.0/24"), ip("10.77.0.2")),
            ("node-3", None, ip("10.77.0.3")),
            ("node-4", Some("10.244.4.0/24"), None),
            ("node-5", Some("10.244.5.0/24"), ip("fd00::5")),
            ("node-6", Some("not a subnet"), ip("10.77.0.6")),
            // Another Node object for this host's address: never a route via itself.
            ("alias", Some("10.244.7.0/24"), ip("10.77.0.1")),
        ];
        let routes = desired_node_routes(nodes, "node-1", "10.77.0.1".parse().unwrap());
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            [(
                "10.244.2.0/24".parse::<Ipv4Net>().unwrap(),
                "10.77.0.2".parse::<Ipv4Addr>().unwrap()
            )]
        );
    }
}
