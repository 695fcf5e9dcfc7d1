//! berth-proto: the language every berth component speaks.
//!
//! - [`resource`]: the kinds berth serves, Kubernetes' own types from k8s-openapi.
//! - [`events`]: Events (what happened to an object): naming, repeat aggregation, the
//!   recorders' queue.
//! - [`manifest`]: YAML manifests to objects, with errors that name file, line and field.
//! - [`validation`]: the semantic checks every object passes before it is stored.
//! - [`selector`]: label selectors, parsed and matched.
//! - [`pb`]: the gRPC API (generated from `proto/berth.proto`).
//! - [`transport`]: the one place gRPC servers and channels are built.

pub mod events;
pub mod manifest;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod transport;
pub mod validation;

/// Kubernetes' types, re-exported so that every crate uses the same pinned version.
pub use k8s_openapi;
pub use resource::{Kind, ObjectKey, Resource, DEFAULT_NAMESPACE};

/// Generated gRPC messages and services.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("berth.v1");
}

impl pb::ExecInput {
    /// What the first message of an exec stream must be: the command to start.
    pub fn into_start(self) -> Result<pb::ExecStart, tonic::Status> {
        match self.input {
            Some(pb::exec_input::Input::Start(start)) if !start.command.is_empty() => Ok(start),
            Some(pb::exec_input::Input::Start(_)) => {
                Err(tonic::Status::invalid_argument("exec: no command given"))
            }
            _ => Err(tonic::Status::invalid_argument(
                "exec: the first message must name the command",
            )),
        }
    }
}

/// berth's version, as `berth version` and the Cluster RPC report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
