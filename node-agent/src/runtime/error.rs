//! Failures of the container runtime.

use std::path::PathBuf;

use super::rootfs::RootfsError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {0:?}: use 1-128 characters of [A-Za-z0-9_.+-]")]
    InvalidId(String),
    #[error("container {0} already exists")]
    AlreadyExists(String),
    #[error("no container {0}")]
    NotFound(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("the spec: {0}")]
    Spec(String),
    /// The shim failed before it could report (it could not even record a start error).
    #[error("the shim of container {id} failed: {message}")]
    Shim { id: String, message: String },
    #[error("signalling container {id}: {source}")]
    Signal {
        id: String,
        #[source]
        source: nix::Error,
    },
    #[error("{path} is still mounted; not removing it")]
    StillMounted { path: PathBuf },
    #[error("starting the exec helper: {0}")]
    Exec(String),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}
