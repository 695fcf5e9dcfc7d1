//! Images for tests, made here with no download: a directory becomes a one-layer OCI image
//! in a local store (berth-image's writer), pushed into the cluster registry with
//! `berth image push`, as a user would.

use crate::cluster::Cluster;
use berth_image::write::{layer_from_dir, write_image};
use berth_image::{ImageStore, Reference};
use std::path::{Path, PathBuf};

/// Makes image `name` from the tree under `rootfs` (with `entrypoint`/`cmd` as its process
/// defaults) and pushes it through member `member`. Returns the local store it was made in.
pub fn push_dir(
    cluster: &Cluster,
    member: usize,
    name: &str,
    rootfs: &Path,
    entrypoint: &[&str],
    cmd: &[&str],
) -> PathBuf {
    let store_dir = cluster.env.root.path().join("image-store");
    let store = ImageStore::open(&store_dir).expect("open the test image store");
    let layer = layer_from_dir(store.content(), rootfs).expect("write the layer");
    let mut config = oci_spec::image::Config::default();
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if !entrypoint.is_empty() {
        config.set_entrypoint(Some(strings(entrypoint)));
    }
    if !cmd.is_empty() {
        config.set_cmd(Some(strings(cmd)));
    }
    config.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ]));
    let digest = write_image(&store, config, &[layer]).expect("write the image");
    let reference = Reference::parse(name).expect("a valid image name");
    store.tag(&reference, &digest).expect("tag the image");
    cluster
        .berth_on(
            member,
            &[
                "image",
                "push",
                "--store",
                store_dir.to_str().expect("utf-8 path"),
                name,
            ],
        )
        .ok();
    store_dir
}

/// Pushes Debian's static busybox (see [`crate::rootfs::busybox`]) as image `name`, with
/// `sh` as its command.
pub fn push_busybox(cluster: &Cluster, member: usize, name: &str) {
    let dir = cluster.env.root.path().join("rootfs");
    std::fs::create_dir_all(&dir).expect("create rootfs dir");
    let rootfs = crate::rootfs::busybox(&dir);
    push_dir(cluster, member, name, &rootfs, &[], &["sh"]);
}
