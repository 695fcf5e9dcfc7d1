//! GC keeps everything a recorded image references and removes the rest.
mod fixtures;

use std::fs;

use berth_image::{ImageStore, Reference};
use fixtures::{docker_save, oci_layout};

#[test]
fn gc_keeps_referenced_removes_unreferenced() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path().join("store")).unwrap();
    let a = dir.path().join("a.tar");
    fs::write(&a, oci_layout("app:v1")).unwrap();
    images.import_archive(&a).unwrap();
    let b = dir.path().join("b.tar");
    fs::write(&b, docker_save("other:1", &[("x", b"only in other")])).unwrap();
    images.import_archive(&b).unwrap();

    let kept = images.resolve("app:v1").unwrap();
    let kept_dirs = images.layer_dirs(&kept).unwrap();
    let dropped = images.resolve("other:1").unwrap();
    let dropped_dirs = images.layer_dirs(&dropped).unwrap();
    let stray = images.content().write_bytes(b"stray").unwrap();
    let in_progress = dir.path().join("store/tmp/blob-in-progress");
    fs::write(&in_progress, b"partial").unwrap();

    let report = images.gc().unwrap();
    assert_eq!(report.blobs_removed, vec![stray.clone()]);
    assert!(report.layers_removed.is_empty());
    assert!(!images.content().has(&stray));

    assert!(images.untag(&Reference::parse("other:1").unwrap()).unwrap());
    // A container still standing on the untagged image keeps it.
    let report = images
        .gc_keeping(std::slice::from_ref(&dropped.top_digest))
        .unwrap();
    assert!(report.blobs_removed.is_empty() && report.layers_removed.is_empty());
    assert!(dropped_dirs[0].is_dir());
    let report = images.gc().unwrap();
    // manifest + config + 1 layer blob, and its unpacked layer dir.
    assert_eq!(report.blobs_removed.len(), 3, "{report:?}");
    assert_eq!(
        report.layers_removed,
        vec![dropped.layers[0].digest().clone()]
    );
    assert!(!dropped_dirs[0].exists());
    assert!(!images.content().has(&dropped.manifest_digest));

    // Everything of the kept image survives, including index, manifest and unpacked layers.
    let again = images.resolve("app:v1").unwrap();
    assert_eq!(again.manifest_digest, kept.manifest_digest);
    assert!(images.content().has(&kept.top_digest));
    assert!(kept_dirs.iter().all(|d| d.is_dir()));
    assert_eq!(images.layer_dirs(&again).unwrap(), kept_dirs);
    assert!(in_progress.exists(), "temp files are not GC's business");
}
