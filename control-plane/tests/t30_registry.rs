//! The registry (OCI distribution API) of a one-member cluster in this process, spoken to
//! over plain HTTP/1.1 on the member's API address (in a network namespace of the test's own).

mod common;

use berth_control_plane::Member;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Value};

struct Fixture {
    member: Option<Member>,
    dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let (member, _api, dir) = common::start(|_| {}).await;
    Fixture {
        member: Some(member),
        dir,
    }
}

impl Fixture {
    fn addr(&self) -> String {
        self.member.as_ref().unwrap().addr.to_string()
    }

    async fn restart(&mut self) {
        let member = self.member.take().unwrap();
        self.member = Some(common::restart(member, self.dir.path()).await);
    }

    /// Files in the registry's upload directory (uploads in progress or left behind).
    fn uploads(&self) -> usize {
        let dir = self.dir.path().join("member/registry/uploads");
        std::fs::read_dir(dir).unwrap().count()
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Reply {
        send(&self.addr(), method, path, headers, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], empty()).await
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn bytes(content: impl Into<Bytes>) -> Body {
    Full::new(content.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    bytes(Bytes::new())
}

/// `chunks` chunks of `size` bytes, sent with chunked transfer encoding (no length known).
fn streamed(chunks: usize, size: usize) -> Body {
    let frames = futures::stream::iter(
        (0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b' '; size])))),
    );
    BodyExt::boxed(StreamBody::new(frames))
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The code of the first error in a spec error body.
    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.json()))
            .to_string()
    }

    fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn digest(content: &[u8]) -> String {
    berth_image::store::digest_of(content).to_string()
}

/// Pushes a blob in one request.
async fn push_blob(f: &Fixture, repository: &str, content: &[u8]) -> String {
    let digest = digest(content);
    let reply = f
        .send(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/?digest={digest}"),
            &[("content-type", "application/octet-stream")],
            bytes(content.to_vec()),
        )
        .await
        .expect(201);
    assert_eq!(reply.header("docker-content-digest"), digest);
    digest
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(digest, size)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

async fn put_manifest(f: &Fixture, repository: &str, reference: &str, content: &[u8]) -> Reply {
    f.send(
        "PUT",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("content-type", OCI_MANIFEST)],
        bytes(content.to_vec()),
    )
    .await
}

