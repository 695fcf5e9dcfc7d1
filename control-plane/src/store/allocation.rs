//! Service ClusterIPs and nodePorts: which are taken, which a Service keeps, which it gets.
//!
//! ```text
//!  API member (its --service-cluster-ip-range / --service-node-port-range)
//!    linearized read of the Services ──▶ allocate(ranges): keep what the stored Service has,
//!    check what the user gave (range, free), pick free values for the rest ──▶ Command::Apply
//!  state machine (every member, deterministic, no ranges)
//!    allocate(None) against the Services stored then: keep, refuse changes and values
//!    another Service holds ──▶ Failed(StoreError::ServiceField) ──▶ the API picks again
//! ```
//!
//! Concrete values travel in the command, like uids and timestamps, so every member applies
//! the same bytes to the same result whatever its flags. Two members that pick the same free
//! value at once are ordered by the log: the second is refused in the state machine and its
//! API retries against a store that now shows the first (a refused value the user gave is the
//! user's error). What is taken is read from the stored Services themselves, not kept in a
//! table of its own, so deleting a Service (or its namespace) or changing its type frees its
//! values with no bookkeeping to go wrong. The scan costs one pass over the Services per
//! Service write, which only Services pay.
//!
//! Kubernetes' semantics: clusterIP `None` is a headless Service (no VIP); ExternalName gets
//! no VIP and no nodePorts; a clusterIP never changes once set (except through ExternalName);
//! NodePort and LoadBalancer Services get a nodePort per port, kept across updates by port
//! name; the messages are kube-apiserver's.

use super::StoreError;
use berth_proto::k8s_openapi::api::core::v1::Service;
use berth_proto::{Kind, ObjectKey};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Where new ClusterIPs and nodePorts come from (`--service-cluster-ip-range`,
/// `--service-node-port-range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cluster_ips: Ipv4Cidr,
    pub node_ports: RangeInclusive<i32>,
}

impl Default for ServiceRanges {
    /// Kubernetes' defaults: 10.96.0.0/16 and 30000-32767.
    fn default() -> Self {
        ServiceRanges {
            cluster_ips: Ipv4Cidr {
                network: Ipv4Addr::new(10, 96, 0, 0),
                prefix: 16,
            },
            node_ports: 30000..=32767,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{0:?} is not an IPv4 CIDR like 10.96.0.0/16")]
    Cidr(String),
    #[error("{0:?} has host bits set: did you mean {1}?")]
    HostBits(String, Ipv4Cidr),
    #[error("{0:?} is too small for services: use a prefix of /30 or shorter")]
    TooSmall(String),
    #[error("{0:?} is not a port range like 30000-32767 (ports 1-65535, first ≤ last)")]
    Ports(String),
}

/// An IPv4 network, `10.96.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The addresses Services may get: all but the network and broadcast addresses.
    fn usable(&self) -> RangeInclusive<u32> {
        let first = u32::from(self.network);
        let last = first | !self.mask();
        first + 1..=last - 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = RangeError;
    fn from_str(text: &str) -> Result<Self, RangeError> {
        let bad = || RangeError::Cidr(text.to_string());
        let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        if prefix > 30 {
            return Err(RangeError::TooSmall(text.to_string()));
        }
        let cidr = Ipv4Cidr {
            network: ip,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(ip) & cidr.mask());
        if network != ip {
            let fixed = Ipv4Cidr { network, prefix };
            return Err(RangeError::HostBits(text.to_string(), fixed));
        }
        Ok(cidr)
    }
}

/// `30000-32767`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<i32>, RangeError> {
    let bad = || RangeError::Ports(text.to_string());
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: i32 = first.trim().parse().map_err(|_| bad())?;
    let last: i32 = last.trim().parse().map_err(|_| bad())?;
    if !(1..=65535).contains(&first) || !(first..=65535).contains(&last) {
        return Err(bad());
    }
    Ok(first..=last)
}

impl ServiceRanges {
    pub fn new(cluster_ips: &str, node_ports: &str) -> Result<Self, RangeError> {
        Ok(ServiceRanges {
            cluster_ips: cluster_ips.parse()?,
            node_ports: parse_port_range(node_ports)?,
        })
    }
}

/// The ClusterIPs and nodePorts Services hold, and which Service holds each.
#[derive(Debug, Default, Clone)]
pub struct InUse {
    ips: HashMap<Ipv4Addr, String>,
    node_ports: HashMap<i32, String>,
}

impl InUse {
    /// What `services` hold, but for the one at `except` (the Service being written).
    pub fn of<'a>(services: impl IntoIterator<Item = &'a Service>, except: &ObjectKey) -> Self {
        let mut in_use = InUse::default();
        for service in services {
            let meta = &service.metadata;
            let namespace = meta.namespace.as_deref().unwrap_or_default();
            let name = meta.name.as_deref().unwrap_or_default();
            if namespace == except.namespace && name == except.name {
                continue;
            }
            let holder = format!("{namespace}/{name}");
            for ip in vips(service) {
                in_use.ips.insert(ip, holder.clone());
            }
            for port in node_ports(service) {
                in_use.node_ports.insert(port, holder.clone());
            }
        }
        in_use
    }

