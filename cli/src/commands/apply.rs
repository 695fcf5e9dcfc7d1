//! `berth apply -f FILE|DIR|-`: create or update every object in the manifests. Nothing is
//! sent unless every document parses and validates.

use crate::client;
use anyhow::Result;
use berth_proto::pb::{ApplyOutcome, ApplyRequest};
use berth_proto::Kind;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files, directories of them, or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Decide what would change (created/configured/unchanged) without storing anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let mut objects = match berth_proto::manifest::load(&args.files) {
        Ok(objects) => objects,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in objects.iter().flat_map(|o| &o.warnings) {
        eprintln!("{warning}");
    }
    // Namespaces first, so that objects in a new namespace can land in the same apply.
    objects.sort_by_key(|o| o.resource.kind() != Kind::Namespace);

    let mut api = client::connect(server).await?;
    let mut failed = false;
    for object in objects {
        let key = object.resource.key();
        let request = ApplyRequest {
            object: object.resource.to_json(),
            dry_run: args.dry_run,
        };
        match api.apply(request).await {
            Ok(response) => {
                let outcome = match response.into_inner().outcome() {
                    ApplyOutcome::Created => "created",
                    ApplyOutcome::Configured => "configured",
                    ApplyOutcome::Unchanged | ApplyOutcome::Unspecified => "unchanged",
                };
                let suffix = if args.dry_run { " (dry run)" } else { "" };
                println!("{} {outcome}{suffix}", client::display_name(&key));
            }
            Err(status) => {
                failed = true;
                eprintln!(
                    "{}:{}: {}",
                    object.file,
                    object.line,
                    client::server_error(status)
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
