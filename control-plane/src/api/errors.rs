//! Store and Raft errors as gRPC statuses a client can act on. Codes follow Kubernetes'
//! meaning: conflict (409) is ABORTED, not found (404) NOT_FOUND, invalid (422)
//! INVALID_ARGUMENT, expired (410) OUT_OF_RANGE, no leader (503) UNAVAILABLE.

use crate::raft::MemberId;
use crate::store::{ReadError, StoreError};
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tonic::Status;

pub fn store_status(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::Conflict { .. } | StoreError::Gone { .. } | StoreError::AlreadyBound { .. } => {
            Status::aborted(message)
        }
        StoreError::NotFound { .. }
        | StoreError::NamespaceNotFound { .. }
        | StoreError::ManifestUnknown { .. } => Status::not_found(message),
        StoreError::Invalid(_) | StoreError::ServiceField { .. } => {
            Status::invalid_argument(message)
        }
    }
}

pub fn read_error_status(error: ReadError) -> Status {
    match error {
        ReadError::Expired { .. } => Status::out_of_range(error.to_string()),
        ReadError::Storage(_) => Status::internal(error.to_string()),
    }
}

fn not_leader(leader: Option<MemberId>, node: Option<&BasicNode>) -> Status {
    match (leader, node) {
        (Some(id), Some(node)) => Status::unavailable(format!(
            "this member is not the leader; member {id} at {} is",
            node.addr
        )),
        _ => Status::unavailable("no leader elected yet; retry shortly"),
    }
}

pub fn write_status(error: RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>) -> Status {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            not_leader(f.leader_id, f.leader_node.as_ref())
        }
        RaftError::APIError(e) => Status::failed_precondition(e.to_string()),
        RaftError::Fatal(e) => {
            Status::unavailable(format!("the store is shutting down or failed: {e}"))
        }
    }
}