    /// What the Services stored in the state machine's objects table hold, but `except`.
    pub(crate) fn stored(
        objects: &impl ReadableTable<&'static str, &'static [u8]>,
        except: &ObjectKey,
    ) -> Result<Self, redb::Error> {
        let prefix = format!("{}/", Kind::Service.as_str());
        let mut services = Vec::new();
        for entry in objects.range(prefix.as_str()..)? {
            let (key, value) = entry?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            match serde_json::from_slice::<Service>(value.value()) {
                Ok(service) => services.push(service),
                Err(error) => return Err(redb::Error::Corrupted(error.to_string())),
            }
        }
        Ok(InUse::of(&services, except))
    }
}

/// The state machine's step for a Service being applied (`object`, with the stored one
/// `existing`): the stored values kept, and what other stored Services hold refused. The
/// outer error is the store's; the inner one refuses this write.
pub(crate) fn admit_stored(
    objects: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &ObjectKey,
    existing: Option<&serde_json::Value>,
    object: &mut serde_json::Value,
) -> Result<Result<(), StoreError>, redb::Error> {
    let decode = |value: &serde_json::Value| serde_json::from_value::<Service>(value.clone());
    let mut service = match decode(object) {
        Ok(service) => service,
        Err(error) => return Ok(Err(StoreError::Invalid(format!("not a Service: {error}")))),
    };
    let existing = existing.and_then(|e| decode(e).ok());
    let in_use = InUse::stored(objects, key)?;
    let spec = service.spec.clone();
    if let Err(problem) = allocate(&mut service, existing.as_ref(), &in_use, None, 0) {
        return Ok(Err(problem.into_store_error(key)));
    }
    if service.spec != spec {
        object["spec"] = serde_json::to_value(&service.spec).expect("specs serialise");
    }
    Ok(Ok(()))
}

/// A value an allocation chose (rather than found in the request or the stored Service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    ClusterIp(Ipv4Addr),
    NodePort(i32),
}

impl Claim {
    /// As an error about it shows the value.
    fn shown(self) -> String {
        match self {
            Claim::ClusterIp(ip) => format!("{:?}", ip.to_string()),
            Claim::NodePort(port) => port.to_string(),
        }
    }

    /// Whether `error` refused this value: worth picking again.
    pub fn refused_by(claims: &[Claim], error: &StoreError) -> bool {
        match error {
            StoreError::ServiceField { problem, .. } => {
                let value = problem.value.as_deref();
                claims.iter().any(|c| Some(c.shown().as_str()) == value)
            }
            _ => false,
        }
    }
}

/// One problem with one field of the Service: kube-apiserver's
/// `spec.clusterIPs: Invalid value: "10.96.0.5": reason`, or the reason alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {}", match value {
    Some(value) => format!("Invalid value: {value}: {reason}"),
    None => reason.clone(),
})]
pub struct FieldProblem {
    pub field: String,
    /// The offending value as shown in the message (`"10.96.0.5"`, `30080`).
    pub value: Option<String>,
    pub reason: String,
}

impl FieldProblem {
    fn new(field: impl Into<String>, value: Option<String>, reason: impl Into<String>) -> Self {
        FieldProblem {
            field: field.into(),
            value,
            reason: reason.into(),
        }
    }

