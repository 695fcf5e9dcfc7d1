//! The registry of a three-member control plane, each member on a host (network namespace)
//! of its own: a push acknowledged by one member survives that member's SIGKILL, and real
//! registry clients (skopeo) push and pull through it.

use berth_e2e::cluster::Cluster;
use berth_e2e::{eventually, isolate_network};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// A response of the registry.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// One HTTP/1.1 request on a connection of its own (closed after the response).
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The payload of a chunked transfer encoding.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size_field = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn digest(content: &[u8]) -> String {
    berth_image::store::digest_of(content).to_string()
}

/// An image: a layer (a gzipped tar of one file), its config and its manifest. (Compressed,
/// as skopeo would compress an uncompressed layer on push, changing the manifest.)
struct Image {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(text: &str) -> Image {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", text.as_bytes())
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        let layer = gzip.finish().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(&tar)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest(&layer), "size": layer.len()}],
        }))
        .unwrap();
        Image {
            layer,
            config,
            manifest,
        }
    }

    fn blobs(&self) -> [&[u8]; 2] {
        [&self.config, &self.layer]
    }

    /// Writes the image as an OCI image layout in `dir`, tagged `tag`.
    fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for blob in [&self.layer, &self.config, &self.manifest] {
            let name = digest(blob).trim_start_matches("sha256:").to_string();
            std::fs::write(blobs.join(name), blob).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&self.manifest), "size": self.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// Pushes the image to the member at `addr`: the config in one request, the layer in two
/// chunks, then the manifest by tag.
fn push(addr: &str, repository: &str, tag: &str, image: &Image) {
    let config = digest(&image.config);
    request(
        addr,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/?digest={config}"),
        &image.config,
    )
    .unwrap()
    .expect(201);
    let started = request(
        addr,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        b"",
    )
    .unwrap()
    .expect(202);
    let location = started
        .header("location")
        .expect("an upload location")
        .to_string();
    let (first, rest) = image.layer.split_at(image.layer.len() / 2);
    request(addr, "PATCH", &location, first)
        .unwrap()
        .expect(202);
    let layer = digest(&image.layer);
    request(addr, "PUT", &format!("{location}?digest={layer}"), rest)
        .unwrap()
        .expect(201);
    let stored = request(
        addr,
        "PUT",
        &format!("/v2/{repository}/manifests/{tag}"),
        &image.manifest,
    )
    .unwrap()
    .expect(201);
    assert_eq!(
        stored.header("docker-content-digest"),
        Some(digest(&image.manifest).as_str())
    );
}

