//! Rendering objects as a meta.k8s.io/v1 Table for kubectl.

use bytes::Bytes;
use serde_json::{Value, json};

use super::negotiate::IncludeObject;
use super::status::ApiError;
use crate::api::table::{cells, column_definitions};
use crate::registry::decode_stored;

/// One row for an object's stored bytes.
pub fn row(bytes: &[u8], include: IncludeObject, now: jiff::Timestamp) -> Result<Value, ApiError> {
    let image = decode_stored(bytes)?;
    let mut row = json!({"cells": cells(&image, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = serde_json::to_value(&image.metadata)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
        }
        IncludeObject::Object => {
            row["object"] =
                serde_json::from_slice(bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    Ok(row)
}

/// A Table of `objects`; `columns` false leaves the column definitions out (watch events
/// after the first).
pub fn table(
    objects: &[Bytes],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    columns: bool,
) -> Result<Value, ApiError> {
    let now = jiff::Timestamp::now();
    let rows = objects
        .iter()
        .map(|o| row(o, include, now))
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = token.into();
    }
    let definitions = if columns {
        column_definitions()
    } else {
        json!([])
    };
    Ok(
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows}),
    )
}
