//! The kinds berth serves and one enum, [`Resource`], that holds an object of any of them.
//!
//! The types themselves are Kubernetes' own (k8s-openapi); this module only adds what every
//! part of berth needs to handle objects without knowing their kind: names and aliases, scope,
//! access to metadata, and the JSON form that travels in the API and the Raft log.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The namespace objects land in when their manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

macro_rules! kinds {
    ($( $kind:ident { plural: $plural:literal, short: [$($short:literal),*], namespaced: $ns:literal } ),* $(,)?) => {
        /// A kind of object berth stores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Kind { $($kind),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            /// `Deployment`, as written in a manifest's `kind:`.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$kind => stringify!($kind)),* }
            }

            /// `apps/v1`, as written in a manifest's `apiVersion:`.
            pub fn api_version(self) -> &'static str {
                match self { $(Kind::$kind => <$kind as k8s_openapi::Resource>::API_VERSION),* }
            }

            /// `apps`, or empty for the core group.
            pub fn group(self) -> &'static str {
                match self { $(Kind::$kind => <$kind as k8s_openapi::Resource>::GROUP),* }
            }

            /// `deployments`.
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$kind => $plural),* }
            }

            /// kubectl's short names: `deploy`, `po`, `svc`...
            pub fn short_names(self) -> &'static [&'static str] {
                match self { $(Kind::$kind => &[$($short),*]),* }
            }

            /// Whether objects of this kind live in a namespace (Pod) or the cluster (Node).
            pub fn namespaced(self) -> bool {
                match self { $(Kind::$kind => $ns),* }
            }
        }

        /// One object of any kind berth stores.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource { $($kind(Box<$kind>)),* }

        impl Resource {
            pub fn kind(&self) -> Kind {
                match self { $(Resource::$kind(_) => Kind::$kind),* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $(Resource::$kind(o) => &o.metadata),* }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Resource::$kind(o) => &mut o.metadata),* }
            }

            /// The object as JSON (apiVersion and kind included).
            pub fn to_value(&self) -> serde_json::Value {
                let value = match self { $(Resource::$kind(o) => serde_json::to_value(o)),* };
                value.expect("Kubernetes types always serialise to JSON")
            }

            /// An object of `kind` from its JSON form.
            pub fn from_value(kind: Kind, value: serde_json::Value) -> Result<Self, serde_json::Error> {
                Ok(match kind { $(Kind::$kind => Resource::$kind(Box::new(serde_json::from_value(value)?))),* })
            }
        }

        $(
            impl From<$kind> for Resource {
                fn from(o: $kind) -> Self { Resource::$kind(Box::new(o)) }
            }
        )*
    };
}

kinds! {
    Pod { plural: "pods", short: ["po"], namespaced: true },
    Service { plural: "services", short: ["svc"], namespaced: true },
    ConfigMap { plural: "configmaps", short: ["cm"], namespaced: true },
    Secret { plural: "secrets", short: [], namespaced: true },
    Namespace { plural: "namespaces", short: ["ns"], namespaced: false },
    Node { plural: "nodes", short: ["no"], namespaced: false },
    Deployment { plural: "deployments", short: ["deploy"], namespaced: true },
    ReplicaSet { plural: "replicasets", short: ["rs"], namespaced: true },
    // core/v1 Events: what happened to an object (scheduled, pulled, killed), written by the
    // control plane and the agents, deleted once older than the server's --event-ttl.
    Event { plural: "events", short: ["ev"], namespaced: true },
    // discovery.k8s.io/v1: the ready and serving addresses behind a Service, written by the
    // endpoints controller and read by every node's proxy. kubectl gives it no short name.
    EndpointSlice { plural: "endpointslices", short: [], namespaced: true },
}

