//! `RecordEvents`: the node agents' Events, many per call, written as one Raft entry.

use super::{admit, ApiService};
use crate::store::{Command, CommandResult};
use berth_proto::pb;
use berth_proto::Kind;
use tonic::Status;

/// The most events one call may carry (an agent's flush is smaller).
const MAX_EVENTS: usize = 1024;

impl ApiService {
    pub(super) async fn record_events(
        &self,
        request: pb::RecordEventsRequest,
    ) -> Result<pb::RecordEventsResponse, Status> {
        if request.events.len() > MAX_EVENTS {
            return Err(Status::invalid_argument(format!(
                "{} events in one call; at most {MAX_EVENTS}",
                request.events.len()
            )));
        }
        let mut errors = vec![String::new(); request.events.len()];
        let mut commands = Vec::new();
        let mut written = Vec::new();
        let now = jiff::Timestamp::now().to_string();
        for (i, bytes) in request.events.iter().enumerate() {
            match admit(bytes) {
                Ok(object) if object.kind() == Kind::Event => {
                    commands.push(Command::Apply {
                        object: object.to_value(),
                        uid: uuid::Uuid::new_v4().to_string(),
                        now: now.clone(),
                    });
                    written.push(i);
                }
                Ok(object) => errors[i] = format!("{} is not an Event", object.key()),
                Err(status) => errors[i] = status.message().to_string(),
            }
        }
        if !commands.is_empty() {
            match self.propose(Command::Batch(commands)).await? {
                CommandResult::Batch(results) => {
                    for (i, result) in written.into_iter().zip(results) {
                        if let CommandResult::Failed(error) = result {
                            errors[i] = error.to_string();
                        }
                    }
                }
                other => {
                    return Err(Status::internal(format!(
                        "unexpected batch result {other:?}"
                    )))
                }
            }
        }
        Ok(pb::RecordEventsResponse { errors })
    }
}
