//! What a pod asks of a node: its effective CPU and memory requests, added up the way
//! kube-scheduler does (containers summed; init containers run one at a time, so only the
//! largest counts; sidecars, init containers with `restartPolicy: Always`, run beside
//! everything after them; pod overhead on top).

use berth_proto::k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use berth_proto::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use berth_proto::quantity::{self, QuantityError};
use std::collections::BTreeMap;

/// Kubernetes' stand-ins for a container that requests nothing, used only when scoring, so that
/// pods without requests still spread by load (`DefaultMilliCPURequest`, `DefaultMemoryRequest`).
const DEFAULT_CPU_MILLIS: i64 = 100;
const DEFAULT_MEMORY_BYTES: i64 = 200 * 1024 * 1024;

/// An amount of CPU and memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

impl Resources {
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// A pod's requests twice over: as they are, to check that it fits, and with the defaults for
/// anything unrequested, to score nodes by load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub fit: Resources,
    pub score: Resources,
}

impl PodRequests {
    fn plus(self, other: PodRequests) -> PodRequests {
        PodRequests {
            fit: self.fit.plus(other.fit),
            score: self.score.plus(other.score),
        }
    }

    fn max(self, other: PodRequests) -> PodRequests {
        PodRequests {
            fit: self.fit.max(other.fit),
            score: self.score.max(other.score),
        }
    }
}

/// A request the scheduler cannot read. Validation refuses these before they are stored, so
/// this only meets objects stored by an older, laxer berth.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct RequestError {
    /// Where the quantity is, e.g. `spec.containers[0].resources.requests[cpu]`.
    pub field: String,
    #[source]
    pub source: QuantityError,
}

/// The requests `pod` needs a node to have free.
pub fn pod_requests(pod: &Pod) -> Result<PodRequests, RequestError> {
    let Some(spec) = &pod.spec else {
        return Ok(PodRequests::default());
    };
    let mut total = PodRequests::default();
    for (i, container) in spec.containers.iter().enumerate() {
        total = total.plus(container_requests(
            container,
            &format!("spec.containers[{i}]"),
        )?);
    }
    // Sidecars started so far keep running while later init containers run.
    let mut sidecars = PodRequests::default();
    let mut init_peak = PodRequests::default();
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        let requests = container_requests(container, &format!("spec.initContainers[{i}]"))?;
        let running = if container.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.plus(requests);
            sidecars
        } else {
            requests.plus(sidecars)
        };
        init_peak = init_peak.max(running);
    }
    total = total.plus(sidecars).max(init_peak);

    // Pod-level resources, where set, replace what the containers add up to.
    if let Some(pod_level) = &spec.resources {
        let cpu = requested(pod_level, "cpu", "spec.resources", quantity::cpu_millis)?;
        let memory = requested(pod_level, "memory", "spec.resources", quantity::bytes)?;
        if let Some(cpu) = cpu {
            total.fit.cpu_millis = cpu;
            total.score.cpu_millis = cpu;
        }
        if let Some(memory) = memory {
            total.fit.memory_bytes = memory;
            total.score.memory_bytes = memory;
        }
    }

    if let Some(overhead) = &spec.overhead {
        let overhead = Resources {
            cpu_millis: amount(overhead, "cpu", "spec.overhead", quantity::cpu_millis)?
                .unwrap_or(0),
            memory_bytes: amount(overhead, "memory", "spec.overhead", quantity::bytes)?
                .unwrap_or(0),
        };
        total = total.plus(PodRequests {
            fit: overhead,
            score: overhead,
        });
    }
    Ok(total)
}

fn container_requests(container: &Container, path: &str) -> Result<PodRequests, RequestError> {
    let path = format!("{path}.resources");
    let (cpu, memory) = match &container.resources {
        Some(resources) => (
            requested(resources, "cpu", &path, quantity::cpu_millis)?,
            requested(resources, "memory", &path, quantity::bytes)?,
        ),
        None => (None, None),
    };
    Ok(PodRequests {
        fit: Resources {
            cpu_millis: cpu.unwrap_or(0),
            memory_bytes: memory.unwrap_or(0),
        },
        // An explicit zero stays zero, as in Kubernetes; only a missing request is defaulted.
        score: Resources {
            cpu_millis: cpu.unwrap_or(DEFAULT_CPU_MILLIS),
            memory_bytes: memory.unwrap_or(DEFAULT_MEMORY_BYTES),
        },
    })
}

/// The request for `name`, or the limit when only a limit is given: the API server's defaulting
/// in Kubernetes, which berth does not store, so the scheduler applies it.
fn requested(
    resources: &ResourceRequirements,
    name: &str,
    path: &str,
    parse: fn(&Quantity) -> Result<i64, QuantityError>,
) -> Result<Option<i64>, RequestError> {
    match &resources.requests {
        Some(requests) if requests.contains_key(name) => {
            amount(requests, name, &format!("{path}.requests"), parse)
        }
        _ => match &resources.limits {
            Some(limits) => amount(limits, name, &format!("{path}.limits"), parse),
            None => Ok(None),
        },
    }
}

fn amount(
    quantities: &BTreeMap<String, Quantity>,
    name: &str,
    path: &str,
    parse: fn(&Quantity) -> Result<i64, QuantityError>,
) -> Result<Option<i64>, RequestError> {
    quantities
        .get(name)
        .map(|q| {
            parse(q).map_err(|source| RequestError {
                field: format!("{path}[{name}]"),
                source,
            })
        })
        .transpose()
}
