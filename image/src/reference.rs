//! Docker-style image references: `NAME[:TAG][@sha256:HEX]`.
//!
//! Names are normalised the way Docker does, so `busybox`, `library/busybox` and
//! `docker.io/library/busybox` are the same image: a first path component with a `.` or a
//! `:` (or `localhost`) is a registry, otherwise the registry is `docker.io`, and a
//! single-component name on docker.io gets the `library/` prefix. The tag defaults to
//! `latest`.
//!
//! # The cluster repository
//! Every image comes from the cluster registry: no outside registry is ever contacted. A
//! reference names a repository there ([`Reference::cluster_repository`]):
//! - on `docker.io`, the repository without Docker's `library/` prefix: `busybox` →
//!   `busybox`, `team/app` → `team/app`;
//! - on a registry with a port, or `localhost`, the repository as is: such a name is taken
//!   to be the cluster registry's own address (`127.0.0.1:7443/app:v1` → `app`);
//! - on any other registry, the host becomes the first path component, so names from
//!   different registries stay apart: `ghcr.io/foo/bar` → `ghcr.io/foo/bar`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Digest;

use crate::error::{ImageError, Result};
use crate::store::parse_digest;

const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `registry:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`, `team/app`.
    pub repository: String,
    /// Tag (`latest` when none was given).
    pub tag: String,
    /// Digest pinned with `@sha256:...`, if any; it wins over the tag when resolving.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse a reference such as `busybox`, `busybox:1.36`, `registry:5000/team/app:v1`
    /// or `app@sha256:...`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d)?.to_string())),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), path)
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name),
        };
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(bad("invalid registry host"));
        }
        for component in path.split('/') {
            let valid = !component.is_empty()
                && component.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && component.starts_with(|c: char| c.is_ascii_alphanumeric())
                && component.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !valid {
                return Err(bad(
                    "name components must be lowercase [a-z0-9] joined by '.', '_' or '-'",
                ));
            }
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            registry,
            repository,
            tag: tag.unwrap_or(DEFAULT_TAG).to_owned(),
            digest,
        })
    }

    /// `registry/repository:tag`, the key images are recorded under.
    pub fn name_tag(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }

    /// The repository this image has in the cluster registry (see the module doc).
    pub fn cluster_repository(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else if self.registry.contains(':') || self.registry == "localhost" {
            self.repository.clone()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The pinned digest, parsed.
    pub fn pinned_digest(&self) -> Option<Digest> {
        self.digest.as_deref().and_then(|d| parse_digest(d).ok())
    }
}

impl FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name_tag())?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nt(s: &str) -> String {
        Reference::parse(s).unwrap().name_tag()
    }

    #[test]
    fn docker_style_names() {
        assert_eq!(nt("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(nt("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(nt("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            nt("docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(nt("registry:5000/team/app:v1"), "registry:5000/team/app:v1");
        assert_eq!(nt("localhost/app"), "localhost/app:latest");
        assert_eq!(nt("quay.io/team/app"), "quay.io/team/app:latest");
        let hex = "a".repeat(64);
        let r = Reference::parse(&format!("busybox:1.36@sha256:{hex}")).unwrap();
        assert_eq!(r.tag, "1.36");
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{hex}").as_str()));
        assert!(r.pinned_digest().is_some());
    }

    #[test]
    fn cluster_repositories() {
        let repo = |s: &str| Reference::parse(s).unwrap().cluster_repository();
        assert_eq!(repo("busybox"), "busybox");
        assert_eq!(repo("library/busybox:1.36"), "busybox");
        assert_eq!(repo("docker.io/library/busybox"), "busybox");
        assert_eq!(repo("team/app"), "team/app");
        assert_eq!(repo("docker.io/team/app:v1"), "team/app");
        assert_eq!(repo("127.0.0.1:7443/app:v1"), "app");
        assert_eq!(repo("registry:5000/team/app"), "team/app");
        assert_eq!(repo("localhost/app"), "app");
        assert_eq!(repo("ghcr.io/foo/bar"), "ghcr.io/foo/bar");
        assert_eq!(repo("quay.io/team/app:v2"), "quay.io/team/app");
        let hex = "b".repeat(64);
        assert_eq!(repo(&format!("app@sha256:{hex}")), "app");
    }

    #[test]
    fn invalid_references() {
        for s in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "app@sha256:zz",
            "/app",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?} should be refused");
        }
    }
}