#[tokio::test]
async fn t10_push_monolithic_and_chunked_then_pull_and_list() {
    let f = start().await;
    let base = f.get("/v2/").await.expect(200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(base.json(), json!({}));

    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = push_blob(&f, "team/app", config).await;

    // A layer in three chunks: the last one comes with the PUT that finishes the upload.
    let layer: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let layer_digest = digest(&layer);
    let started = f
        .send("POST", "/v2/team/app/blobs/uploads/", &[], empty())
        .await
        .expect(202);
    let location = started.header("location").to_string();
    assert!(
        location.starts_with("/v2/team/app/blobs/uploads/"),
        "{location}"
    );
    assert!(!started.header("docker-upload-uuid").is_empty());
    let (first, rest) = layer.split_at(500_000);
    let (second, last) = rest.split_at(400_000);
    let patched = f
        .send(
            "PATCH",
            &location,
            &[("content-range", "0-499999")],
            bytes(first.to_vec()),
        )
        .await
        .expect(202);
    assert_eq!(patched.header("range"), "0-499999");
    // A chunk that does not start where the upload ends is refused and changes nothing.
    let refused = f
        .send(
            "PATCH",
            &location,
            &[("content-range", "400000-499999")],
            bytes(vec![0; 100_000]),
        )
        .await
        .expect(416);
    assert_eq!(refused.error_code(), "BLOB_UPLOAD_INVALID");
    // Chunks without Content-Range are appended in order (what skopeo sends).
    f.send("PATCH", &location, &[], bytes(second.to_vec()))
        .await
        .expect(202);
    let status = f.get(&location).await.expect(204);
    assert_eq!(status.header("range"), "0-899999");
    let finished = f
        .send(
            "PUT",
            &format!("{location}?digest={layer_digest}"),
            &[],
            bytes(last.to_vec()),
        )
        .await
        .expect(201);
    assert_eq!(finished.header("docker-content-digest"), layer_digest);
    assert_eq!(
        finished.header("location"),
        format!("/v2/team/app/blobs/{layer_digest}")
    );
    assert_eq!(f.uploads(), 0, "a finished upload leaves no file behind");

    let head = f
        .send(
            "HEAD",
            &format!("/v2/team/app/blobs/{layer_digest}"),
            &[],
            empty(),
        )
        .await
        .expect(200);
    assert_eq!(head.header("content-length"), layer.len().to_string());
    assert_eq!(head.header("docker-content-digest"), layer_digest);
    assert!(head.body.is_empty());
    let pulled = f
        .get(&format!("/v2/team/app/blobs/{layer_digest}"))
        .await
        .expect(200);
    assert_eq!(digest(&pulled.body), layer_digest);
    assert_eq!(pulled.header("content-type"), "application/octet-stream");
    // Blobs are the registry's, not one repository's: a mount into another one succeeds.
    f.send(
        "POST",
        &format!("/v2/other/blobs/uploads/?mount={layer_digest}&from=team/app"),
        &[],
        empty(),
    )
    .await
    .expect(201);

    let manifest = manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
    );
    let manifest_digest = digest(&manifest);
    let stored = put_manifest(&f, "team/app", "v1", &manifest)
        .await
        .expect(201);
    assert_eq!(stored.header("docker-content-digest"), manifest_digest);
    assert_eq!(
        stored.header("location"),
        format!("/v2/team/app/manifests/{manifest_digest}")
    );
    for reference in ["v1", manifest_digest.as_str()] {
        let got = f
            .get(&format!("/v2/team/app/manifests/{reference}"))
            .await
            .expect(200);
        assert_eq!(got.body.as_ref(), manifest.as_slice(), "byte for byte");
        assert_eq!(got.header("content-type"), OCI_MANIFEST);
        assert_eq!(got.header("docker-content-digest"), manifest_digest);
        let head = f
            .send(
                "HEAD",
                &format!("/v2/team/app/manifests/{reference}"),
                &[],
                empty(),
            )
            .await
            .expect(200);
        assert_eq!(head.header("content-length"), manifest.len().to_string());
    }

    // More tags, listed a page at a time.
    for tag in ["v2", "latest"] {
        put_manifest(&f, "team/app", tag, &manifest)
            .await
            .expect(201);
    }
    let first_page = f.get("/v2/team/app/tags/list?n=2").await.expect(200);
    assert_eq!(
        first_page.json(),
        json!({"name": "team/app", "tags": ["latest", "v1"]})
    );
    assert_eq!(
        first_page.header("link"),
        "</v2/team/app/tags/list?n=2&last=v1>; rel=\"next\""
    );
    let second_page = f
        .get("/v2/team/app/tags/list?n=2&last=v1")
        .await
        .expect(200);
    assert_eq!(second_page.json()["tags"], json!(["v2"]));
    assert!(second_page.headers.get("link").is_none());
    let catalog = f.get("/v2/_catalog").await.expect(200);
    assert_eq!(catalog.json(), json!({"repositories": ["team/app"]}));

    // gRPC keeps working on the same address (HTTP/2).
    let mut api = berth_proto::pb::api_client::ApiClient::new(
        berth_proto::transport::connect(&f.addr()).await.unwrap(),
    );
    api.cluster(berth_proto::pb::ClusterRequest {})
        .await
        .expect("gRPC on the registry's port");
}

