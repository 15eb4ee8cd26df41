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

/// A field's path as kube-apiserver writes it in warnings: `spec.metadata.targets[0].name`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
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
    let mut record = |path: serde_ignored::Path| unknown.push(field_path(&path));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let object = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": "a"},
            "spec": {"registryUrl": "quay.io/a/b:1", "bogus": 1},
            "status": {"registryMetadata": {"platformVariants": [
                {"os": "linux", "platform": {"os": "linux"}}
            ]}},
        });
        let (image, warnings) = decode_object(&object, FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            [
                r#"unknown field "spec.bogus""#,
                r#"unknown field "status.registryMetadata.platformVariants[0].platform""#,
            ]
        );
        let variants = image
            .status
            .unwrap()
            .registry_metadata
            .unwrap()
            .platform_variants;
        assert_eq!(variants[0].os.as_deref(), Some("linux"));
        assert!(decode_object(&object, FieldValidation::Strict).is_err());
    }
}