#[test]
fn t10_a_push_survives_the_sigkill_of_the_member_that_received_it() {
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    // The leader receives the push: its death also costs the cluster its leader.
    let receiver = cluster.leader(0).expect("a leader");
    cluster.network.hosts[receiver].enter();
    let image = Image::new(&"berth registry e2e\n".repeat(50_000));
    push(&cluster.addr(receiver), "team/app", "v1", &image);
    cluster.kill(receiver);

    for member in (0..3).filter(|m| *m != receiver) {
        let addr = cluster.addr(member);
        let mut manifest = None;
        let served = eventually(Duration::from_secs(15), || {
            match request(&addr, "GET", "/v2/team/app/manifests/v1", b"") {
                Ok(reply) if reply.status == 200 => {
                    manifest = Some(reply);
                    true
                }
                Ok(reply) => {
                    eprintln!(
                        "member {member}: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                    false
                }
                Err(e) => {
                    eprintln!("member {member}: {e}");
                    false
                }
            }
        });
        assert!(served, "member {member} never served the manifest");
        let manifest = manifest.unwrap();
        assert_eq!(manifest.body, image.manifest, "member {member}");
        assert_eq!(
            manifest.header("docker-content-digest"),
            Some(digest(&image.manifest).as_str())
        );
        for blob in image.blobs() {
            let reply = request(
                &addr,
                "GET",
                &format!("/v2/team/app/blobs/{}", digest(blob)),
                b"",
            )
            .unwrap()
            .expect(200);
            assert_eq!(digest(&reply.body), digest(blob), "member {member}");
            assert_eq!(
                reply.header("docker-content-digest"),
                Some(digest(blob).as_str())
            );
        }
    }
    let tags = request(
        &cluster.addr((receiver + 1) % 3),
        "GET",
        "/v2/team/app/tags/list",
        b"",
    )
    .unwrap()
    .expect(200);
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
}

fn skopeo(cluster: &Cluster, host: usize, args: &[&str]) {
    let output = cluster.network.hosts[host]
        .command(Path::new("skopeo"))
        .env("HOME", cluster.env.root.path())
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn skopeo_installed() -> bool {
    std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn t20_skopeo_pushes_to_one_member_and_pulls_from_another() {
    assert!(
        skopeo_installed(),
        "skopeo is missing: apt-get install skopeo (.ci/run does)"
    );
    isolate_network();
    let cluster = Cluster::start(3, &[]);
    let image = Image::new("pushed by skopeo\n");
    let source = cluster.env.root.path().join("source");
    image.write_layout(&source, "v1");
    let pushed = format!("docker://{}/lib/hello:v1", cluster.addr(1));
    skopeo(
        &cluster,
        1,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", source.display()),
            &pushed,
        ],
    );
    let pulled_dir = cluster.env.root.path().join("pulled");
    let pulled = format!("docker://{}/lib/hello:v1", cluster.addr(2));
    skopeo(
        &cluster,
        2,
        &[
            "copy",
            "--src-tls-verify=false",
            &pulled,
            &format!("oci:{}:v1", pulled_dir.display()),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(pulled_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        digest(&image.manifest),
        "the image came back byte for byte"
    );
    for blob in image.blobs() {
        let name = digest(blob).trim_start_matches("sha256:").to_string();
        let copied = std::fs::read(pulled_dir.join("blobs/sha256").join(name)).unwrap();
        assert_eq!(copied, blob);
    }
}

#[test]
fn t30_no_push_is_acknowledged_without_a_majority() {
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    cluster.kill(1);
    cluster.kill(2);
    cluster.network.hosts[0].enter();
    let addr = cluster.addr(0);
    let image = Image::new("never acknowledged\n");
    for blob in image.blobs() {
        request(
            &addr,
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={}", digest(blob)),
            blob,
        )
        .unwrap()
        .expect(201);
    }
    let refused = request(&addr, "PUT", "/v2/app/manifests/v1", &image.manifest)
        .unwrap()
        .expect(503);
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("only 1 of the 3 voting members"),
        "{message}"
    );
}

#[test]
fn t40_blobs_uploaded_to_one_member_serve_a_manifest_pushed_to_another() {
    isolate_network();
    let cluster = Cluster::start(3, &[]);
    cluster.network.hosts[0].enter();
    let image = Image::new("uploaded here, tagged there\n");
    for blob in image.blobs() {
        request(
            &cluster.addr(0),
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={}", digest(blob)),
            blob,
        )
        .unwrap()
        .expect(201);
    }
    // Member 1 fetches the blobs from member 0 before it checks and copies them.
    request(
        &cluster.addr(1),
        "PUT",
        "/v2/app/manifests/v1",
        &image.manifest,
    )
    .unwrap()
    .expect(201);
    for member in 0..3 {
        for blob in image.blobs() {
            let path = format!("/v2/app/blobs/{}", digest(blob));
            let reply = request(&cluster.addr(member), "GET", &path, b"")
                .unwrap()
                .expect(200);
            assert_eq!(reply.body, blob, "member {member}");
        }
    }
}

#[test]
fn t50_a_member_that_lacks_a_blob_streams_it_to_every_reader_while_it_fetches_it() {
    isolate_network();
    let mut cluster = Cluster::start(3, &[]);
    cluster.network.hosts[0].enter();
    // Member 2 is down while the blob is pushed: the push needs (and gets) members 0 and 1.
    cluster.kill(2);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let blob: Vec<u8> = (0..24 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let blob_digest = digest(&blob);
    request(
        &cluster.addr(0),
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={blob_digest}"),
        &blob,
    )
    .unwrap()
    .expect(201);
    cluster.restart(2);
    let stored = cluster
        .data_dir(2)
        .join("registry/blobs")
        .join(blob_digest.replace(':', "/"));
    assert!(
        !stored.exists(),
        "member 2 was down when the blob was pushed"
    );

    // Readers at once, one of which hangs up after the first bytes: each that stays gets
    // the blob whole, and the fetch they share is not cut short by the one that left.
    let addr = cluster.addr(2);
    let path = format!("/v2/app/blobs/{blob_digest}");
    let quitter = {
        let (addr, path) = (addr.clone(), path.clone());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
            let mut first = [0u8; 4096];
            stream.read_exact(&mut first).unwrap();
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            std::thread::spawn(move || request(&addr, "GET", &path, b"").unwrap())
        })
        .collect();
    quitter.join().unwrap();
    for reader in readers {
        let reply = reader.join().unwrap().expect(200);
        assert_eq!(
            reply.header("content-length"),
            Some(blob.len().to_string().as_str())
        );
        assert!(reply.body == blob, "a reader got the blob whole");
    }
    assert!(
        eventually(Duration::from_secs(10), || stored.exists()),
        "member 2 stored the blob it fetched"
    );
    let uploads = cluster.data_dir(2).join("registry/uploads");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&uploads)
            .unwrap()
            .next()
            .is_none()),
        "no upload file is left behind"
    );
}
