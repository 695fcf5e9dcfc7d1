//! The distribution-spec endpoints over HTTP: one axum handler that reads the endpoint from
//! the path (names contain slashes) and answers with the spec's statuses, headers and error
//! bodies.
//!
//! No handler does whole-blob work between members itself: a finished upload starts its
//! copies to the other members in the background, a manifest PUT waits for those copies,
//! a blob GET on a member that lacks the blob streams it while it is fetched, a mount only
//! asks whether some member has it (see `copies`).

use super::copies::{self, Fetch};
use super::errors::{ErrorCode, RegistryError};
use super::manifest::{self, Descriptor};
use super::names::{self, Route};
use super::Registry;
use crate::raft::MemberId;
use crate::store::{Command, CommandResult, StoreError, StoredManifest};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_image::MAX_DOCUMENT_SIZE;
use futures::StreamExt;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const API_VERSION: &str = "docker-distribution-api-version";
const CONTENT_DIGEST: &str = "docker-content-digest";
const UPLOAD_UUID: &str = "docker-upload-uuid";

/// The registry's routes, for the member's server.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route("/v2", axum::routing::any(serve))
        .route("/v2/", axum::routing::any(serve))
        .route("/v2/{*tail}", axum::routing::any(serve))
        .with_state(registry)
}

async fn serve(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match handle(&registry, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%method, path, "registry request refused: {error}");
            error.into_response()
        }
    };
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

fn header_value(value: impl std::fmt::Display) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).expect("registry header values are visible ASCII")
}

fn respond(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(*name, header_value(value));
    }
    response
}

fn unsupported(method: &Method, path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} {path} is not supported"),
    )
}

async fn handle(registry: &Arc<Registry>, request: Request) -> Result<Response, RegistryError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query();
    let tail = path.strip_prefix("/v2").unwrap_or(path);
    let tail = tail.strip_prefix('/').unwrap_or(tail);
    let route = names::percent_decode(tail)
        .and_then(|tail| names::parse_route(&tail))
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("no registry endpoint at {path}"),
            )
            .with_status(StatusCode::NOT_FOUND)
        })?;
    if let Route::Tags { name }
    | Route::Manifest { name, .. }
    | Route::Blob { name, .. }
    | Route::Upload { name, .. } = &route
    {
        if !names::valid_repository(name) {
            return Err(RegistryError::name_invalid(name));
        }
    }
    let method = &parts.method;
    let head = *method == Method::HEAD;
    match route {
        Route::Base if head || *method == Method::GET => Ok(respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            Body::from("{}"),
        )),
        Route::Catalog if *method == Method::GET => catalog(registry, query).await,
        Route::Tags { name } if *method == Method::GET => tags(registry, &name, query).await,
        Route::Manifest { name, reference } => match *method {
            Method::GET | Method::HEAD => get_manifest(registry, &name, &reference, head).await,
            Method::PUT => put_manifest(registry, &name, &reference, &parts.headers, body).await,
            Method::DELETE => delete_manifest(registry, &name, &reference).await,
            _ => Err(unsupported(method, path)),
        },
        Route::Blob { digest, .. } if head || *method == Method::GET => {
            get_blob(registry, &digest, head).await
        }
        Route::Blob { .. } if *method == Method::DELETE => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "blobs are not deleted one by one: delete the manifests that use them",
        )),
        Route::Upload { name, id: None } if *method == Method::POST => {
            start_upload(registry, &name, query, &parts.headers, body).await
        }
        Route::Upload { name, id: Some(id) } => match *method {
            Method::PATCH => append_chunk(registry, &name, &id, &parts.headers, body).await,
            Method::PUT => finish_upload(registry, &name, &id, query, &parts.headers, body).await,
            Method::GET => {
                let size = registry.blobs.upload_size(&id).await?;
                Ok(upload_progress(StatusCode::NO_CONTENT, &name, &id, size))
            }
            Method::DELETE => {
                let held = registry.blobs.lock_upload(&id).await?;
                registry.blobs.cancel_upload(held).await?;
                Ok(respond(StatusCode::NO_CONTENT, &[], Body::empty()))
            }
            _ => Err(unsupported(method, path)),
        },
        _ => Err(unsupported(method, path)),
    }
}