    pub fn into_store_error(self, key: &ObjectKey) -> StoreError {
        StoreError::ServiceField {
            key: key.clone(),
            problem: Box::new(self),
        }
    }
}

fn service_type(service: &Service) -> &str {
    let spec = service.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP")
}

fn has_node_ports(service: &Service) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

/// The clusterIP a Service asks for or has: `Some("")` for none given.
fn cluster_ip(service: &Service) -> &str {
    let spec = service.spec.as_ref();
    let ips = spec.and_then(|s| s.cluster_ips.as_ref());
    let first = ips.and_then(|ips| ips.first()).map(String::as_str);
    let ip = spec.and_then(|s| s.cluster_ip.as_deref());
    first.or(ip).unwrap_or_default()
}

/// The virtual IPs a Service holds (none for headless and ExternalName Services).
pub fn vips(service: &Service) -> Vec<Ipv4Addr> {
    if service_type(service) == "ExternalName" {
        return Vec::new();
    }
    let spec = service.spec.as_ref();
    let ips = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    let ips = ips
        .into_iter()
        .chain(spec.and_then(|s| s.cluster_ip.clone()));
    let ips: BTreeSet<Ipv4Addr> = ips.filter_map(|ip| ip.parse().ok()).collect();
    ips.into_iter().collect()
}

/// The nodePorts a Service holds.
pub fn node_ports(service: &Service) -> BTreeSet<i32> {
    if !has_node_ports(service) {
        return BTreeSet::new();
    }
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let ports = ports.into_iter().flatten().filter_map(|p| p.node_port);
    ports.filter(|p| *p != 0).collect()
}

/// A 64-bit stream of pseudo-random numbers (splitmix64) from a seed the caller draws: where
/// a search for a free value starts, so that members picking at once rarely collide.
struct Picks(u64);

impl Picks {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The first value of `range`, from a random start and wrapping around, that is `free`.
    fn free(&mut self, range: RangeInclusive<u32>, free: impl Fn(u32) -> bool) -> Option<u32> {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return None;
        }
        let size = u64::from(last - first) + 1;
        let start = self.next() % size;
        (0..size)
            .map(|i| first + ((start + i) % size) as u32)
            .find(|v| free(*v))
    }
}

/// Fills in and checks `service`'s ClusterIP and nodePorts against the stored Service
/// (`existing`, same namespace and name) and what other Services hold (`in_use`).
///
/// With `ranges` (the API): user-given values must be in range, and missing ones are picked
/// (from `seed`); the values picked are returned. Without (the state machine): nothing is
/// picked or range-checked, only kept and checked against what is stored.
pub fn allocate(
    service: &mut Service,
    existing: Option<&Service>,
    in_use: &InUse,
    ranges: Option<&ServiceRanges>,
    seed: u64,
) -> Result<Vec<Claim>, FieldProblem> {
    let mut picks = Picks(seed);
    let mut claims = Vec::new();
    allocate_cluster_ip(service, existing, in_use, ranges, &mut picks, &mut claims)?;
    allocate_node_ports(service, existing, in_use, ranges, &mut picks, &mut claims)?;
    Ok(claims)
}

