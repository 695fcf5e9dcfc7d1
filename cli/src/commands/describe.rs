//! `berth describe KIND [NAME...]`

use crate::client;
use crate::output;
use anyhow::Result;
use berth_proto::pb::{GetRequest, ListRequest};
use berth_proto::{ObjectKey, DEFAULT_NAMESPACE};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The kind (pods, deploy, svc, ...).
    kind: String,
    /// The objects; all of the kind in the namespace when none is named.
    names: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let kind: berth_proto::Kind = args.kind.parse()?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let mut api = client::connect(server).await?;
    let mut objects = Vec::new();
    let mut failed = false;
    if args.names.is_empty() {
        let namespace = if kind.namespaced() {
            namespace.clone()
        } else {
            String::new()
        };
        let request = ListRequest {
            kind: kind.as_str().into(),
            namespace,
            label_selector: String::new(),
            stale_ok: false,
        };
        for bytes in api
            .list(request)
            .await
            .map_err(client::server_error)?
            .into_inner()
            .objects
        {
            objects.push(client::decode(&bytes)?);
        }
    } else {
        for name in &args.names {
            let key = ObjectKey::new(kind, &namespace, name);
            match api
                .get(GetRequest {
                    object: Some(client::object_ref(&key)),
                    stale_ok: false,
                })
                .await
            {
                Ok(response) => objects.push(client::decode(&response.into_inner().object)?),
                Err(status) => {
                    failed = true;
                    eprintln!("{}", client::server_error(status));
                }
            }
        }
    }
    let now = jiff::Timestamp::now();
    let texts: Vec<String> = objects.iter().map(|o| output::describe(o, now)).collect();
    print!("{}", texts.join("\n\n"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