/// The headers that tell a client where its upload stands.
fn upload_progress(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    respond(
        status,
        &[
            ("location", format!("/v2/{name}/blobs/uploads/{id}")),
            // Docker's convention: an empty upload is "0-0" too.
            ("range", format!("0-{}", size.saturating_sub(1))),
            (UPLOAD_UUID, id.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    )
}

fn blob_created(name: &str, digest: &str) -> Response {
    respond(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            (CONTENT_DIGEST, digest.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    )
}

fn checked_digest(digest: &str) -> Result<(), RegistryError> {
    berth_image::store::parse_digest(digest)
        .map(|_| ())
        .map_err(|e| RegistryError::digest_invalid(e.to_string(), digest))
}

/// Refuses, before reading it, a request body that announces more than a blob may hold.
fn within_blob_limit(registry: &Registry, headers: &HeaderMap) -> Result<(), RegistryError> {
    let limit = registry.blobs.max_blob_size();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(declared) if declared > limit => Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("{declared} bytes is over the registry's limit of {limit} bytes for a blob"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)),
        _ => Ok(()),
    }
}

/// PATCH `/v2/<name>/blobs/uploads/<id>`: the next chunk of an upload. A Content-Range, if
/// given, must continue the upload where it ends.
async fn append_chunk(
    registry: &Arc<Registry>,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let range = match headers.get(header::CONTENT_RANGE) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(names::parse_content_range)
                .ok_or_else(|| {
                    RegistryError::new(
                        ErrorCode::BlobUploadInvalid,
                        "Content-Range must be <start>-<end>",
                    )
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                })?,
        ),
        None => None,
    };
    within_blob_limit(registry, headers)?;
    let mut held = registry.blobs.lock_upload(id).await?;
    let size = registry
        .blobs
        .append(&mut held, body.into_data_stream(), range)
        .await?;
    Ok(upload_progress(StatusCode::ACCEPTED, name, id, size))
}

/// POST `/v2/<name>/blobs/uploads/`: a mount of a blob the registry has, a monolithic push
/// (`?digest=`), or the start of an upload.
async fn start_upload(
    registry: &Arc<Registry>,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    if let Some(mount) = names::query_param(query, "mount") {
        // Blobs are global: a mount succeeds whenever some member holds the blob (a
        // manifest PUT makes sure a majority does).
        if checked_digest(&mount).is_ok() && registry.blob_size(&mount).await.is_some() {
            return Ok(blob_created(name, &mount));
        }
    } else if let Some(digest) = names::query_param(query, "digest") {
        checked_digest(&digest)?;
        within_blob_limit(registry, headers)?;
        registry
            .blobs
            .receive(&digest, None, body.into_data_stream())
            .await?;
        registry.copies.replicate(&digest);
        return Ok(blob_created(name, &digest));
    }
    let id = registry.blobs.start_upload().await?;
    Ok(upload_progress(StatusCode::ACCEPTED, name, &id, 0))
}

/// PUT `/v2/<name>/blobs/uploads/<id>?digest=`: the last chunk (if any), then the blob is
/// stored if it hashes to the digest, and its copies to the other members start.
async fn finish_upload(
    registry: &Arc<Registry>,
    name: &str,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let digest = names::query_param(query, "digest").ok_or_else(|| {
        RegistryError::new(
            ErrorCode::DigestInvalid,
            "finishing an upload needs ?digest=sha256:<hex> of its whole content",
        )
    })?;
    within_blob_limit(registry, headers)?;
    let mut held = registry.blobs.lock_upload(id).await?;
    if let Err(error) = checked_digest(&digest) {
        let _ = registry.blobs.cancel_upload(held).await;
        return Err(error);
    }
    registry
        .blobs
        .append(&mut held, body.into_data_stream(), None)
        .await?;
    registry.blobs.finish_upload(held, &digest).await?;
    registry.copies.replicate(&digest);
    Ok(blob_created(name, &digest))
}

