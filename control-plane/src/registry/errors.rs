//! Registry errors as the distribution spec words them: an HTTP status and a body
//! `{"errors":[{"code":"BLOB_UNKNOWN","message":"...","detail":...}]}` that registry clients
//! show their users.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The spec's error codes (plus `UNKNOWN`, Docker's code for a server-side failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unsupported,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The status the spec gives the code where it is not overridden.
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request the registry refuses or could not serve.
#[derive(Debug, thiserror::Error)]
#[error("{} {}: {message}", .status.as_u16(), .code.as_str())]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<Value>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            status: code.status(),
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        RegistryError::new(ErrorCode::Unavailable, message)
    }

    /// A failure of this member (disk, store): the client may retry.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        RegistryError::new(ErrorCode::Unknown, message.to_string())
    }

    pub fn name_invalid(name: &str) -> Self {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "{name:?} is not a valid repository name: lowercase letters and digits, \
                 separated by '.', '_', '__' or '-', in '/'-separated components, at most 255 \
                 characters"
            ),
        )
        .with_detail(json!({ "name": name }))
    }

    pub fn digest_invalid(message: impl Into<String>, digest: &str) -> Self {
        RegistryError::new(ErrorCode::DigestInvalid, message)
            .with_detail(json!({ "digest": digest }))
    }

    /// A failed Raft proposal or read barrier.
    pub fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                RegistryError::unavailable(status.message())
            }
            _ => RegistryError::internal(status.message()),
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        json!({ "errors": [error] })
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        // No leader for a moment (an election) is routine; other server errors are not.
        if self.status.is_server_error() && self.code != ErrorCode::Unavailable {
            tracing::warn!(code = self.code.as_str(), "registry: {}", self.message);
        } else {
            tracing::debug!(code = self.code.as_str(), "registry: {}", self.message);
        }
        let body = serde_json::to_vec(&self.body()).expect("JSON values serialise");
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_spec() {
        let error = RegistryError::digest_invalid("content does not match", "sha256:ab");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.body(),
            json!({"errors": [{"code": "DIGEST_INVALID", "message": "content does not match",
                               "detail": {"digest": "sha256:ab"}}]})
        );
        let error = RegistryError::new(ErrorCode::ManifestInvalid, "too big")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.status.as_u16(), 413);
        assert_eq!(error.body()["errors"][0].get("detail"), None);
        let error = RegistryError::from_status(tonic::Status::unavailable("no leader"));
        assert_eq!(
            (error.status, error.code),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
        );
    }
}
