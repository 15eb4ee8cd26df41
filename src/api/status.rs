//! API errors as `metav1.Status` objects, as apimachinery's `api/errors` package makes them:
//! the one place where failures of every layer get their codes, reasons and messages, shaped as
//! kube-apiserver shapes them. The server only writes them out.

use http::StatusCode;
use serde_json::{Value, json};

use crate::api::types::{GROUP, PLURAL};
use crate::api::validate::Cause;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// A continue token to put in the Status's metadata (410 Expired on a list).
    pub continue_token: Option<String>,
}

fn qualified_resource() -> String {
    format!("{PLURAL}.{GROUP}")
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    fn with_name(mut self, name: &str) -> ApiError {
        self.details = Some(json!({"name": name, "group": GROUP, "kind": PLURAL}));
        self
    }

    /// A 409 Conflict from optimistic concurrency: the write may be retried on a fresh read.
    /// Not an apply's conflict over field ownership (its causes name the fields), which a
    /// retry would only meet again.
    pub fn is_conflict(&self) -> bool {
        let names_causes = self
            .details
            .as_ref()
            .is_some_and(|d| d.get("causes").is_some());
        self.code == StatusCode::CONFLICT && self.reason == "Conflict" && !names_causes
    }

    pub fn is_not_found(&self) -> bool {
        self.code == StatusCode::NOT_FOUND
    }

    pub fn is_already_exists(&self) -> bool {
        self.code == StatusCode::CONFLICT && self.reason == "AlreadyExists"
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {name:?} not found", qualified_resource()),
        )
        .with_name(name)
    }

    pub fn path_not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified_resource()),
        )
        .with_name(name)
    }

    pub fn conflict(name: &str, why: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified_resource()
        );
        ApiError::new(StatusCode::CONFLICT, "Conflict", message).with_name(name)
    }

    pub fn stale(name: &str) -> ApiError {
        ApiError::conflict(
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(name: &str, causes: &[Cause]) -> ApiError {
        let listed: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if listed.len() == 1 {
            listed[0].clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let message = format!("CatalogImage.{GROUP} {name:?} is invalid: {summary}");
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
        error.details =
            Some(json!({"name": name, "group": GROUP, "kind": "CatalogImage", "causes": causes}));
        error
    }

    pub fn method_not_allowed(method: &http::Method) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )
    }

    pub fn unsupported_media_type(content_type: &str, supported: &[&str]) -> ApiError {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            supported.join(", ")
        );
        let mut error = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        );
        error.details = Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": content_type}]}),
        );
        error
    }

    pub fn not_acceptable(supported: &[&str]) -> ApiError {
        let message = format!(
            "only the following media types are accepted: {}",
            supported.join(", ")
        );
        ApiError::new(StatusCode::NOT_ACCEPTABLE, "NotAcceptable", message)
    }

    /// A watch or exact read from a revision that has been compacted.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    /// A read or watch at a revision the store has not reached, as the storage layer's
    /// NewTooLargeResourceVersionError shapes it: 504, retry after a second.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        let mut error = ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        ));
        error.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }));
        error
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut metadata = json!({});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = token.clone().into();
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl From<catalog_storage::StorageError> for ApiError {
    fn from(e: catalog_storage::StorageError) -> ApiError {
        tracing::error!(error = %e, "storage failed");
        match e {
            // Another replica may still serve: 503, which clients and the aggregator retry.
            catalog_storage::StorageError::Shared(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("storage: {e}"),
            ),
            e => ApiError::internal(format!("storage: {e}")),
        }
    }
}
