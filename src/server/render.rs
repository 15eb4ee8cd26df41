//! Renderings of stored objects other than their own JSON: the meta.k8s.io Table kubectl
//! prints, and PartialObjectMetadata[List], which the namespace controller, the garbage
//! collector and client-go's metadata client ask for.

use bytes::Bytes;
use serde_json::{Value, json};

use super::negotiate::{IncludeObject, Output};
use super::status::ApiError;
use crate::api::table::{cells, column_definitions};
use crate::registry::decode_stored;

/// One row for an object's stored bytes.
fn row(bytes: &[u8], include: IncludeObject, now: jiff::Timestamp) -> Result<Value, ApiError> {
    let image = decode_stored(bytes)?;
    let mut row = json!({"cells": cells(&image, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial(bytes, "v1")?,
        IncludeObject::Object => {
            row["object"] =
                serde_json::from_slice(bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    Ok(row)
}

/// A Table of `objects`; `columns` false leaves the column definitions out (watch events
/// after the first).
fn table(
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

/// An object's metadata as a PartialObjectMetadata of meta.k8s.io/`version`.
fn partial(bytes: &[u8], version: &str) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    struct MetadataOnly {
        metadata: Value,
    }
    let object: MetadataOnly = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object does not decode: {e}")))?;
    Ok(
        json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": object.metadata}),
    )
}

/// One object in `format` (a get, or a watch event's object); `columns` as for [`table`].
/// `None` for plain JSON, which is served as stored.
pub fn object(
    format: Output,
    bytes: &Bytes,
    resource_version: &str,
    columns: bool,
) -> Result<Option<Value>, ApiError> {
    match format {
        Output::Json => Ok(None),
        Output::Table(include) => table(
            std::slice::from_ref(bytes),
            include,
            resource_version,
            None,
            columns,
        )
        .map(Some),
        Output::Metadata(version) => partial(bytes, version).map(Some),
    }
}

/// A list in `format`; `None` for plain JSON.
pub fn list(
    format: Output,
    objects: &[Bytes],
    resource_version: &str,
    continue_token: Option<&str>,
) -> Result<Option<Value>, ApiError> {
    match format {
        Output::Json => Ok(None),
        Output::Table(include) => {
            table(objects, include, resource_version, continue_token, true).map(Some)
        }
        Output::Metadata(version) => {
            let items = objects
                .iter()
                .map(|o| partial(o, version))
                .collect::<Result<Vec<_>, _>>()?;
            let mut metadata = json!({"resourceVersion": resource_version});
            if let Some(token) = continue_token {
                metadata["continue"] = token.into();
            }
            Ok(Some(
                json!({"kind": "PartialObjectMetadataList", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": metadata, "items": items}),
            ))
        }
    }
}
