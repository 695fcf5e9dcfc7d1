//! Images through the cluster registry of a one-member control plane (in a network namespace
//! of its own): an image written from a directory is pushed (chunked uploads), pulled into a
//! second store with identical digests and files, tagged across repositories and deleted;
//! `berth image load` of a `docker save` tar and of an OCI layout pushes their images, which
//! `berth image ls`, `inspect` and `pull` then see. Needs root (network namespaces).

use berth_e2e::images::archives::{self, tar_of_files};
use berth_e2e::{isolate_network, Server, TestEnv};
use berth_image::{layer_from_dir, write_image, ImageStore, Reference, RegistryClient};
use serde_json::json;
use std::fs;
use std::path::Path;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Bytes that gzip cannot shrink much, so a layer spans several upload chunks.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn push_pull_tag_delete() {
    isolate_network();
    let env = TestEnv::new();
    let server = Server::start(berth(), &env, &["--init", "--listen", "127.0.0.1:7443"]);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("bin/data"), noise(300_000, 7)).unwrap();
    fs::write(tree.join("hello"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("bin/data", tree.join("link")).unwrap();

    let source = ImageStore::open(work.path().join("source")).unwrap();
    let layer = layer_from_dir(source.content(), &tree).unwrap();
    let config = oci_spec::image::ConfigBuilder::default()
        .entrypoint(vec!["/bin/data".to_owned()])
        .build()
        .unwrap();
    let built = write_image(&source, config, std::slice::from_ref(&layer)).unwrap();
    let reference = Reference::parse("demo/app:v1").unwrap();
    source.tag(&reference, &built).unwrap();

    runtime().block_on(async {
        // The first address is closed: every call fails over to the member.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let registry = RegistryClient::new(
            berth_proto::transport::http_client(),
            [closed, server.addr.clone()],
        )
        .with_chunk_size(64 * 1024);
        assert!(layer.descriptor.size() > 3 * 64 * 1024, "several chunks");

        let mut last = berth_image::Progress::default();
        let pushed = registry
            .push(&source, &reference, &reference, |p| last = p)
            .await
            .unwrap();
        assert_eq!(pushed, built);
        assert_eq!(last.blobs, 2, "config and layer: {last:?}");
        assert_eq!((last.blobs_done, last.bytes_done), (last.blobs, last.bytes));

        // A second push finds every blob in place.
        let mut again = berth_image::Progress::default();
        registry
            .push(&source, &reference, &reference, |p| again = p)
            .await
            .unwrap();
        assert_eq!(again.blobs, 0);

        assert_eq!(registry.remote_digest(&reference).await.unwrap(), built);
        assert!(registry
            .catalog()
            .await
            .unwrap()
            .contains(&"demo/app".to_owned()));
        assert_eq!(registry.tags("demo/app").await.unwrap(), ["v1"]);

        let target = ImageStore::open(work.path().join("target")).unwrap();
        let pulled = registry.pull(&target, &reference, |_| {}).await.unwrap();
        assert_eq!(pulled.top_digest, built);
        assert_eq!(pulled.manifest_digest, built);
        assert_eq!(target.resolve("demo/app:v1").unwrap().top_digest, built);
        let dirs = target.layer_dirs(&pulled).unwrap();
        assert_eq!(dirs.len(), 1);
        assert_eq!(
            fs::read(dirs[0].join("bin/data")).unwrap(),
            fs::read(tree.join("bin/data")).unwrap()
        );
        assert_eq!(fs::read(dirs[0].join("hello")).unwrap(), b"hello\n");
        assert_eq!(
            fs::read_link(dirs[0].join("link")).unwrap(),
            Path::new("bin/data")
        );

        // Another repository, then deletes: the tag, then the manifest by digest.
        let other = Reference::parse("other/app:v2").unwrap();
        assert_eq!(registry.tag(&reference, &other).await.unwrap(), built);
        assert_eq!(registry.manifest(&other).await.unwrap().digest, built);
        let latest = Reference::parse("other/app").unwrap();
        registry.tag(&other, &latest).await.unwrap();
        // One entry per page: the lists follow the registry's Link headers.
        let paged = registry.clone().with_page_size(1);
        let mut repositories = paged.catalog().await.unwrap();
        repositories.sort();
        assert_eq!(repositories, ["demo/app", "other/app"]);
        let mut tags = paged.tags("other/app").await.unwrap();
        tags.sort();
        assert_eq!(tags, ["latest", "v2"]);
        registry.delete(&latest).await.unwrap();
        registry.delete(&other).await.unwrap();
        let gone = registry.manifest(&other).await.unwrap_err();
        assert!(
            gone.to_string().contains("MANIFEST_UNKNOWN"),
            "a clear registry error: {gone}"
        );
        let by_digest = Reference::parse(&format!("demo/app@{built}")).unwrap();
        registry.delete(&by_digest).await.unwrap();
        assert!(registry.manifest(&reference).await.is_err());
    });
}