fn allocate_cluster_ip(
    service: &mut Service,
    existing: Option<&Service>,
    in_use: &InUse,
    ranges: Option<&ServiceRanges>,
    picks: &mut Picks,
    claims: &mut Vec<Claim>,
) -> Result<(), FieldProblem> {
    let asked = cluster_ip(service).to_string();
    let external_name = service_type(service) == "ExternalName";
    // An ExternalName Service had no clusterIP to keep; one turning into ExternalName drops it.
    let kept = existing
        .filter(|e| service_type(e) != "ExternalName" && !external_name)
        .map(cluster_ip)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let spec = service.spec.get_or_insert_with(Default::default);
    if external_name {
        if !asked.is_empty() {
            let value = Some(format!("{asked:?}"));
            return Err(FieldProblem::new(
                "spec.clusterIP",
                value,
                "may not be set for type ExternalName",
            ));
        }
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        return Ok(());
    }
    let ip = match (kept, asked.as_str()) {
        (Some(kept), "") => kept,
        (Some(kept), asked) if kept == asked => kept,
        (Some(_), asked) => {
            let value = Some(format!("{asked:?}"));
            return Err(FieldProblem::new(
                "spec.clusterIP",
                value,
                "field is immutable",
            ));
        }
        (None, "None") => "None".to_string(),
        (None, "") => match ranges {
            // The state machine picks nothing: a Service written past the API stays without.
            None => return Ok(()),
            Some(ranges) => {
                let free = |ip: u32| !in_use.ips.contains_key(&Ipv4Addr::from(ip));
                let Some(ip) = picks.free(ranges.cluster_ips.usable(), free) else {
                    return Err(FieldProblem::new(
                        "spec.clusterIPs",
                        None,
                        format!(
                            "Internal error: failed to allocate a serviceIP: range is full \
                             (every address of {} is taken; delete a Service or widen \
                             --service-cluster-ip-range)",
                            ranges.cluster_ips
                        ),
                    ));
                };
                let ip = Ipv4Addr::from(ip);
                claims.push(Claim::ClusterIp(ip));
                ip.to_string()
            }
        },
        (None, asked) => {
            let value = Some(format!("{asked:?}"));
            let problem =
                |reason: String| Err(FieldProblem::new("spec.clusterIPs", value.clone(), reason));
            let Ok(ip) = asked.parse::<Ipv4Addr>() else {
                return problem("only IPv4 service addresses are supported".into());
            };
            if let Some(ranges) = ranges {
                let usable = ranges.cluster_ips.usable();
                if !usable.contains(&u32::from(ip)) {
                    return problem(format!(
                        "provided IP is not in the valid range. The range of valid IPs is {}",
                        ranges.cluster_ips
                    ));
                }
            }
            if let Some(holder) = in_use.ips.get(&ip) {
                return problem(format!(
                    "provided IP is already allocated (to Service {holder})"
                ));
            }
            ip.to_string()
        }
    };
    spec.cluster_ip = Some(ip.clone());
    spec.cluster_ips = Some(vec![ip]);
    Ok(())
}

