//! Renderings of stored objects other than their own JSON: the meta.k8s.io Table kubectl
//! prints, and PartialObjectMetadata[List], which the namespace controller, the garbage
//! collector and client-go's metadata client ask for.
//!
//! Each is written straight from the stored bytes: an object's metadata is passed through as
//! stored, and a row reads only the fields its cells show.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::negotiate::{IncludeObject, Output};
use super::status::ApiError;
use crate::api::table::{RowFields, cells, column_definitions};

fn undecodable(e: serde_json::Error) -> ApiError {
    ApiError::internal(format!("stored object does not decode: {e}"))
}

/// An object's metadata as a PartialObjectMetadata of meta.k8s.io/`version`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Partial<'a> {
    api_version: String,
    kind: &'static str,
    metadata: &'a RawValue,
}

impl<'a> Partial<'a> {
    fn of(bytes: &'a [u8], version: &str) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct MetadataOnly<'a> {
            #[serde(borrow)]
            metadata: &'a RawValue,
        }
        let object: MetadataOnly = serde_json::from_slice(bytes).map_err(undecodable)?;
        Ok(Partial {
            api_version: format!("meta.k8s.io/{version}"),
            kind: "PartialObjectMetadata",
            metadata: object.metadata,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta<'a> {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<&'a str>,
    resource_version: &'a str,
}

#[derive(Serialize)]
struct Row<'a> {
    cells: [String; 9],
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<RowObject<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RowObject<'a> {
    Metadata(Partial<'a>),
    Whole(&'a RawValue),
}

impl<'a> Row<'a> {
    fn of(bytes: &'a [u8], include: IncludeObject, now: jiff::Timestamp) -> Result<Self, ApiError> {
        let fields: RowFields = serde_json::from_slice(bytes).map_err(undecodable)?;
        let object = match include {
            IncludeObject::None => None,
            IncludeObject::Metadata => Some(RowObject::Metadata(Partial::of(bytes, "v1")?)),
            IncludeObject::Object => Some(RowObject::Whole(
                serde_json::from_slice(bytes).map_err(undecodable)?,
            )),
        };
        Ok(Row {
            cells: cells(&fields, now),
            object,
        })
    }
}

/// A Table of `objects`; `columns` false leaves the column definitions out (watch events
/// after the first).
fn table(
    objects: &[Bytes],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    columns: bool,
) -> Result<Bytes, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Table<'a> {
        api_version: &'static str,
        column_definitions: Value,
        kind: &'static str,
        metadata: ListMeta<'a>,
        rows: Vec<Row<'a>>,
    }
    let now = jiff::Timestamp::now();
    let table = Table {
        api_version: "meta.k8s.io/v1",
        column_definitions: match columns {
            true => column_definitions(),
            false => Value::Array(Vec::new()),
        },
        kind: "Table",
        metadata: ListMeta {
            continue_token,
            resource_version,
        },
        rows: objects
            .iter()
            .map(|o| Row::of(o, include, now))
            .collect::<Result<_, _>>()?,
    };
    to_bytes(&table)
}

fn to_bytes(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// One object in `format` (a get, or a watch event's object); `columns` as for [`table`].
/// `None` for plain JSON, which is served as stored.
pub fn object(
    format: Output,
    bytes: &Bytes,
    resource_version: &str,
    columns: bool,
) -> Result<Option<Bytes>, ApiError> {
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
        Output::Metadata(version) => to_bytes(&Partial::of(bytes, version)?).map(Some),
    }
}

/// A list in `format`; `None` for plain JSON.
pub fn list(
    format: Output,
    objects: &[Bytes],
    resource_version: &str,
    continue_token: Option<&str>,
) -> Result<Option<Bytes>, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct MetadataList<'a> {
        api_version: String,
        items: Vec<Partial<'a>>,
        kind: &'static str,
        metadata: ListMeta<'a>,
    }
    match format {
        Output::Json => Ok(None),
        Output::Table(include) => {
            table(objects, include, resource_version, continue_token, true).map(Some)
        }
        Output::Metadata(version) => to_bytes(&MetadataList {
            api_version: format!("meta.k8s.io/{version}"),
            items: objects
                .iter()
                .map(|o| Partial::of(o, version))
                .collect::<Result<_, _>>()?,
            kind: "PartialObjectMetadataList",
            metadata: ListMeta {
                continue_token,
                resource_version,
            },
        })
        .map(Some),
    }
}
