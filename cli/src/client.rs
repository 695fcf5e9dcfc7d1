//! Finding the cluster and talking to it: `--server`, then `BERTH_SERVER` (both through clap),
//! then the config file `berth server --init` writes.

use anyhow::{bail, Context, Result};
use berth_proto::pb::api_client::ApiClient;
use berth_proto::pb::{WatchEvent, WatchRequest};
use berth_proto::{Kind, ObjectKey, Resource};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tonic::transport::Channel;

/// The client config file: where the cluster is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
}

/// `$XDG_CONFIG_HOME/berth/config.yaml`, or `~/.config/berth/config.yaml`.
pub fn config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"));
    base.join("berth").join("config.yaml")
}

/// `$XDG_DATA_HOME/berth`, or `~/.local/share/berth`.
pub fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local").join("share"))
        .join("berth")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

pub fn write_config(config: &ClientConfig) -> Result<PathBuf> {
    let path = config_path();
    std::fs::create_dir_all(path.parent().expect("config path has a parent"))
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::write(&path, serde_yaml::to_string(config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn server_address(flag: Option<String>) -> Result<String> {
    if let Some(server) = flag.filter(|s| !s.is_empty()) {
        return Ok(server);
    }
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let config: ClientConfig =
                serde_yaml::from_str(&text).with_context(|| format!("reading the client config {}", path.display()))?;
            Ok(config.server)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no server given: pass --server ADDR, set BERTH_SERVER, or start one with `berth server --init` (which writes {})",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading the client config {}", path.display())),
    }
}

/// The control-plane addresses `ADDR[,ADDR...]` the flags or config give.
pub fn server_addresses(flag: Option<String>) -> Result<Vec<String>> {
    let addrs: Vec<String> = server_address(flag)?
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        bail!("no server address given");
    }
    Ok(addrs)
}

/// A connected API client; an unreachable server is one clear line.
/// `ADDR[,ADDR...]`: the first member that answers is used, so a client given every member's
/// address keeps working while some are down.
pub async fn connect(flag: Option<String>) -> Result<ApiClient<Channel>> {
    let addrs = server_address(flag)?;
    let mut errors = Vec::new();
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match berth_proto::transport::connect(addr).await {
            Ok(channel) => return Ok(ApiClient::new(channel).max_decoding_message_size(64 << 20)),
            Err(error) => errors.push(error.to_string()),
        }
    }
    match errors.len() {
        0 => bail!("no server address given"),
        1 => bail!("{}", errors[0]),
        _ => bail!("no member reachable: {}", errors.join("; ")),
    }
}

/// Whether a failed call may succeed through another member (the one asked is down or cut
/// off), as opposed to an answer about the request itself.
pub fn member_unavailable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// What a watch followed by [`follow_watch`] delivers.
pub enum Watched {
    Event(WatchEvent),
    /// The server no longer has the history from the revision asked for: relist.
    Expired,
}

/// What [`follow_watch`] does after a step.
pub enum Next<T> {
    Continue,
    /// Relisted (after [`Watched::Expired`]) at this revision: watch on from there.
    Relisted(u64),
    Done(T),
}

/// Watches as `request` asks, handing every change to `step` until it says it is done. A
/// stream the server ends (it restarted, say) is picked up again from the last revision
/// seen, through whichever of the `server` members answers.
pub async fn follow_watch<T>(
    server: Option<String>,
    api: &mut ApiClient<Channel>,
    mut request: WatchRequest,
    mut step: impl AsyncFnMut(&mut ApiClient<Channel>, Watched) -> Result<Next<T>>,
) -> Result<T> {
    use futures::StreamExt;
    loop {
        let mut stream = match api.watch(request.clone()).await {
            Ok(stream) => stream.into_inner(),
            Err(status) if member_unavailable(&status) => {
                reconnect(&server, api).await?;
                continue;
            }
            Err(status) => return Err(server_error(status)),
        };
        while let Some(item) = stream.next().await {
            let next = match item {
                Ok(event) => {
                    request.from_revision = event.revision;
                    step(api, Watched::Event(event)).await?
                }
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    step(api, Watched::Expired).await?
                }
                Err(status) if member_unavailable(&status) => {
                    reconnect(&server, api).await?;
                    break;
                }
                Err(status) => return Err(server_error(status)),
            };
            match next {
                Next::Continue => {}
                Next::Relisted(revision) => {
                    request.from_revision = revision;
                    break;
                }
                Next::Done(value) => return Ok(value),
            }
        }
    }
}