fn allocate_node_ports(
    service: &mut Service,
    existing: Option<&Service>,
    in_use: &InUse,
    ranges: Option<&ServiceRanges>,
    picks: &mut Picks,
    claims: &mut Vec<Claim>,
) -> Result<(), FieldProblem> {
    let wanted = has_node_ports(service);
    let ports = service.spec.as_mut().and_then(|s| s.ports.as_mut());
    let ports = ports.map(Vec::as_mut_slice).unwrap_or_default();
    if !wanted {
        // Validation refuses nodePorts users give these types; what remains was kept from
        // a NodePort past and is released.
        for port in ports {
            port.node_port = None;
        }
        return Ok(());
    }
    // The stored Service's nodePorts by port name, as Kubernetes keeps them.
    let held: HashMap<String, i32> = existing
        .filter(|e| has_node_ports(e))
        .and_then(|e| e.spec.as_ref()?.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.node_port?)))
        .filter(|(_, port)| *port != 0)
        .collect();
    let own: BTreeSet<i32> = held.values().copied().collect();
    // Given by the user (or kept) in this request: (port, protocol).
    let mut taken: BTreeSet<(i32, String)> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(node_port) = port.node_port.filter(|p| *p != 0) else {
            continue;
        };
        let field = format!("spec.ports[{i}].nodePort");
        let value = Some(node_port.to_string());
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !taken.insert((node_port, protocol)) {
            return Err(FieldProblem::new(field, value, "Duplicate value"));
        }
        if own.contains(&node_port) {
            continue;
        }
        if let Some(ranges) = ranges {
            if !ranges.node_ports.contains(&node_port) {
                let (first, last) = (ranges.node_ports.start(), ranges.node_ports.end());
                return Err(FieldProblem::new(
                    field,
                    value,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {first}-{last}"
                    ),
                ));
            }
        }
        if let Some(holder) = in_use.node_ports.get(&node_port) {
            return Err(FieldProblem::new(
                field,
                value,
                format!("provided port is already allocated (to Service {holder})"),
            ));
        }
    }
    let given: BTreeSet<i32> = taken.iter().map(|(port, _)| *port).collect();
    for (i, port) in ports.iter_mut().enumerate() {
        if port.node_port.is_some_and(|p| p != 0) {
            continue;
        }
        let name = port.name.clone().unwrap_or_default();
        // The port this name had, unless this request gives it to another port.
        if let Some(kept) = held.get(&name).filter(|p| !given.contains(p)) {
            port.node_port = Some(*kept);
            continue;
        }
        let Some(ranges) = ranges else {
            continue;
        };
        let claimed: BTreeSet<i32> = claims
            .iter()
            .filter_map(|c| match c {
                Claim::NodePort(p) => Some(*p),
                Claim::ClusterIp(_) => None,
            })
            .collect();
        let free = |p: u32| {
            let p = p as i32;
            !in_use.node_ports.contains_key(&p)
                && !given.contains(&p)
                && !claimed.contains(&p)
                && !held.values().any(|h| *h == p)
        };
        let range = *ranges.node_ports.start() as u32..=*ranges.node_ports.end() as u32;
        let Some(node_port) = picks.free(range, free) else {
            return Err(FieldProblem::new(
                format!("spec.ports[{i}].nodePort"),
                None,
                format!(
                    "Internal error: failed to allocate a nodePort: range is full (every port \
                     of {}-{} is taken; delete a Service or widen --service-node-port-range)",
                    ranges.node_ports.start(),
                    ranges.node_ports.end()
                ),
            ));
        };
        let node_port = node_port as i32;
        claims.push(Claim::NodePort(node_port));
        port.node_port = Some(node_port);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    fn service(name: &str, type_: &str, ports: &[(&str, i32, Option<i32>)]) -> Service {
        Service {
            metadata: berth_proto::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, node_port)| ServicePort {
                            name: Some(name.to_string()),
                            port: *port,
                            node_port: *node_port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Service, "default", name)
    }

    fn with_ip(mut service: Service, ip: &str) -> Service {
        service.spec.as_mut().unwrap().cluster_ip = Some(ip.into());
        service
    }

    fn ranges(cidr: &str, ports: &str) -> ServiceRanges {
        ServiceRanges::new(cidr, ports).unwrap()
    }

    fn api(
        service: &mut Service,
        existing: Option<&Service>,
        others: &[Service],
        ranges: &ServiceRanges,
    ) -> Result<Vec<Claim>, FieldProblem> {
        let name = service.metadata.name.clone().unwrap();
        let in_use = InUse::of(others, &key(&name));
        allocate(service, existing, &in_use, Some(ranges), 42)
    }

    #[test]
    fn ranges_parse_like_the_flags() {
        let default = ServiceRanges::default();
        assert_eq!(ranges("10.96.0.0/16", "30000-32767"), default);
        assert_eq!(
            "10.96.0.1/16".parse::<Ipv4Cidr>(),
            Err(RangeError::HostBits(
                "10.96.0.1/16".into(),
                "10.96.0.0/16".parse().unwrap()
            ))
        );
        assert!(matches!(
            "10.96.0.0/31".parse::<Ipv4Cidr>(),
            Err(RangeError::TooSmall(_))
        ));
        assert!("fd00::/64".parse::<Ipv4Cidr>().is_err());
        assert!(parse_port_range("32767-30000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert_eq!(parse_port_range("80-80"), Ok(80..=80));
        let cidr: Ipv4Cidr = "10.96.0.0/30".parse().unwrap();
        assert_eq!(
            cidr.usable(),
            u32::from(Ipv4Addr::new(10, 96, 0, 1))..=u32::from(Ipv4Addr::new(10, 96, 0, 2))
        );
        assert!(cidr.contains(Ipv4Addr::new(10, 96, 0, 3)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 96, 0, 4)));
    }

    #[test]
    fn new_services_get_a_free_ip_and_node_ports_in_range() {
        let ranges = ranges("10.96.0.0/16", "30000-32767");
        let mut web = service(
            "web",
            "NodePort",
            &[("http", 80, None), ("https", 443, None)],
        );
        let claims = api(&mut web, None, &[], &ranges).unwrap();
        assert_eq!(claims.len(), 3, "{claims:?}");
        let spec = web.spec.as_ref().unwrap();
        let ip: Ipv4Addr = spec.cluster_ip.as_deref().unwrap().parse().unwrap();
        assert!(ranges.cluster_ips.contains(ip));
        assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
        let ports: Vec<i32> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| p.node_port.unwrap())
            .collect();
        assert!(ports.iter().all(|p| ranges.node_ports.contains(p)));
        assert_ne!(ports[0], ports[1]);
    }

    #[test]
    fn a_full_range_is_an_error_and_every_address_gets_used() {
        let ranges = ranges("10.96.0.0/30", "30000-30001");
        let mut a = service("a", "ClusterIP", &[("", 80, None)]);
        let mut b = service("b", "ClusterIP", &[("", 80, None)]);
        api(&mut a, None, &[], &ranges).unwrap();
        api(&mut b, None, &[a.clone()], &ranges).unwrap();
        let ips: BTreeSet<String> = [&a, &b].iter().map(|s| cluster_ip(s).to_string()).collect();
        let expected: BTreeSet<String> = ["10.96.0.1", "10.96.0.2"].map(String::from).into();
        assert_eq!(ips, expected);
        let mut c = service("c", "ClusterIP", &[("", 80, None)]);
        let error = api(&mut c, None, &[a.clone(), b.clone()], &ranges).unwrap_err();
        assert_eq!(error.field, "spec.clusterIPs");
        assert!(error.reason.contains("range is full"), "{error:?}");
        // Headless Services need no address.
        let mut headless = with_ip(service("h", "ClusterIP", &[("", 80, None)]), "None");
        assert_eq!(api(&mut headless, None, &[a, b], &ranges), Ok(vec![]));
        assert_eq!(cluster_ip(&headless), "None");

        let mut n = service(
            "n",
            "NodePort",
            &[("a", 80, None), ("b", 81, None), ("c", 82, None)],
        );
        let error = api(&mut n, None, &[], &ranges).unwrap_err();
        assert_eq!(error.field, "spec.ports[2].nodePort");
    }

    #[test]
    fn given_values_must_be_free_and_in_range() {
        let ranges = ranges("10.96.0.0/16", "30000-32767");
        let mut a = with_ip(
            service("a", "NodePort", &[("", 80, Some(30080))]),
            "10.96.0.5",
        );
        assert_eq!(api(&mut a, None, &[], &ranges), Ok(vec![]));
        let mut b = with_ip(service("b", "ClusterIP", &[("", 80, None)]), "10.96.0.5");
        let error = api(&mut b, None, &[a.clone()], &ranges).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.value.as_deref()),
            ("spec.clusterIPs", Some("\"10.96.0.5\""))
        );
        assert!(error.reason.starts_with("provided IP is already allocated"));
        let mut c = service("c", "NodePort", &[("", 80, Some(30080))]);
        let error = api(&mut c, None, &[a.clone()], &ranges).unwrap_err();
        assert_eq!(error.field, "spec.ports[0].nodePort");
        assert!(error
            .reason
            .starts_with("provided port is already allocated"));
        let mut d = with_ip(service("d", "ClusterIP", &[("", 80, None)]), "10.97.0.5");
        let error = api(&mut d, None, &[], &ranges).unwrap_err();
        assert!(error.reason.contains("not in the valid range"), "{error:?}");
        let mut e = service("e", "NodePort", &[("", 80, Some(40000))]);
        let error = api(&mut e, None, &[], &ranges).unwrap_err();
        assert!(error.reason.contains("30000-32767"), "{error:?}");
    }

    #[test]
    fn updates_keep_values_and_cluster_ip_is_immutable() {
        let ranges = ranges("10.96.0.0/16", "30000-32767");
        let mut stored = service("web", "NodePort", &[("http", 80, None)]);
        api(&mut stored, None, &[], &ranges).unwrap();
        // Reapplying the manifest (no clusterIP, no nodePort) keeps both, picking nothing.
        let mut again = service("web", "NodePort", &[("http", 80, None)]);
        assert_eq!(api(&mut again, Some(&stored), &[], &ranges), Ok(vec![]));
        assert_eq!(again.spec, stored.spec);
        // Naming the stored values is fine; another clusterIP is not.
        let mut same = with_ip(again.clone(), cluster_ip(&stored));
        assert_eq!(api(&mut same, Some(&stored), &[], &ranges), Ok(vec![]));
        let mut moved = with_ip(
            service("web", "NodePort", &[("http", 80, None)]),
            "10.96.9.9",
        );
        let error = api(&mut moved, Some(&stored), &[], &ranges).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.reason.as_str()),
            ("spec.clusterIP", "field is immutable")
        );
        // Headless cannot become a VIP either.
        let mut headless = with_ip(service("h", "ClusterIP", &[("", 80, None)]), "None");
        api(&mut headless, None, &[], &ranges).unwrap();
        let mut vip = with_ip(service("h", "ClusterIP", &[("", 80, None)]), "10.96.1.1");
        assert!(api(&mut vip, Some(&headless), &[], &ranges).is_err());
    }

    #[test]
    fn type_changes_allocate_and_release_node_ports() {
        let ranges = ranges("10.96.0.0/16", "30000-32767");
        let mut stored = service("web", "ClusterIP", &[("http", 80, None)]);
        api(&mut stored, None, &[], &ranges).unwrap();
        let mut node_port = service("web", "NodePort", &[("http", 80, None)]);
        let claims = api(&mut node_port, Some(&stored), &[], &ranges).unwrap();
        assert!(matches!(claims[..], [Claim::NodePort(_)]), "{claims:?}");
        assert_eq!(cluster_ip(&node_port), cluster_ip(&stored));
        assert_eq!(node_ports(&node_port).len(), 1);
        let mut back = service("web", "ClusterIP", &[("http", 80, None)]);
        assert_eq!(api(&mut back, Some(&node_port), &[], &ranges), Ok(vec![]));
        assert!(node_ports(&back).is_empty());
        assert_eq!(
            back.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
            None
        );
        // ExternalName drops the VIP; back to ClusterIP gets a new one.
        let mut external = service("web", "ExternalName", &[]);
        external.spec.as_mut().unwrap().external_name = Some("example.com".into());
        assert_eq!(api(&mut external, Some(&back), &[], &ranges), Ok(vec![]));
        assert!(vips(&external).is_empty() && cluster_ip(&external).is_empty());
        let mut again = service("web", "ClusterIP", &[("http", 80, None)]);
        let claims = api(&mut again, Some(&external), &[], &ranges).unwrap();
        assert!(matches!(claims[..], [Claim::ClusterIp(_)]), "{claims:?}");
    }

    #[test]
    fn the_state_machine_keeps_and_refuses_but_never_picks() {
        let ranges = ranges("10.96.0.0/16", "30000-32767");
        let mut a = service("a", "NodePort", &[("", 80, None)]);
        let claims = api(&mut a, None, &[], &ranges).unwrap();
        // Another member picked the same values for b at the same time: refused, retried.
        let mut b = with_ip(service("b", "NodePort", &[("", 80, None)]), cluster_ip(&a));
        b.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port =
            node_ports(&a).first().copied();
        let in_use = InUse::of([&a], &key("b"));
        let error = allocate(&mut b, None, &in_use, None, 0).unwrap_err();
        let error = error.into_store_error(&key("b"));
        assert!(Claim::refused_by(&claims, &error), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "service/b in namespace default is invalid:\nspec.clusterIPs: Invalid value: \"{}\": provided IP is already allocated (to Service default/a)",
                cluster_ip(&a)
            )
        );
        // A Service without values stays so; a stored one keeps its own.
        let mut bare = service("c", "NodePort", &[("", 80, None)]);
        assert_eq!(allocate(&mut bare, None, &in_use, None, 0), Ok(vec![]));
        assert!(cluster_ip(&bare).is_empty() && node_ports(&bare).is_empty());
        let mut reapplied = service("a", "NodePort", &[("", 80, None)]);
        let in_use = InUse::of([&b], &key("a"));
        assert_eq!(
            allocate(&mut reapplied, Some(&a), &in_use, None, 0),
            Ok(vec![])
        );
        assert_eq!(reapplied.spec, a.spec);
    }
}