fn docker_save(repo_tag: &str) -> Vec<u8> {
    let layer = tar_of_files(&[("app", b"docker save app")]);
    archives::docker_save(repo_tag, &[layer], &["/app"])
}

/// An OCI layout whose index has the host's manifest and an s390x one, both complete.
fn oci_layout(name: &str) -> Vec<u8> {
    let platforms: Vec<(&str, Vec<Vec<u8>>)> = [berth_image::images::host_arch(), "s390x"]
        .into_iter()
        .map(|arch| {
            let layer = tar_of_files(&[("app", format!("oci app for {arch}").as_bytes())]);
            (arch, vec![layer])
        })
        .collect();
    archives::oci_layout(name, &platforms, &["/app"])
}

#[test]
fn load_list_inspect_pull_rm() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init", "--listen", "127.0.0.1:7443"]);
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("saved.tar");
    fs::write(&saved, docker_save("busybox:v1")).unwrap();
    let layout = work.path().join("layout.tar");
    fs::write(&layout, oci_layout("127.0.0.1:7443/team/multi:v2")).unwrap();

    let loaded = env
        .run(berth(), &["image", "load", "-i", saved.to_str().unwrap()])
        .ok();
    assert!(
        loaded
            .stdout()
            .starts_with("Loaded image: busybox:v1 (sha256:"),
        "{}",
        loaded.stdout()
    );
    assert!(
        loaded.stderr().contains("pushing busybox:v1: 2/2 blobs"),
        "progress on stderr: {}",
        loaded.stderr()
    );
    let loaded = env
        .run(berth(), &["image", "load", "-i", layout.to_str().unwrap()])
        .ok()
        .stdout();
    assert!(
        loaded.starts_with("Loaded image: team/multi:v2 (sha256:"),
        "{loaded}"
    );
    let index_digest = loaded
        .trim()
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_owned();

    let listed = env.run(berth(), &["image", "ls"]).ok().stdout();
    let lines: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["REPOSITORY", "TAG", "DIGEST", "SIZE"],
        "{listed}"
    );
    assert_eq!(lines.len(), 3, "{listed}");
    assert_eq!(lines[1][..2], ["busybox", "v1"], "{listed}");
    assert_eq!(
        lines[2][..3],
        ["team/multi", "v2", &index_digest[7..19]],
        "{listed}"
    );

    // The whole index was pushed: both platforms are in the registry.
    let inspected = env
        .run(berth(), &["image", "inspect", "team/multi:v2"])
        .ok()
        .stdout();
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["digest"], index_digest.as_str());
    assert_eq!(
        inspected["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        inspected["manifest"]["manifests"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        inspected["config"]["architecture"],
        berth_image::images::host_arch()
    );
    assert_eq!(inspected["config"]["config"]["Entrypoint"], json!(["/app"]));

    // Pull into a fresh store: same digest, the host's files.
    let store = work.path().join("pulled");
    let pulled = env
        .run(
            berth(),
            &[
                "image",
                "pull",
                "team/multi:v2",
                "--store",
                store.to_str().unwrap(),
            ],
        )
        .ok()
        .stdout();
    assert_eq!(
        pulled.trim(),
        format!("Pulled: team/multi:v2 ({index_digest})")
    );
    let images = ImageStore::open(&store).unwrap();
    let image = images.resolve("team/multi:v2").unwrap();
    let dirs = images.layer_dirs(&image).unwrap();
    assert_eq!(
        fs::read_to_string(dirs[0].join("app")).unwrap(),
        format!("oci app for {}", berth_image::images::host_arch())
    );

    // The pulled copy keeps only the host's platform: pushed back, it is that manifest.
    let host_manifest = inspected["platformManifest"]["digest"].as_str().unwrap();
    let pushed = env
        .run(
            berth(),
            &[
                "image",
                "push",
                "team/multi:v2",
                "--store",
                store.to_str().unwrap(),
            ],
        )
        .ok()
        .stdout();
    assert_eq!(
        pushed.trim(),
        format!("Pushed: team/multi:v2 ({host_manifest})")
    );

    // Errors are one clear line, and rm removes what it names.
    let missing = env
        .run(berth(), &["image", "inspect", "nothing:here"])
        .failed();
    assert!(
        missing.stderr().contains("MANIFEST_UNKNOWN") || missing.stderr().contains("NAME_UNKNOWN"),
        "{}",
        missing.stderr()
    );
    env.run(berth(), &["image", "tag", "busybox:v1", "busybox:v2"])
        .ok();
    env.run(berth(), &["image", "rm", "busybox:v1", "team/multi:v2"])
        .ok();
    let listed = env.run(berth(), &["image", "ls"]).ok().stdout();
    assert!(
        listed.contains("busybox") && listed.contains("v2"),
        "{listed}"
    );
    assert!(!listed.contains("team/multi"), "{listed}");
}
