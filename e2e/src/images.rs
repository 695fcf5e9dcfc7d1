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

/// Image archives as other tools write them (`docker save`, OCI image layouts), made here
/// from layer tars, for `berth image load`.
pub mod archives {
    use serde_json::json;

    /// An uncompressed layer tar holding `files` (regular files, root-owned).
    pub fn tar_of_files(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_600_000_000);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, *data)
                .expect("tar a file");
        }
        tar.into_inner().expect("finish the tar")
    }

    /// An uncompressed layer tar of the tree under `dir` (symlinks kept as links).
    pub fn tar_of_dir(dir: &std::path::Path) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", dir).expect("tar a directory");
        tar.into_inner().expect("finish the tar")
    }

    pub fn hex(data: &[u8]) -> String {
        berth_image::store::digest_of(data).digest().to_owned()
    }

    /// An image config for `arch` with `layers` (uncompressed tars) and `entrypoint`.
    pub fn config_json(arch: &str, layers: &[&[u8]], entrypoint: &[&str]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", hex(l)))
            .collect();
        serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .expect("json")
    }

    pub fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": format!("sha256:{}", hex(data)), "size": data.len()})
    }

    /// A tar of `files` (path, content).
    pub fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, &data[..])
                .expect("tar a file");
        }
        tar.into_inner().expect("finish the tar")
    }

    /// A `docker save` archive of one image named `repo_tag` for the host.
    pub fn docker_save(repo_tag: &str, layers: &[Vec<u8>], entrypoint: &[&str]) -> Vec<u8> {
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let config = config_json(berth_image::images::host_arch(), &refs, entrypoint);
        let config_name = format!("{}.json", hex(&config));
        let layer_names: Vec<String> = (0..layers.len())
            .map(|i| format!("layer{i}/layer.tar"))
            .collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": layer_names
        }]);
        let mut files = vec![(config_name, config)];
        files.extend(layer_names.into_iter().zip(layers.iter().cloned()));
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&manifest).expect("json"),
        ));
        archive(&files)
    }

    /// An OCI image layout naming one index `name`, with a complete image per entry of
    /// `platforms` (architecture, its layers).
    pub fn oci_layout(
        name: &str,
        platforms: &[(&str, Vec<Vec<u8>>)],
        entrypoint: &[&str],
    ) -> Vec<u8> {
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        for (arch, layers) in platforms {
            let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
            let config = config_json(arch, &refs, entrypoint);
            let layer_descriptors: Vec<_> = layers
                .iter()
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
                .collect();
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
                "layers": layer_descriptors
            }))
            .expect("json");
            let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
            entry["platform"] = json!({"os": "linux", "architecture": arch});
            manifests.push(entry);
            blobs.extend(layers.iter().cloned());
            blobs.extend([config, manifest]);
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        }))
        .expect("json");
        let mut top = descriptor("application/vnd.oci.image.index.v1+json", &index);
        top["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        blobs.push(index);
        let mut files: Vec<(String, Vec<u8>)> = blobs
            .into_iter()
            .map(|b| (format!("blobs/sha256/{}", hex(&b)), b))
            .collect();
        files.sort();
        files.dedup();
        files.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        files.push((
            "index.json".into(),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]})).expect("json"),
        ));
        archive(&files)
    }
}
