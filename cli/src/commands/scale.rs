//! `berth scale deploy NAME... --replicas N [--current-replicas N]`: sets spec.replicas of
//! Deployments and ReplicaSets, as `kubectl scale` does.
//!
//! Also home of what `berth rollout` shares with it: naming objects kubectl's two ways
//! (`deploy a b` and `deploy/a rs/b`), changing an object conditionally on the version read
//! ([`edit_object`]), so a controller's concurrent write is never overwritten, and acting on
//! each named object in turn ([`for_each_object`]).

use crate::client;
use anyhow::{bail, Context, Result};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{ApplyRequest, GetRequest};
use berth_proto::{Kind, ObjectKey, DEFAULT_NAMESPACE};
use serde_json::Value;
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// What to scale: TYPE NAME... (`deploy web api`) or TYPE/NAME... (`deploy/web rs/x`).
    #[arg(required = true, value_name = "TYPE NAME... | TYPE/NAME...")]
    resources: Vec<String>,
    /// The new number of replicas.
    #[arg(long, allow_negative_numbers = true)]
    replicas: i64,
    /// Only scale if spec.replicas is this now (a precondition, like kubectl's).
    #[arg(long, allow_negative_numbers = true)]
    current_replicas: Option<i64>,
    #[arg(short, long)]
    namespace: Option<String>,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    if args.replicas < 0 || args.replicas > i64::from(i32::MAX) {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let targets = parse_targets(&args.resources)?;
    for (kind, _) in &targets {
        if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
            bail!(
                "{} cannot be scaled: berth scales deployments and replicasets",
                kind.plural()
            );
        }
    }
    let namespace = args
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let keys = targets
        .into_iter()
        .map(|(kind, name)| ObjectKey::new(kind, &namespace, &name));
    let mut api = client::connect(server).await?;
    let code = for_each_object(&mut api, keys, async |api, key| {
        edit_object(api, key, |object| {
            let current = object["spec"]["replicas"].as_i64().unwrap_or(1);
            if let Some(expected) = args.current_replicas {
                if current != expected {
                    bail!("Expected replicas to be {expected}, was {current}");
                }
            }
            if current == args.replicas {
                return Ok(false);
            }
            object["spec"]["replicas"] = args.replicas.into();
            Ok(true)
        })
        .await?;
        // kubectl says "scaled" also when the count already was the one asked for.
        Ok("scaled".to_string())
    })
    .await;
    Ok(code)
}

/// Runs `step` on each object in turn, printing `KIND/NAME <what it did>` or the error; like
/// kubectl, one failure does not stop the others, but fails the command.
pub async fn for_each_object(
    api: &mut ApiClient<Channel>,
    keys: impl IntoIterator<Item = ObjectKey>,
    mut step: impl AsyncFnMut(&mut ApiClient<Channel>, &ObjectKey) -> Result<String>,
) -> ExitCode {
    let mut failed = false;
    for key in keys {
        match step(api, &key).await {
            Ok(done) => println!("{} {done}", client::display_name(&key)),
            Err(error) => {
                eprintln!("error: {error:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The objects a command line names, kubectl's two ways: `TYPE NAME...` or `TYPE/NAME...`.
pub fn parse_targets(args: &[String]) -> Result<Vec<(Kind, String)>> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource and its name, as TYPE NAME or TYPE/NAME");
    };
    let mut targets = Vec::new();
    if first.contains('/') {
        for arg in args {
            let Some((kind, name)) = arg
                .split_once('/')
                .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            else {
                bail!("{arg:?}: there is no need to give a resource type as a separate argument when passing arguments in TYPE/NAME form");
            };
            targets.push((kind.parse::<Kind>()?, name.to_string()));
        }
    } else {
        let kind = first.parse::<Kind>()?;
        if args.len() == 1 {
            bail!(
                "a resource type ({}) was given, but no name: TYPE NAME or TYPE/NAME",
                kind.plural()
            );
        }
        for name in &args[1..] {
            if name.contains('/') {
                bail!("{name:?}: give either TYPE NAME... or TYPE/NAME..., not both");
            }
            targets.push((kind, name.clone()));
        }
    }
    Ok(targets)
}

/// Reads the object, lets `edit` change it, and writes it back conditional on the version
/// read; a conflict (a controller wrote in between) reads again. `edit` returns whether there
/// is anything to write; so does this.
pub async fn edit_object(
    api: &mut ApiClient<Channel>,
    key: &ObjectKey,
    mut edit: impl FnMut(&mut Value) -> Result<bool>,
) -> Result<bool> {
    for _ in 0..10 {
        let mut object = get_value(api, key).await?;
        if !edit(&mut object)? {
            return Ok(false);
        }
        let request = ApplyRequest {
            object: serde_json::to_vec(&object)?,
            dry_run: false,
        };
        match api.apply(request).await {
            Ok(_) => return Ok(true),
            // The object carries the resourceVersion read: someone wrote since.
            Err(status) if status.code() == tonic::Code::Aborted => continue,
            Err(status) => return Err(client::server_error(status)),
        }
    }
    bail!("{} kept changing: try again", client::display_name(key))
}

/// One object as JSON, linearizably read.
pub async fn get_value(api: &mut ApiClient<Channel>, key: &ObjectKey) -> Result<Value> {
    let response = api
        .get(GetRequest {
            object: Some(client::object_ref(key)),
            stale_ok: false,
        })
        .await
        .map_err(client::server_error)?;
    serde_json::from_slice(&response.into_inner().object)
        .with_context(|| format!("decoding {}", client::display_name(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_are_named_either_way() {
        assert_eq!(
            parse_targets(&args(&["deploy", "a", "b"])).unwrap(),
            [
                (Kind::Deployment, "a".into()),
                (Kind::Deployment, "b".into())
            ]
        );
        assert_eq!(
            parse_targets(&args(&["deployment.apps/a", "rs/b"])).unwrap(),
            [
                (Kind::Deployment, "a".into()),
                (Kind::ReplicaSet, "b".into())
            ]
        );
        assert!(parse_targets(&args(&["deploy"])).is_err());
        assert!(parse_targets(&args(&["deploy", "rs/b"])).is_err());
        assert!(parse_targets(&args(&["deploy/a", "b"])).is_err());
        assert!(parse_targets(&args(&["widgets", "a"])).is_err());
    }
}
