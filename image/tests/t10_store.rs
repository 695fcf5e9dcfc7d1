//! Content store behaviour that needs files on disk beyond the unit tests.
mod fixtures;

use std::fs::OpenOptions;

use berth_image::store::{digest_of, parse_digest};
use berth_image::{ImageError, ImageStore, MAX_DOCUMENT_SIZE};

#[test]
fn oversized_manifest_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    // A sparse 100 MB "manifest": refused on its size, never read into memory.
    let digest = digest_of(b"pretend");
    let path = images.content().blob_path(&digest).unwrap();
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    let err = images
        .content()
        .read_all(&digest, MAX_DOCUMENT_SIZE)
        .unwrap_err();
    assert!(matches!(err, ImageError::BlobTooLarge { .. }), "{err}");
    let err = images.resolve_digest(&digest).unwrap_err();
    assert!(
        err.to_string().contains("over the 4194304-byte limit"),
        "{err}"
    );
}

#[test]
fn streaming_reader_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    let data = vec![7u8; 200_000];
    let d = images.content().write_bytes(&data).unwrap();
    let mut r = images.content().open_blob(&d).unwrap();
    assert_eq!(
        std::io::copy(&mut r, &mut std::io::sink()).unwrap(),
        200_000
    );

    let path = images.content().blob_path(&d).unwrap();
    let mut corrupted = data.clone();
    corrupted[100_000] = 8;
    std::fs::write(&path, corrupted).unwrap();
    let mut r = images.content().open_blob(&d).unwrap();
    let err = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(&format!("blob {d} has content sha256:")),
        "{err}"
    );
}

#[test]
fn missing_blob_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let images = ImageStore::open(dir.path()).unwrap();
    let d = parse_digest(&format!("sha256:{}", "0".repeat(64))).unwrap();
    let err = images.resolve_digest(&d).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("blob {d} is not in the content store")
    );
}
