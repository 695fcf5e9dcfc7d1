//! Archive import: OCI layout and `docker save` tars → resolve → layer_dirs.
mod fixtures;

use std::fs;

use berth_image::{ImageError, ImageStore, Reference};
use fixtures::{docker_save, oci_layout, ArchiveBuilder};

fn write_archive(dir: &std::path::Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("image.tar");
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn oci_layout_import_resolve_and_layer_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let archive = write_archive(dir.path(), &oci_layout("registry:5000/team/app:v1"));
    let imported = images.import_archive(&archive).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].tags,
        vec![Reference::parse("registry:5000/team/app:v1").unwrap()]
    );

    let image = images.resolve("registry:5000/team/app:v1").unwrap();
    assert_eq!(image.top_digest, imported[0].digest);
    assert_ne!(
        image.manifest_digest, image.top_digest,
        "picked from the image index"
    );
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.entrypoint().clone().unwrap(), ["/bin/app"]);
    assert_eq!(config.working_dir().as_deref(), Some("/work"));
    assert_eq!(config.exposed_ports().clone().unwrap(), ["8080/tcp"]);

    let dirs = images.layer_dirs(&image).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(
        fs::read(dirs[0].join("top")).unwrap(),
        b"top layer",
        "topmost first"
    );
    assert_eq!(
        fs::read(dirs[1].join("base/hello")).unwrap(),
        b"hello from base"
    );
    assert!(
        fs::symlink_metadata(dirs[0].join("base/gone")).is_ok(),
        "whiteout in upper layer"
    );
}

#[test]
fn docker_save_import_resolve_and_layer_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let tar = docker_save(
        "busybox:1.36",
        &[("bin/sh", b"shell"), ("etc/motd", b"welcome")],
    );
    let imported = images
        .import_archive(write_archive(dir.path(), &tar))
        .unwrap();
    assert_eq!(
        imported[0].tags[0].name_tag(),
        "docker.io/library/busybox:1.36"
    );

    let image = images.resolve("docker.io/library/busybox:1.36").unwrap();
    assert_eq!(image.layers.len(), 2);
    assert!(image
        .layers
        .iter()
        .all(|l| l.media_type().as_ref() == "application/vnd.oci.image.layer.v1.tar"));
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.entrypoint().clone().unwrap(), ["/bin/sh", "-c"]);
    let dirs = images.layer_dirs(&image).unwrap();
    assert_eq!(fs::read(dirs[0].join("etc/motd")).unwrap(), b"welcome");
    assert_eq!(fs::read(dirs[1].join("bin/sh")).unwrap(), b"shell");
    // The generated manifest is pinned by digest too.
    let by_digest = images
        .resolve(&format!("busybox@{}", image.manifest_digest))
        .unwrap();
    assert_eq!(by_digest.layers, image.layers);
}

#[test]
fn truncated_archive_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let full = oci_layout("app:v1");
    // The last cut lands inside index.json, the last entry (then 1024 zero bytes of
    // end-of-archive marker; a tar cut exactly at that marker is complete and accepted).
    for cut in [full.len() / 3, full.len() / 2, full.len() - 1024 - 400] {
        let err = images
            .import_archive(write_archive(dir.path(), &full[..cut]))
            .unwrap_err();
        assert!(matches!(err, ImageError::InvalidArchive { .. }), "{err}");
        assert!(images.images().unwrap().is_empty(), "cut at {cut}: {err}");
    }
    assert!(images.resolve("app:v1").is_err());
    assert_eq!(
        fs::read_dir(dir.path().join("store/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn blob_not_matching_its_name_refused() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let mut a = ArchiveBuilder::new();
    a.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    a.file(
        &format!("blobs/sha256/{}", "a".repeat(64)),
        b"not what the name says",
    );
    a.file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
    let err = images
        .import_archive(write_archive(dir.path(), &a.finish()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "blob sha256:{} has content sha256:",
            "a".repeat(64)
        )),
        "{msg}"
    );
    assert!(images.images().unwrap().is_empty());
    assert!(images.content().list().unwrap().is_empty());
}

#[test]
fn manifest_naming_missing_blob_refused() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":2}},
        "layers":[]}}"#,
        "b".repeat(64)
    );
    let mut a = ArchiveBuilder::new();
    let hex = a.blob(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:{hex}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"app:v1"}}}}]}}"#,
        manifest.len()
    );
    a.file("index.json", index.as_bytes());
    let err = images
        .import_archive(write_archive(dir.path(), &a.finish()))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "blob sha256:{} is not in the content store",
            "b".repeat(64)
        )),
        "{err}"
    );
    assert!(images.images().unwrap().is_empty());
}