async fn reconnect(server: &Option<String>, api: &mut ApiClient<Channel>) -> Result<()> {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    *api = connect(server.clone()).await?;
    Ok(())
}

/// A server error as one line, like kubectl's "Error from server (NotFound): ...".
pub fn server_error(status: tonic::Status) -> anyhow::Error {
    let reason = match status.code() {
        tonic::Code::NotFound => "NotFound",
        tonic::Code::Aborted => "Conflict",
        tonic::Code::InvalidArgument => "Invalid",
        tonic::Code::OutOfRange => "Expired",
        tonic::Code::Unavailable => "ServiceUnavailable",
        tonic::Code::DeadlineExceeded => "Timeout",
        _ => "InternalError",
    };
    anyhow::anyhow!("Error from server ({reason}): {}", status.message())
}

pub fn decode(bytes: &[u8]) -> Result<Resource> {
    Resource::from_json(bytes).context("the server sent an object this client cannot read")
}

/// The kinds a comma-separated argument names (`deploy,svc`); `all` is kubectl's set of
/// workload kinds.
pub fn parse_kinds(arg: &str) -> Result<Vec<Kind>> {
    let mut kinds = Vec::new();
    for name in arg.split(',').filter(|s| !s.is_empty()) {
        if name == "all" {
            kinds.extend([Kind::Pod, Kind::Service, Kind::Deployment, Kind::ReplicaSet]);
        } else {
            kinds.push(name.parse::<Kind>()?);
        }
    }
    kinds.dedup();
    Ok(kinds)
}

pub fn object_ref(key: &ObjectKey) -> berth_proto::pb::ObjectRef {
    berth_proto::pb::ObjectRef {
        kind: key.kind.as_str().to_string(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// `deployment.apps/web`, as kubectl names an object in its messages.
pub fn display_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.kind.qualified_name(), key.name)
}

/// The named objects of one kind; each one that cannot be read is reported on stderr and
/// left out. `stale`: served by the member asked from what it has applied, possibly behind the
/// leader (cheaper); otherwise linearizable.
pub async fn get_named(
    api: &mut ApiClient<Channel>,
    kind: Kind,
    namespace: &str,
    names: &[String],
    stale: bool,
) -> Result<Vec<Resource>> {
    let mut objects = Vec::with_capacity(names.len());
    for name in names {
        let key = ObjectKey::new(kind, namespace, name);
        let request = berth_proto::pb::GetRequest {
            object: Some(object_ref(&key)),
            stale_ok: stale,
        };
        match api.get(request).await {
            Ok(response) => objects.push(decode(&response.into_inner().object)?),
            Err(status) => eprintln!("{}", server_error(status)),
        }
    }
    Ok(objects)
}

/// Every object of one kind in `namespace` (all namespaces when empty) that `selector`
/// matches, and the store revision they were read at.
pub async fn list(
    api: &mut ApiClient<Channel>,
    kind: Kind,
    namespace: &str,
    selector: &str,
    stale: bool,
) -> Result<(Vec<Resource>, u64)> {
    let request = berth_proto::pb::ListRequest {
        kind: kind.as_str().to_string(),
        namespace: if kind.namespaced() {
            namespace.to_string()
        } else {
            String::new()
        },
        label_selector: selector.to_string(),
        stale_ok: stale,
    };
    let list = api.list(request).await.map_err(server_error)?.into_inner();
    let objects = list
        .objects
        .iter()
        .map(|bytes| decode(bytes))
        .collect::<Result<_>>()?;
    Ok((objects, list.revision))
}
