//! The API's half of Service allocation (see [`crate::store::allocation`]): a Service's
//! clusterIP and nodePorts are picked here, from this member's ranges, before it is proposed.

use super::errors::store_status;
use super::ApiService;
use crate::store::allocation::{self, Claim, InUse, ServiceRanges};
use berth_proto::k8s_openapi::api::core::v1::Service;
use berth_proto::{Kind, Resource};
use serde_json::Value;
use tonic::Status;

/// How often a write is retried whose picked values another Service took first.
pub(super) const ALLOCATION_ATTEMPTS: u32 = 16;

impl ApiService {
    /// Picks new Services' values from `ranges` (Kubernetes' defaults otherwise).
    pub(crate) fn with_service_ranges(mut self, ranges: ServiceRanges) -> Self {
        self.service_ranges = ranges;
        self
    }

    /// `object` as it is proposed, and the values picked for it: a Service with its clusterIP
    /// and nodePorts kept or picked, anything else as it is. `attempt` varies the picks.
    pub(super) async fn allocate(
        &self,
        object: &Resource,
        uid: &str,
        attempt: u32,
    ) -> Result<(Value, Vec<Claim>), Status> {
        let Resource::Service(service) = object else {
            return Ok((object.to_value(), Vec::new()));
        };
        // Current as of this request: a stale view would pick values already taken, or miss
        // the stored Service whose values an update keeps.
        self.linearize(false).await?;
        let (listed, _) = self.read(|store| store.list(Kind::Service, None)).await?;
        let services: Vec<Service> = listed
            .iter()
            .filter_map(|bytes| serde_json::from_slice(bytes).ok())
            .collect();
        let key = object.key();
        let existing = services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && s.metadata.name.as_deref() == Some(key.name.as_str())
        });
        let in_use = InUse::of(&services, &key);
        let mut service = (**service).clone();
        let seed = uuid::Uuid::parse_str(uid).map_or(0, |u| u.as_u64_pair().0);
        let ranges = Some(&self.service_ranges);
        let claims = allocation::allocate(
            &mut service,
            existing,
            &in_use,
            ranges,
            seed.wrapping_add(u64::from(attempt)),
        )
        .map_err(|problem| store_status(problem.into_store_error(&key)))?;
        Ok((Resource::from(service).to_value(), claims))
    }
}
