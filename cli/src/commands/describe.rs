//! `berth describe KIND [NAME...]`

use crate::client;
use crate::output;
use anyhow::Result;
use berth_proto::DEFAULT_NAMESPACE;
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
    let objects = if args.names.is_empty() {
        client::list(&mut api, kind, &namespace, "", false).await?.0
    } else {
        client::get_named(&mut api, kind, &namespace, &args.names, false).await?
    };
    let failed = objects.len() < args.names.len();
    let now = jiff::Timestamp::now();
    let texts: Vec<String> = objects.iter().map(|o| output::describe(o, now)).collect();
    print!("{}", texts.join("\n\n"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
