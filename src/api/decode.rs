//! Decoding a JSON document into a CatalogImage: a value of the wrong type is 422 naming its
//! field, and unknown fields follow `fieldValidation` (Strict: 400, Warn: dropped with a
//! warning, Ignore: dropped), as kube-apiserver does.

use serde_json::Value;

use crate::api::status::ApiError;
use crate::api::types::{API_VERSION, CatalogImage, KIND};
use crate::api::validate::Cause;

/// What to do with fields the schema does not know (the `fieldValidation` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Decodes `value` as a CatalogImage; returns it with the warnings to send.
pub fn decode_object(
    value: &Value,
    validation: FieldValidation,
) -> Result<(CatalogImage, Vec<String>), ApiError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match value.get(field).and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != expected => {
                return Err(ApiError::bad_request(format!(
                    "the {field} of the provided object ({given}) does not match the expected {field} ({expected})"
                )));
            }
            _ => {}
        }
    }
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path| unknown.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let image: CatalogImage = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let cause = Cause {
            reason: "FieldValueInvalid",
            field,
            message: e.inner().to_string(),
        };
        ApiError::invalid(name, &[cause])
    })?;
    let unknown: Vec<String> = unknown
        .iter()
        .map(|path| format!("unknown field {path:?}"))
        .collect();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok((image, unknown)),
        _ => Ok((image, Vec::new())),
    }
}