impl Kind {
    /// The kind a manifest's `apiVersion` and `kind` name, if berth serves it.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind && k.api_version() == api_version)
    }

    /// The kind a user typed on the command line: singular, plural or short name, any case,
    /// optionally qualified by group (`deployments.apps`).
    pub fn from_alias(alias: &str) -> Option<Kind> {
        let alias = alias.to_ascii_lowercase();
        let (name, group) = match alias.split_once('.') {
            Some((name, group)) => (name.to_string(), Some(group.to_string())),
            None => (alias, None),
        };
        Kind::ALL.iter().copied().find(|k| {
            let name_matches = k.as_str().eq_ignore_ascii_case(&name)
                || k.plural() == name
                || k.short_names().contains(&name.as_str());
            let group_matches = match &group {
                None => true,
                Some(g) => k.group() == g || (k.group().is_empty() && g == "core"),
            };
            name_matches && group_matches
        })
    }

    /// `deployment.apps`, as kubectl names a kind in its output.
    pub fn qualified_name(self) -> String {
        let lower = self.as_str().to_ascii_lowercase();
        match self.group() {
            "" => lower,
            group => format!("{lower}.{group}"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::from_alias(s).ok_or_else(|| UnknownKind(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown kind {0:?}: berth serves {kinds}", kinds = Kind::ALL.iter().map(|k| k.plural()).collect::<Vec<_>>().join(", "))]
pub struct UnknownKind(pub String);

/// Where an object lives in the store: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.namespaced() {
            namespace.into()
        } else {
            String::new()
        };
        ObjectKey {
            kind,
            namespace,
            name: name.into(),
        }
    }

    /// The store key: `Deployment/default/web`, `Node//node-1`. Sorted so that a prefix scan
    /// lists a kind, or a kind within a namespace.
    pub fn storage_key(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    pub fn from_storage_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        let kind_name = parts.next()?;
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind_name)?;
        let namespace = parts.next()?.to_string();
        let name = parts.next()?.to_string();
        Some(ObjectKey {
            kind,
            namespace,
            name,
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.qualified_name(), self.name)
        } else {
            write!(
                f,
                "{}/{} in namespace {}",
                self.kind.qualified_name(),
                self.name,
                self.namespace
            )
        }
    }
}

impl Resource {
    /// The key this object is stored under. Namespaced objects without a namespace go to
    /// `default`.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        ObjectKey::new(
            self.kind(),
            namespace,
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// An object from its JSON form, the kind read from its own `apiVersion` and `kind`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ObjectDecodeError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind_name = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        let kind = Kind::from_manifest(api_version, kind_name)
            .ok_or_else(|| ObjectDecodeError::UnknownKind(format!("{api_version}/{kind_name}")))?;
        Ok(Resource::from_value(kind, value)?)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).expect("Kubernetes types always serialise to JSON")
    }

    /// The stored resourceVersion as a number (berth's are the store revision that last wrote
    /// the object).
    pub fn resource_version(&self) -> Option<u64> {
        self.metadata()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectDecodeError {
    #[error("object is not valid JSON of its kind: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown kind {0}")]
    UnknownKind(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_like_kubectl() {
        for (alias, kind) in [
            ("po", Kind::Pod),
            ("pods", Kind::Pod),
            ("Pod", Kind::Pod),
            ("deploy", Kind::Deployment),
            ("deployments.apps", Kind::Deployment),
            ("rs", Kind::ReplicaSet),
            ("svc", Kind::Service),
            ("cm", Kind::ConfigMap),
            ("secret", Kind::Secret),
            ("secrets", Kind::Secret),
            ("no", Kind::Node),
            ("ns", Kind::Namespace),
            ("ev", Kind::Event),
            ("events", Kind::Event),
            ("endpointslice", Kind::EndpointSlice),
            ("endpointslices", Kind::EndpointSlice),
            ("endpointslices.discovery.k8s.io", Kind::EndpointSlice),
        ] {
            assert_eq!(Kind::from_alias(alias), Some(kind), "{alias}");
        }
        assert_eq!(Kind::from_alias("deployments.core"), None);
        assert!(Kind::from_alias("widgets").is_none());
    }

    #[test]
    fn storage_keys_round_trip() {
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        assert_eq!(key.storage_key(), "Deployment/default/web");
        assert_eq!(ObjectKey::from_storage_key(&key.storage_key()), Some(key));
        let node = ObjectKey::new(Kind::Node, "ignored", "n1");
        assert_eq!(node.storage_key(), "Node//n1");
        assert_eq!(ObjectKey::from_storage_key("Node//n1"), Some(node));
        let config = ObjectKey::new(Kind::ConfigMap, "team", "c");
        assert_eq!(
            ObjectKey::from_storage_key("ConfigMap/team/c"),
            Some(config)
        );
    }

    #[test]
    fn json_round_trip_keeps_kind() {
        let json =
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"}}"#;
        let object = Resource::from_json(json).unwrap();
        assert_eq!(object.kind(), Kind::ConfigMap);
        assert_eq!(
            object.key(),
            ObjectKey::new(Kind::ConfigMap, "default", "c")
        );
        assert_eq!(Resource::from_json(&object.to_json()).unwrap(), object);
    }
}
