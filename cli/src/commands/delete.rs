//! `berth delete KIND NAME...` or `berth delete -f FILE`.

use crate::client;
use anyhow::{bail, Result};
use berth_proto::pb::DeleteRequest;
use berth_proto::{ObjectKey, DEFAULT_NAMESPACE};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// KIND followed by one or more NAMEs (kinds accept kubectl's short names).
    args: Vec<String>,
    /// Delete the objects these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Treat "not found" as success.
    #[arg(long)]
    ignore_not_found: bool,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let keys: Vec<ObjectKey> = if !args.files.is_empty() {
        if !args.args.is_empty() {
            bail!("give either -f FILE or KIND NAME, not both");
        }
        match berth_proto::manifest::load(&args.files) {
            Ok(objects) => objects.iter().map(|o| o.resource.key()).collect(),
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            bail!("name what to delete: berth delete KIND NAME... or berth delete -f FILE");
        };
        if names.is_empty() {
            bail!("name the {kind} to delete: berth delete {kind} NAME");
        }
        let kind: berth_proto::Kind = kind.parse()?;
        let namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        names
            .iter()
            .map(|name| ObjectKey::new(kind, namespace, name))
            .collect()
    };

    let mut api = client::connect(server).await?;
    let mut failed = false;
    for key in keys {
        let request = DeleteRequest {
            object: Some(client::object_ref(&key)),
            resource_version: 0,
        };
        match api.delete(request).await {
            Ok(_) => println!("{} \"{}\" deleted", key.kind.qualified_name(), key.name),
            Err(status) if status.code() == tonic::Code::NotFound && args.ignore_not_found => {}
            Err(status) => {
                failed = true;
                eprintln!("{}", client::server_error(status));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
