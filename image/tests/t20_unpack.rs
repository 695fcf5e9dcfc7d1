//! Layer unpacking: overlay whiteouts, file kinds and metadata, and the containment rule.
//! Runs as root (mknod, chown, trusted.* xattrs).
mod fixtures;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_image::{ContentStore, ImageError, LayerStore};
use fixtures::{gzip, layer_tar, Entry, MTIME};
use oci_spec::image::{Descriptor, MediaType};
use tar::EntryType;

fn store_layer(
    root: &Path,
    blob: &[u8],
    media_type: MediaType,
) -> (ContentStore, LayerStore, Descriptor) {
    let content = ContentStore::open(root).unwrap();
    let layers = LayerStore::open(root).unwrap();
    let digest = content.write_bytes(blob).unwrap();
    (
        content,
        layers,
        Descriptor::new(media_type, blob.len() as u64, digest),
    )
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| buf[..rc as usize].to_vec())
}

#[test]
fn unpack_kinds_metadata_and_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[
        Entry::dir("/etc"),
        Entry::file("/etc/hello", b"hi")
            .mode(0o4755)
            .owner(1000, 1001),
        Entry::hardlink("etc/hard", "/etc/hello"),
        Entry::symlink("./link", "/etc/hello").owner(7, 8),
        Entry::new(EntryType::Char, "dev/null")
            .mode(0o666)
            .dev(1, 3),
        Entry::new(EntryType::Fifo, "run/fifo").mode(0o600),
        Entry::dir("tmp").mode(0o1777),
        Entry::new(EntryType::Regular, "etc/.wh.gone"),
        Entry::dir("opq"),
        Entry::new(EntryType::Regular, "opq/.wh..wh..opq"),
    ]);
    let (content, layers, desc) = store_layer(dir.path(), &gzip(&layer), MediaType::ImageLayerGzip);
    let root = layers.unpack(&content, &desc).unwrap();
    assert_eq!(
        root,
        dir.path()
            .join("layers/sha256")
            .join(desc.digest().digest())
    );

    let hello = fs::metadata(root.join("etc/hello")).unwrap();
    assert_eq!(fs::read(root.join("etc/hello")).unwrap(), b"hi");
    assert_eq!(hello.mode() & 0o7777, 0o4755);
    assert_eq!((hello.uid(), hello.gid()), (1000, 1001));
    assert_eq!(hello.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(root.join("etc/hard")).unwrap().ino(),
        hello.ino()
    );
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("/etc/hello")
    );
    let link = fs::symlink_metadata(root.join("link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (7, 8));
    let null = fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(fs::metadata(root.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(root.join("etc")).unwrap().mtime(),
        MTIME as i64
    );

    let gone = fs::symlink_metadata(root.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!root.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr(&root.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!root.join("opq/.wh..wh..opq").exists());

    // A second unpack is a no-op.
    fs::write(root.join("marker"), b"").unwrap();
    assert_eq!(layers.unpack(&content, &desc).unwrap(), root);
    assert!(root.join("marker").exists());
}

#[test]
fn concurrent_unpacks_of_one_layer() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..200).map(|i| format!("d/f{i}")).collect();
    let entries: Vec<Entry> = files.iter().map(|f| Entry::file(f, b"data")).collect();
    let (content, layers, desc) =
        store_layer(dir.path(), &layer_tar(&entries), MediaType::ImageLayer);
    let roots: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| layers.unpack(&content, &desc).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(roots.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fs::read_dir(roots[0].join("d")).unwrap().count(), 200);
    assert_eq!(
        fs::read_dir(dir.path().join("layers/tmp")).unwrap().count(),
        0
    );
}

/// Unpacking `entries` must fail with a LayerEscape and leave no layer dir or temp dir.
fn assert_refused(entries: &[Entry], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (content, layers, desc) =
        store_layer(dir.path(), &layer_tar(entries), MediaType::ImageLayer);
    let err = layers.unpack(&content, &desc).unwrap_err();
    assert!(matches!(err, ImageError::LayerEscape { .. }), "{err}");
    assert!(err.to_string().contains(expect), "{err}");
    assert!(!layers.is_unpacked(desc.digest()));
    assert_eq!(
        fs::read_dir(dir.path().join("layers/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn dotdot_escape_refused() {
    assert_refused(
        &[
            Entry::file("ok", b""),
            Entry::file("../../etc/passwd", b"root::0:0"),
        ],
        "entry ../../etc/passwd escapes the layer ('..' climbs out of the layer)",
    );
}

#[test]
fn write_through_symlink_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_owned();
    assert_refused(
        &[
            Entry::symlink("evil", &target),
            Entry::file("evil/x", b"pwned"),
        ],
        "entry evil/x escapes the layer (a parent is a symlink)",
    );
    assert!(!outside.path().join("x").exists());
    // Even a symlink into the layer is not written through.
    assert_refused(
        &[
            Entry::dir("real"),
            Entry::symlink("alias", "real"),
            Entry::file("alias/x", b""),
        ],
        "a parent is a symlink",
    );
}

#[test]
fn hard_link_outside_refused() {
    assert_refused(
        &[Entry::hardlink("pw", "../../etc/passwd")],
        "hard link target climbs out",
    );
    // An absolute target is inside the layer, where /etc/passwd does not exist.
    assert_refused(
        &[Entry::hardlink("pw", "/etc/passwd")],
        "hard link target is not a file inside the layer",
    );
    assert_refused(
        &[
            Entry::symlink("evil", "/etc"),
            Entry::hardlink("pw", "evil/passwd"),
        ],
        "hard link target is not a file inside the layer",
    );
}

#[test]
fn corrupted_layer_blob_not_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let (content, layers, desc) = store_layer(
        dir.path(),
        &layer_tar(&[Entry::file("a", b"aaaa")]),
        MediaType::ImageLayer,
    );
    let path = content.blob_path(desc.digest()).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[512] = b'b'; // the file's data block
    fs::write(&path, bytes).unwrap();
    let err = layers.unpack(&content, &desc).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!layers.is_unpacked(desc.digest()));
}
