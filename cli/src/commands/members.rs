//! `berth members [remove ID | leave]`: the control-plane members, their roles and lag.

use crate::client;
use anyhow::Result;
use berth_proto::pb::{LeaveRequest, MembersRequest, MembersResponse, RemoveMemberRequest};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Remove a member from the cluster (it stops receiving the log; stop its process too).
    Remove { id: u64 },
    /// The member --server names leaves the cluster cleanly: it is removed from the
    /// membership, then its process stops. Its data directory cannot be started again.
    Leave,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let mut api = client::connect(server).await?;
    let response = match args.action {
        None => api.members(MembersRequest {}).await,
        Some(Action::Remove { id }) => api.remove_member(RemoveMemberRequest { id }).await,
        Some(Action::Leave) => api.leave(LeaveRequest {}).await,
    }
    .map_err(client::server_error)?
    .into_inner();
    print!("{}", table(&response));
    Ok(ExitCode::SUCCESS)
}

fn table(members: &MembersResponse) -> String {
    let mut rows = vec![["ID", "ADDRESS", "ROLE", "TERM", "MATCHED", "LAG"]
        .map(String::from)
        .to_vec()];
    for m in &members.members {
        rows.push(vec![
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            members.term.to_string(),
            m.matched_index.to_string(),
            m.lag.to_string(),
        ]);
    }
    crate::output::columns(&rows)
}