/// GET/HEAD `/v2/<name>/blobs/<digest>`: streamed from this member; one that lacks the blob
/// streams it as it fetches it from a member that has it (a HEAD only asks).
async fn get_blob(
    registry: &Arc<Registry>,
    digest: &str,
    head: bool,
) -> Result<Response, RegistryError> {
    checked_digest(digest)?;
    let blob_unknown = || {
        RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in the registry"),
        )
        .with_detail(json!({ "digest": digest }))
    };
    let headers = |size: u64| {
        [
            ("content-length", size.to_string()),
            ("content-type", "application/octet-stream".to_string()),
            (CONTENT_DIGEST, digest.to_string()),
        ]
    };
    if head {
        let size = registry.blob_size(digest).await.ok_or_else(blob_unknown)?;
        return Ok(respond(StatusCode::OK, &headers(size), Body::empty()));
    }
    match registry.blobs.read(digest).await {
        Ok((size, content)) => {
            return Ok(respond(
                StatusCode::OK,
                &headers(size),
                Body::from_stream(content),
            ))
        }
        Err(error) if error.code == ErrorCode::BlobUnknown => {}
        Err(error) => return Err(error),
    }
    // Shared with every request for the blob, and not cancelled when this one goes.
    let mut fetch = registry.copies.fetch(digest);
    let state = fetch
        .wait_for(|f| !matches!(f, Fetch::Locating))
        .await
        .map(|state| state.clone())
        .map_err(|_| RegistryError::internal(format!("the fetch of blob {digest} vanished")))?;
    match state {
        Fetch::Receiving {
            attempt,
            file,
            size,
            ..
        } => Ok(respond(
            StatusCode::OK,
            &headers(size),
            Body::from_stream(copies::tail(fetch, attempt, file, size)),
        )),
        Fetch::Stored { .. } => {
            let (size, content) = registry.blobs.read(digest).await?;
            Ok(respond(
                StatusCode::OK,
                &headers(size),
                Body::from_stream(content),
            ))
        }
        Fetch::Failed {
            held_elsewhere: true,
            reason,
        } => Err(RegistryError::unavailable(format!(
            "blob {digest} is on another member, but could not be fetched from it: {reason}"
        ))),
        Fetch::Failed { .. } | Fetch::Locating => Err(blob_unknown()),
    }
}

/// A manifest reference: a digest (checked) or a tag (checked).
fn checked_reference(reference: &str) -> Result<(), RegistryError> {
    if reference.contains(':') {
        checked_digest(reference)
    } else if names::valid_tag(reference) {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::TagInvalid,
            format!(
                "{reference:?} is not a valid tag: letters, digits, '_', '.' and '-', \
                 starting with a letter, digit or '_', at most 128 characters"
            ),
        )
        .with_detail(json!({ "tag": reference })))
    }
}

fn manifest_unknown(name: &str, reference: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {name}:{reference} is not in the registry"),
    )
    .with_detail(json!({ "name": name, "reference": reference }))
}

/// GET/HEAD `/v2/<name>/manifests/<reference>`, after the read barrier: what any member
/// acknowledged, every member serves.
async fn get_manifest(
    registry: &Arc<Registry>,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, RegistryError> {
    checked_reference(reference)?;
    let (digest, manifest) = registry
        .read_manifest(name, reference)
        .await?
        .ok_or_else(|| manifest_unknown(name, reference))?;
    let headers = [
        ("content-type", manifest.media_type),
        ("content-length", manifest.content.len().to_string()),
        (CONTENT_DIGEST, digest),
    ];
    let body = if head {
        Body::empty()
    } else {
        Body::from(manifest.content)
    };
    Ok(respond(StatusCode::OK, &headers, body))
}

fn too_large(size: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestInvalid,
        format!("the manifest is {size} bytes or more, over the {MAX_DOCUMENT_SIZE}-byte limit"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Reads a request body of at most `limit` bytes; refuses a longer one as soon as it is
/// known to be longer (from Content-Length, or after `limit + 1` bytes), without reading on.
async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|d| *d > limit) {
        return Err(too_large(declared));
    }
    let mut content = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        if (content.len() + chunk.len()) as u64 > limit {
            return Err(too_large((content.len() + chunk.len()) as u64));
        }
        content.extend_from_slice(&chunk);
    }
    Ok(content)
}

fn blob_missing(digest: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!(
            "the manifest references blob {digest}, which is not in the registry: push it first"
        ),
    )
    .with_detail(json!({ "digest": digest }))
}