#[tokio::test]
async fn t20_bad_pushes_are_refused_and_nothing_is_stored() {
    let f = start().await;
    let content = b"the real content";
    let claimed = digest(b"something else");
    let refused = f
        .send(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={claimed}"),
            &[],
            bytes(content.to_vec()),
        )
        .await
        .expect(400);
    assert_eq!(refused.error_code(), "DIGEST_INVALID");
    for stored in [&claimed, &digest(content)] {
        f.send("HEAD", &format!("/v2/app/blobs/{stored}"), &[], empty())
            .await
            .expect(404);
    }
    let refused = f.get(&format!("/v2/app/blobs/{claimed}")).await.expect(404);
    assert_eq!(refused.error_code(), "BLOB_UNKNOWN");

    // The same through a chunked upload: the upload is gone afterwards.
    let location = f
        .send("POST", "/v2/app/blobs/uploads/", &[], empty())
        .await
        .expect(202)
        .header("location")
        .to_string();
    f.send("PATCH", &location, &[], bytes(content.to_vec()))
        .await
        .expect(202);
    let refused = f
        .send("PUT", &format!("{location}?digest={claimed}"), &[], empty())
        .await
        .expect(400);
    assert_eq!(refused.error_code(), "DIGEST_INVALID");
    let gone = f.get(&location).await.expect(404);
    assert_eq!(gone.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(f.uploads(), 0);

    // A manifest that names a blob nobody pushed.
    let config = br#"{"os":"linux"}"#;
    let config_digest = push_blob(&f, "app", config).await;
    let missing = digest(b"never pushed");
    let manifest = manifest((&config_digest, config.len()), &[(&missing, 12)]);
    let refused = put_manifest(&f, "app", "v1", &manifest).await.expect(400);
    assert_eq!(refused.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(refused.json()["errors"][0]["detail"]["digest"], missing);
    let unknown = f.get("/v2/app/manifests/v1").await.expect(404);
    assert_eq!(unknown.error_code(), "MANIFEST_UNKNOWN");
    let unknown = f.get("/v2/app/tags/list").await.expect(404);
    assert_eq!(unknown.error_code(), "NAME_UNKNOWN");

    // A config whose size the manifest misstates; a digest reference the content does not
    // match; a name and a tag outside the grammar; a document that is no manifest.
    let misstated = manifest_bytes_with_config(&config_digest, config.len() + 1);
    let refused = put_manifest(&f, "app", "v1", &misstated).await.expect(400);
    assert_eq!(refused.error_code(), "MANIFEST_INVALID");
    let good = manifest_bytes_with_config(&config_digest, config.len());
    let refused = put_manifest(&f, "app", &claimed, &good).await.expect(400);
    assert_eq!(refused.error_code(), "DIGEST_INVALID");
    let refused = put_manifest(&f, "App", "v1", &good).await.expect(400);
    assert_eq!(refused.error_code(), "NAME_INVALID");
    let refused = put_manifest(&f, "app", ".v1", &good).await.expect(400);
    assert_eq!(refused.error_code(), "TAG_INVALID");
    let refused = put_manifest(&f, "app", "v1", b"{\"schemaVersion\": 2}")
        .await
        .expect(400);
    assert_eq!(refused.error_code(), "MANIFEST_INVALID");

    // A 100 MB manifest is refused before it is read: by its Content-Length...
    let declared = (100u64 << 20).to_string();
    let refused = f
        .send(
            "PUT",
            "/v2/app/manifests/huge",
            &[
                ("content-type", OCI_MANIFEST),
                ("content-length", &declared),
            ],
            streamed(100, 1 << 20),
        )
        .await
        .expect(413);
    assert_eq!(refused.error_code(), "MANIFEST_INVALID");
    // ... or, sent without a length, once it passes the limit.
    let refused = f
        .send(
            "PUT",
            "/v2/app/manifests/huge",
            &[("content-type", OCI_MANIFEST)],
            streamed(100, 1 << 20),
        )
        .await
        .expect(413);
    assert_eq!(refused.error_code(), "MANIFEST_INVALID");

    f.get("/v2/app/tags/list").await.expect(404);
    f.get("/v2/app/manifests/huge").await.expect(404);
    assert_eq!(
        f.get("/v2/_catalog").await.expect(200).json()["repositories"],
        json!([])
    );
    // The valid manifest still goes in afterwards.
    put_manifest(&f, "app", "v1", &good).await.expect(201);
}

fn manifest_bytes_with_config(config_digest: &str, size: usize) -> Vec<u8> {
    manifest((config_digest, size), &[])
}

#[tokio::test]
async fn t30_deletes_and_restart() {
    let mut f = start().await;
    let config = br#"{"os":"linux"}"#;
    let config_digest = push_blob(&f, "lib/app", config).await;
    let manifest = manifest((&config_digest, config.len()), &[]);
    let manifest_digest = digest(&manifest);
    for tag in ["v1", "v2"] {
        put_manifest(&f, "lib/app", tag, &manifest)
            .await
            .expect(201);
    }

    // Deleting a tag leaves the manifest; deleting the manifest takes its other tags.
    f.send("DELETE", "/v2/lib/app/manifests/v1", &[], empty())
        .await
        .expect(202);
    f.get("/v2/lib/app/manifests/v1").await.expect(404);
    f.get(&format!("/v2/lib/app/manifests/{manifest_digest}"))
        .await
        .expect(200);
    f.get("/v2/lib/app/manifests/v2").await.expect(200);

    // Manifests, tags and blobs survive a restart.
    f.restart().await;
    f.get("/v2/lib/app/manifests/v2").await.expect(200);
    let pulled = f
        .get(&format!("/v2/lib/app/blobs/{config_digest}"))
        .await
        .expect(200);
    assert_eq!(pulled.body.as_ref(), config);

    f.send(
        "DELETE",
        &format!("/v2/lib/app/manifests/{manifest_digest}"),
        &[],
        empty(),
    )
    .await
    .expect(202);
    f.get("/v2/lib/app/manifests/v2").await.expect(404);
    let again = f
        .send(
            "DELETE",
            &format!("/v2/lib/app/manifests/{manifest_digest}"),
            &[],
            empty(),
        )
        .await
        .expect(404);
    assert_eq!(again.error_code(), "MANIFEST_UNKNOWN");
    let unsupported = f
        .send(
            "DELETE",
            &format!("/v2/lib/app/blobs/{config_digest}"),
            &[],
            empty(),
        )
        .await
        .expect(405);
    assert_eq!(unsupported.error_code(), "UNSUPPORTED");
}

/// Writes a request head (and `body`) on a raw connection, as a client that may hang up
/// half-way does; the connection, still open.
async fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    declared: u64,
    body: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// The status of the answer on a raw connection.
async fn raw_status(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "an answer");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

async fn wait_for_uploads(f: &Fixture, count: usize) {
    for _ in 0..200 {
        if f.uploads() == count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(f.uploads(), count, "upload files");
}

#[tokio::test]
async fn t40_uploads_cut_off_leave_nothing_and_blobs_have_a_size_limit() {
    let f = start().await;
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let digest = digest(&content);

    // A monolithic push whose client hangs up half-way: its upload file goes with it.
    let cut = raw_request(
        &f.addr(),
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={digest}"),
        content.len() as u64,
        &content[..content.len() / 2],
    )
    .await;
    wait_for_uploads(&f, 1).await;
    drop(cut);
    wait_for_uploads(&f, 0).await;
    f.send("HEAD", &format!("/v2/app/blobs/{digest}"), &[], empty())
        .await
        .expect(404);

    // A chunk whose client hangs up half-way is not part of the upload: the upload goes on
    // from where it was, and finishes with the right content.
    let location = f
        .send("POST", "/v2/app/blobs/uploads/", &[], empty())
        .await
        .expect(202)
        .header("location")
        .to_string();
    let (first, rest) = content.split_at(300_000);
    f.send("PATCH", &location, &[], bytes(first.to_vec()))
        .await
        .expect(202);
    let cut = raw_request(
        &f.addr(),
        "PATCH",
        &location,
        rest.len() as u64,
        &rest[..100_000],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(cut);
    let mut range = String::new();
    for _ in 0..200 {
        // The cut-off request lets go of the upload once the server sees the hang-up.
        range = f
            .get(&location)
            .await
            .expect(204)
            .header("range")
            .to_string();
        if range == "0-299999" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(range, "0-299999");
    f.send(
        "PUT",
        &format!("{location}?digest={digest}"),
        &[],
        bytes(rest.to_vec()),
    )
    .await
    .expect(201);
    let pulled = f.get(&format!("/v2/app/blobs/{digest}")).await.expect(200);
    assert_eq!(pulled.body.as_ref(), content.as_slice());
    assert_eq!(f.uploads(), 0);

    // An upload id that names nothing is refused, however well-formed.
    let unknown = "/v2/app/blobs/uploads/6d1f0b6e-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
    let refused = f
        .send("PATCH", unknown, &[], bytes(b"x".to_vec()))
        .await
        .expect(404);
    assert_eq!(refused.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(f.uploads(), 0);

    // A blob over the limit (10 GiB) is refused from its Content-Length, before its body.
    let mut huge = raw_request(
        &f.addr(),
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={digest}"),
        11 << 30,
        b"",
    )
    .await;
    assert_eq!(raw_status(&mut huge).await, 413);
    assert_eq!(f.uploads(), 0);
}
