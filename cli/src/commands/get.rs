//! `berth get KIND[,KIND] [NAME...] [-n NS | -A] [-l SELECTOR] [-o yaml|json|wide|name] [-w]`

use crate::client::{self, Next, Watched};
use crate::output::{self, TableOptions};
use anyhow::{bail, Result};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{ClusterRequest, EventType, WatchRequest};
use berth_proto::{Kind, Resource, DEFAULT_NAMESPACE};
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
    Wide,
    Name,
}

#[derive(clap::Args)]
pub struct Args {
    /// What to list: a kind or several separated by commas (pods, deploy, svc, ...).
    kinds: String,
    /// Only these objects.
    names: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// List across every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only objects whose labels match (app=web,tier!=db,env in (a,b)).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[arg(short, long, value_enum)]
    output: Option<Format>,
    /// After listing, print every change as it happens.
    #[arg(short, long)]
    watch: bool,
    /// Read from the member asked without confirming with the leader: cheaper, possibly
    /// behind the latest writes.
    #[arg(long)]
    stale: bool,
}

struct Query {
    namespace: String,
    all_namespaces: bool,
    selector: String,
    names: Vec<String>,
    stale: bool,
}

impl Query {
    fn namespace_for(&self, kind: Kind) -> String {
        if self.all_namespaces || !kind.namespaced() {
            String::new()
        } else {
            self.namespace.clone()
        }
    }

    fn wants(&self, object: &Resource) -> bool {
        self.names.is_empty()
            || self
                .names
                .iter()
                .any(|n| Some(n) == object.metadata().name.as_ref())
    }
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let kinds = client::parse_kinds(&args.kinds)?;
    if args.watch && kinds.len() != 1 {
        bail!("--watch follows one kind at a time");
    }
    let query = Query {
        namespace: args
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        all_namespaces: args.all_namespaces,
        selector: args.selector.clone().unwrap_or_default(),
        names: args.names.clone(),
        stale: args.stale,
    };
    let mut api = client::connect(server.clone()).await?;
    let mut listed = Vec::new();
    for &kind in &kinds {
        let (objects, revision) = fetch(&mut api, kind, &query).await?;
        listed.push((kind, objects, revision));
    }

    let options = TableOptions {
        wide: args.output == Some(Format::Wide),
        all_namespaces: args.all_namespaces,
        show_kind: kinds.len() > 1,
        now: jiff::Timestamp::now(),
    };
    let total: usize = listed.iter().map(|(_, objects, _)| objects.len()).sum();
    match args.output {
        None | Some(Format::Wide) => {
            let tables: Vec<String> = listed
                .iter()
                .filter(|(_, objects, _)| !objects.is_empty())
                .map(|(kind, objects, _)| output::table(*kind, objects, &options))
                .collect();
            print!("{}", tables.join("\n"));
            if total == 0 && !args.watch && query.names.is_empty() {
                eprintln!("{}", nothing_found(&kinds, &query));
            }
        }
        Some(format) if args.watch => {
            // A watch's output is a stream of events: what exists now arrives as ADDED.
            for object in listed.iter().flat_map(|(_, objects, _)| objects) {
                print_event(EventType::Added, object, Some(format), &options)?;
            }
        }
        Some(format) => {
            let objects: Vec<&Resource> =
                listed.iter().flat_map(|(_, objects, _)| objects).collect();
            let single = query.names.len() == 1 && kinds.len() == 1;
            let revision = listed
                .iter()
                .map(|(_, _, revision)| *revision)
                .max()
                .unwrap_or(0);
            print_objects(format, &objects, single, revision)?;
        }
    }
    if !query.names.is_empty() && total < query.names.len() * kinds.len() && !args.watch {
        return Ok(ExitCode::FAILURE);
    }
    if args.watch {
        let (kind, _, revision) = listed.pop().expect("one kind");
        watch(
            server,
            &mut api,
            kind,
            &query,
            revision,
            args.output,
            &options,
        )
        .await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn nothing_found(kinds: &[Kind], query: &Query) -> String {
    if query.all_namespaces || kinds.iter().all(|k| !k.namespaced()) {
        "No resources found".to_string()
    } else {
        format!("No resources found in {} namespace.", query.namespace)
    }
}

/// The objects of one kind the query selects, and the revision they were read at.
async fn fetch(
    api: &mut ApiClient<Channel>,
    kind: Kind,
    query: &Query,
) -> Result<(Vec<Resource>, u64)> {
    let namespace = query.namespace_for(kind);
    if !query.names.is_empty() && query.selector.is_empty() {
        let objects = client::get_named(api, kind, &namespace, &query.names, query.stale).await?;
        let cluster = api
            .cluster(ClusterRequest {})
            .await
            .map_err(client::server_error)?;
        return Ok((objects, cluster.into_inner().revision));
    }
    let (mut objects, revision) =
        client::list(api, kind, &namespace, &query.selector, query.stale).await?;
    objects.retain(|object| query.wants(object));
    Ok((objects, revision))
}

/// One object as itself, several as a kubectl `List` whose resourceVersion is the store
/// revision they were read at.
fn print_objects(format: Format, objects: &[&Resource], single: bool, revision: u64) -> Result<()> {
    if format == Format::Name {
        for object in objects {
            println!("{}", client::display_name(&object.key()));
        }
        return Ok(());
    }
    let value = if single && objects.len() == 1 {
        objects[0].to_value()
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects.iter().map(|o| o.to_value()).collect::<Vec<_>>(),
            "metadata": {"resourceVersion": revision.to_string()},
        })
    };
    print_value(format, &value)
}

fn print_value(format: Format, value: &serde_json::Value) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        _ => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// Prints every change after `revision`; relists when the server no longer has the history.
async fn watch(
    server: Option<String>,
    api: &mut ApiClient<Channel>,
    kind: Kind,
    query: &Query,
    revision: u64,
    format: Option<Format>,
    options: &TableOptions,
) -> Result<()> {
    let request = WatchRequest {
        kind: kind.as_str().to_string(),
        namespace: query.namespace_for(kind),
        label_selector: query.selector.clone(),
        from_revision: revision,
    };
    client::follow_watch(server, api, request, async |api, watched| match watched {
        Watched::Event(event) => {
            let object = client::decode(&event.object)?;
            if query.wants(&object) {
                print_event(event.r#type(), &object, format, options)?;
            }
            Ok(Next::Continue)
        }
        Watched::Expired => {
            // History gone: start over from a fresh list.
            let (objects, fresh) = fetch(api, kind, query).await?;
            for object in &objects {
                print_event(EventType::Modified, object, format, options)?;
            }
            Ok(Next::Relisted(fresh))
        }
    })
    .await
}

fn print_event(
    event: EventType,
    object: &Resource,
    format: Option<Format>,
    options: &TableOptions,
) -> Result<()> {
    match format {
        None | Some(Format::Wide) => {
            let table = output::table(object.kind(), std::slice::from_ref(object), options);
            // The header was printed with the list; each change is one more row.
            print!(
                "{}",
                table
                    .lines()
                    .skip(1)
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
        }
        Some(Format::Name) => println!("{}", client::display_name(&object.key())),
        Some(format) => {
            let mut value = object.to_value();
            if format == Format::Json {
                value = serde_json::json!({"type": format!("{event:?}").to_uppercase(), "object": value});
            }
            print_value(format, &value)?;
            if format == Format::Yaml {
                println!("---");
            }
        }
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    Ok(())
}
