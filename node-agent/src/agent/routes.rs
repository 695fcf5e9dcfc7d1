//! Keeps this node's routes to the other nodes' pod subnets in step with the cluster's Nodes
//! (see [`crate::network::routes`]): watched, recomputed on each change, applied when they
//! differ, and re-applied every [`RESYNC`] in case someone removed one.

use super::api::ApiConnection;
use super::informer::Informer;
use crate::network::routes::{desired_node_routes, sync_node_routes};
use k8s_openapi::api::core::v1::Node;
use std::net::IpAddr;
use std::time::Duration;
use tracing::warn;

const RESYNC: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(2);

/// Runs until the task is dropped; the routes stay (the next agent finds them).
pub async fn run(api: ApiConnection, me: String, my_address: IpAddr) {
    let mut nodes = Informer::<Node>::start(api, "Node");
    let mut applied = None;
    let mut last_error: Option<String> = None;
    loop {
        let wait = if last_error.is_some() { RETRY } else { RESYNC };
        let resync = tokio::select! {
            () = nodes.changed() => false,
            () = tokio::time::sleep(wait) => true,
        };
        let desired = {
            let nodes = nodes.current();
            if !nodes.synced {
                continue;
            }
            desired_node_routes(
                nodes.objects.values().map(|node| {
                    (
                        node.metadata.name.as_deref().unwrap_or(""),
                        node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
                        internal_ip(node),
                    )
                }),
                &me,
                my_address,
            )
        };
        if !resync && last_error.is_none() && applied.as_ref() == Some(&desired) {
            continue;
        }
        match sync_node_routes(&desired).await {
            Ok(()) => {
                applied = Some(desired);
                last_error = None;
            }
            Err(e) => {
                let error = e.to_string();
                if last_error.as_ref() != Some(&error) {
                    warn!("routes to other nodes' pods: {error}; retrying");
                }
                last_error = Some(error);
            }
        }
    }
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}