/// PUT `/v2/<name>/manifests/<reference>`: validated, every blob it references held by a
/// majority of the members (the copies started when it was uploaded, or now), then stored
/// through Raft.
async fn put_manifest(
    registry: &Arc<Registry>,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    checked_reference(reference)?;
    let content = read_capped(headers, body, MAX_DOCUMENT_SIZE).await?;
    let digest = berth_image::store::digest_of(&content).to_string();
    if reference.contains(':') && reference != digest {
        return Err(RegistryError::digest_invalid(
            format!("the manifest's content has digest {digest}, not {reference}"),
            reference,
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let valid = manifest::validate(&content, content_type)?;
    let content = String::from_utf8(content)
        .map_err(|_| RegistryError::new(ErrorCode::ManifestInvalid, "the manifest is not UTF-8"))?;

    for child in &valid.manifests {
        if registry.read_manifest(name, &child.digest).await?.is_none() {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "the index references manifest {}, which is not in {name}: push it first",
                    child.digest
                ),
            )
            .with_detail(json!({ "digest": child.digest })));
        }
    }
    let blobs = distinct_blobs(&valid.blobs)?;
    let present = futures::future::join_all(
        blobs
            .iter()
            .map(|(digest, size)| registry.presence(digest, *size)),
    );
    let present = present.await.into_iter().collect::<Result<Vec<_>, _>>()?;
    let replicated = futures::future::join_all(blobs.keys().zip(present).map(
        |(digest, presence)| async move {
            match presence {
                Presence::Here => registry.copies.replicated(digest, true).await,
                Presence::Elsewhere(holders) if registry.peers.view().majority(&holders) => Ok(()),
                Presence::Elsewhere(_) => registry.copies.replicated(digest, false).await,
            }
        },
    ));
    replicated
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;

    let command = Command::RegistryPutManifest {
        repository: name.to_string(),
        digest: digest.clone(),
        media_type: valid.media_type,
        content,
        tag: (!reference.contains(':')).then(|| reference.to_string()),
    };
    registry.propose(command, name, reference).await?;
    tracing::info!(
        repository = name,
        reference,
        digest,
        "registry manifest stored"
    );
    Ok(respond(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/manifests/{digest}")),
            (CONTENT_DIGEST, digest),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    ))
}

/// The blobs a manifest references, once each; a digest listed with two sizes is refused.
fn distinct_blobs(descriptors: &[Descriptor]) -> Result<BTreeMap<String, u64>, RegistryError> {
    let mut blobs = BTreeMap::new();
    for descriptor in descriptors {
        if let Some(size) = blobs.insert(descriptor.digest.clone(), descriptor.size) {
            if size != descriptor.size {
                return Err(RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!(
                        "blob {} is listed as {size} and as {} bytes",
                        descriptor.digest, descriptor.size
                    ),
                ));
            }
        }
    }
    Ok(blobs)
}

/// DELETE `/v2/<name>/manifests/<reference>`: a digest removes the manifest and its tags, a
/// tag only the tag.
async fn delete_manifest(
    registry: &Arc<Registry>,
    name: &str,
    reference: &str,
) -> Result<Response, RegistryError> {
    checked_reference(reference)?;
    let command = if reference.contains(':') {
        Command::RegistryDeleteManifest {
            repository: name.to_string(),
            digest: reference.to_string(),
        }
    } else {
        Command::RegistryDeleteTag {
            repository: name.to_string(),
            tag: reference.to_string(),
        }
    };
    registry.propose(command, name, reference).await?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &[("content-length", "0".into())],
        Body::empty(),
    ))
}

/// The page size and resume point of a list request.
fn page_query(query: Option<&str>) -> (Option<usize>, Option<String>) {
    let n = names::query_param(query, "n").and_then(|n| n.parse().ok());
    (n, names::query_param(query, "last"))
}

/// A page of a list as JSON `{key: [...]}`, with a `Link` to the next page if there is one.
fn page(
    path: &str,
    mut body: serde_json::Value,
    key: &str,
    items: &[String],
    query: Option<&str>,
) -> Response {
    let (n, last) = page_query(query);
    let (items, more) = names::paginate(items, n, last.as_deref());
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let (true, Some(n), Some(last)) = (more, n, items.last()) {
        headers.push(("link", format!("<{path}?n={n}&last={last}>; rel=\"next\"")));
    }
    body[key] = json!(items);
    respond(
        StatusCode::OK,
        &headers,
        Body::from(serde_json::to_vec(&body).expect("JSON values serialise")),
    )
}

