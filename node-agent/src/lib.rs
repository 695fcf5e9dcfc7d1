//! berth's node agent: runs the pods bound to its node as containers.
//!
//! ```text
//!  agent ── watch pods (spec.nodeName = this node) ──▶ reconcile ──▶ runtime (one shim per
//!    │                                                              container: libcontainer)
//!    ├── network: bridge, pod netns, veth, addresses, routes to other nodes (netlink)
//!    ├── service proxy (berth-proxy): ClusterIPs on berth-svc, NodePorts, LoadBalancer ports
//!    ├── probes: readiness, liveness, startup
//!    └── status: pod phase, podIP, conditions, container states ──▶ control plane
//! ```

pub mod agent;
pub mod logfile;
pub mod network;
pub mod probe;
pub mod runtime;
