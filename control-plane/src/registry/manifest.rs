//! Manifest validation before anything is stored, decided without IO: the document is JSON
//! of a known media type, and what it references is listed so the caller can check that
//! every referenced blob (and an index's child manifests) exists.

use super::errors::{ErrorCode, RegistryError};
use serde::Deserialize;
use serde_json::json;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layers that are, by definition, not pushed to registries (they name URLs to fetch from).
const FOREIGN_LAYERS: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// A content descriptor a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A manifest that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidManifest {
    pub media_type: String,
    /// Blobs that must be in the registry: an image manifest's config and layers.
    pub blobs: Vec<Descriptor>,
    /// Manifests that must be in the repository: an index's children.
    pub manifests: Vec<Descriptor>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message)
}

/// Checks a pushed manifest. `content_type` is the request's Content-Type: it names the
/// media type when the document does not, and may not contradict it when it does.
pub fn validate(
    content: &[u8],
    content_type: Option<&str>,
) -> Result<ValidManifest, RegistryError> {
    let document: Document = serde_json::from_slice(content)
        .map_err(|e| invalid(format!("the manifest is not valid JSON of a manifest: {e}")))?;
    let declared = content_type
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| is_manifest_type(t));
    let media_type = match (document.media_type.as_deref(), declared) {
        (Some(inside), Some(header)) if inside != header => {
            return Err(invalid(format!(
            "the manifest says its mediaType is {inside}, the request's Content-Type says {header}"
        )))
        }
        (Some(inside), _) => inside,
        (None, Some(header)) => header,
        (None, None) => {
            return Err(invalid(format!(
                "the manifest names no mediaType and the Content-Type ({}) is not a manifest \
                 type; expected one of {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, \
                 {DOCKER_MANIFEST_LIST}",
                content_type.unwrap_or("none")
            )))
        }
    };
    if !is_manifest_type(media_type) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type}; expected one of {OCI_MANIFEST}, \
             {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"
        )));
    }
    if document.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let (blobs, manifests) = if is_index(media_type) {
        let manifests = document
            .manifests
            .ok_or_else(|| invalid(format!("an index ({media_type}) needs a manifests list")))?;
        (Vec::new(), manifests)
    } else {
        let config = document
            .config
            .ok_or_else(|| invalid(format!("a manifest ({media_type}) needs a config")))?;
        let layers = document.layers.unwrap_or_default();
        let blobs = std::iter::once(config)
            .chain(
                layers
                    .into_iter()
                    .filter(|l| !FOREIGN_LAYERS.contains(&l.media_type.as_str())),
            )
            .collect();
        (blobs, Vec::new())
    };
    for descriptor in blobs.iter().chain(&manifests) {
        berth_image::store::parse_digest(&descriptor.digest).map_err(|e| {
            invalid(format!("a descriptor's digest is not usable: {e}"))
                .with_detail(json!({ "digest": descriptor.digest }))
        })?;
    }
    Ok(ValidManifest {
        media_type: media_type.to_string(),
        blobs,
        manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    const LAYER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG, "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": LAYER, "size": 20},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "digest": LAYER, "size": 30, "urls": ["https://example.invalid/layer"]}
            ]
        });
        if let Some(media_type) = media_type {
            manifest["mediaType"] = media_type.into();
        }
        serde_json::to_vec(&manifest).unwrap()
    }

    #[test]
    fn an_image_references_its_config_and_pushed_layers() {
        let valid = validate(&image(Some(OCI_MANIFEST)), None).unwrap();
        assert_eq!(valid.media_type, OCI_MANIFEST);
        let digests: Vec<(&str, u64)> = valid
            .blobs
            .iter()
            .map(|d| (d.digest.as_str(), d.size))
            .collect();
        assert_eq!(
            digests,
            vec![(CONFIG, 10), (LAYER, 20)],
            "foreign layers are not pushed"
        );
        assert!(valid.manifests.is_empty());
    }

    #[test]
    fn the_media_type_comes_from_the_body_or_the_content_type() {
        let typed = validate(
            &image(None),
            Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
        );
        assert_eq!(typed.unwrap().media_type, DOCKER_MANIFEST);
        // A generic Content-Type defers to the body; a contradicting one is refused.
        assert!(validate(&image(Some(OCI_MANIFEST)), Some("application/octet-stream")).is_ok());
        let error = validate(&image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST)).unwrap_err();
        assert_eq!(error.code, ErrorCode::ManifestInvalid);
        let error = validate(&image(None), None).unwrap_err();
        assert!(
            error.message.contains("names no mediaType"),
            "{}",
            error.message
        );
        let error = validate(&image(Some("application/vnd.example+json")), None).unwrap_err();
        assert!(error.message.contains("unsupported"), "{}", error.message);
    }

    #[test]
    fn an_index_references_manifests() {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": LAYER, "size": 500,
             "platform": {"architecture": "amd64", "os": "linux"}}]});
        let valid = validate(&serde_json::to_vec(&index).unwrap(), None).unwrap();
        assert!(valid.blobs.is_empty());
        assert_eq!(valid.manifests[0].digest, LAYER);
    }

    #[test]
    fn malformed_documents_are_refused() {
        for bad in [
            json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": CONFIG, "size": 1}}),
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST}),
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX}),
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:short", "size": 1}}),
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": CONFIG, "size": -1}}),
        ] {
            let error = validate(&serde_json::to_vec(&bad).unwrap(), None).unwrap_err();
            assert_eq!(error.code, ErrorCode::ManifestInvalid, "{bad}");
        }
        assert_eq!(
            validate(b"\x00not json", None).unwrap_err().code,
            ErrorCode::ManifestInvalid
        );
    }
}