/// GET `/v2/<name>/tags/list?n=&last=`.
async fn tags(
    registry: &Arc<Registry>,
    name: &str,
    query: Option<&str>,
) -> Result<Response, RegistryError> {
    let repository = name.to_string();
    let tags = registry
        .read(move |store| store.registry_tags(&repository))
        .await?
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {name} is not in the registry"),
            )
            .with_detail(json!({ "name": name }))
        })?;
    Ok(page(
        &format!("/v2/{name}/tags/list"),
        json!({ "name": name }),
        "tags",
        &tags,
        query,
    ))
}

/// GET `/v2/_catalog?n=&last=`.
async fn catalog(registry: &Arc<Registry>, query: Option<&str>) -> Result<Response, RegistryError> {
    let repositories = registry.read(|store| store.registry_repositories()).await?;
    Ok(page(
        "/v2/_catalog",
        json!({}),
        "repositories",
        &repositories,
        query,
    ))
}

impl Registry {
    /// Proposes a registry command through Raft (followers forward it to the leader).
    async fn propose(
        &self,
        command: Command,
        name: &str,
        reference: &str,
    ) -> Result<(), RegistryError> {
        match self
            .proposer
            .propose(command)
            .await
            .map_err(RegistryError::from_status)?
        {
            CommandResult::Registry { .. } => Ok(()),
            CommandResult::Failed(StoreError::ManifestUnknown { .. }) => {
                Err(manifest_unknown(name, reference))
            }
            CommandResult::Failed(StoreError::Invalid(message)) => {
                Err(RegistryError::new(ErrorCode::ManifestInvalid, message))
            }
            other => Err(RegistryError::internal(format!(
                "unexpected result of a registry command: {other:?}"
            ))),
        }
    }

    /// The manifest a reference names, read after the read barrier.
    async fn read_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Option<(String, StoredManifest)>, RegistryError> {
        let (name, reference) = (name.to_string(), reference.to_string());
        self.read(move |store| store.registry_manifest(&name, &reference))
            .await
    }

    /// A linearizable read of the store, off the runtime threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&crate::store::ObjectStore) -> Result<T, crate::store::ReadError>
            + Send
            + 'static,
    ) -> Result<T, RegistryError> {
        crate::raft::leader::linearize(&self.raft, &self.barrier, &self.leader)
            .await
            .map_err(|status| {
                let message = format!(
                    "manifests and tags are read through the Raft leader: {}; retry shortly",
                    status.message()
                );
                RegistryError::from_status(tonic::Status::new(status.code(), message))
            })?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(RegistryError::internal)?
            .map_err(RegistryError::internal)
    }

    /// The blob's size here, or at the first other member that says it holds it.
    async fn blob_size(&self, digest: &str) -> Option<u64> {
        match self.blobs.size(digest).await {
            Some(size) => Some(size),
            None => self.peers.locate(digest).await,
        }
    }

    /// Where a blob a manifest references is, checked against the size the manifest gives.
    /// The other members are asked only if this one lacks it, and only until a majority
    /// answered that they hold it.
    async fn presence(&self, digest: &str, size: u64) -> Result<Presence, RegistryError> {
        let check = |actual: u64| {
            if actual == size {
                Ok(())
            } else {
                Err(RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!("blob {digest} is {actual} bytes, the manifest says {size}"),
                )
                .with_detail(json!({ "digest": digest })))
            }
        };
        if let Some(actual) = self.blobs.size(digest).await {
            check(actual)?;
            return Ok(Presence::Here);
        }
        let view = self.peers.view();
        let mut holders = BTreeSet::new();
        let mut answers = std::pin::pin!(self.peers.holders(digest));
        while let Some((id, _, actual)) = answers.next().await {
            check(actual)?;
            holders.insert(id);
            if view.majority(&holders) {
                break;
            }
        }
        if holders.is_empty() {
            return Err(blob_missing(digest));
        }
        Ok(Presence::Elsewhere(holders))
    }
}

/// Where a blob is: here, or only at (some of) the other members.
enum Presence {
    Here,
    Elsewhere(BTreeSet<MemberId>),
}
