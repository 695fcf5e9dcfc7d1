//! `berth describe KIND [NAME...]`: each object's details, ending with the events about it.

use crate::client;
use crate::output;
use anyhow::Result;
use berth_proto::{Kind, Resource, DEFAULT_NAMESPACE};
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
    let kind: Kind = args.kind.parse()?;
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
    // Events about namespaced objects live in their namespace; about cluster-scoped ones
    // (Nodes), in any (Kubernetes records them in `default`).
    let events_namespace = if kind.namespaced() {
        namespace.as_str()
    } else {
        ""
    };
    let events = match objects.is_empty() || kind == Kind::Event {
        true => Vec::new(),
        false => client::list(&mut api, Kind::Event, events_namespace, "", false)
            .await?
            .0
            .into_iter()
            .filter_map(|object| match object {
                Resource::Event(event) => Some(*event),
                _ => None,
            })
            .collect(),
    };
    // A Service's Endpoints line comes from its EndpointSlices.
    let slices = match objects.is_empty() || kind != Kind::Service {
        true => Vec::new(),
        false => client::list(&mut api, Kind::EndpointSlice, &namespace, "", false)
            .await?
            .0
            .into_iter()
            .filter_map(|object| match object {
                Resource::EndpointSlice(slice) => Some(*slice),
                _ => None,
            })
            .collect(),
    };
    let now = jiff::Timestamp::now();
    let texts: Vec<String> = objects
        .iter()
        .map(|o| output::describe(o, &events, &slices, now))
        .collect();
    print!("{}", texts.join("\n\n"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
