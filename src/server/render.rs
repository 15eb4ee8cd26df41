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

use super::negotiate::{Encoding, IncludeObject, Output};
use super::response::to_yaml;
use crate::api::status::ApiError;
use crate::api::table::{RowFields, cells, column_definitions};
use crate::api::types::{API_VERSION, LIST_KIND};

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

/// A list's metadata (metav1.ListMeta), its fields in kube-apiserver's order.
#[derive(Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta<'a> {
    pub resource_version: &'a str,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<u64>,
}

impl<'a> ListMeta<'a> {
    /// The metadata of a whole list at `resource_version`.
    pub fn at(resource_version: &'a str) -> Self {
        ListMeta {
            resource_version,
            ..ListMeta::default()
        }
    }
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

/// Whether a Table carries its column definitions: watch events after the first leave them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    Defined,
    Omitted,
}

/// A Table of `objects`.
fn table(
    objects: &[Bytes],
    include: IncludeObject,
    metadata: ListMeta,
    columns: Columns,
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
            Columns::Defined => column_definitions(),
            Columns::Omitted => Value::Array(Vec::new()),
        },
        kind: "Table",
        metadata,
        rows: objects
            .iter()
            .map(|o| Row::of(o, include, now))
            .collect::<Result<_, _>>()?,
    };
    to_bytes(&table)
}

fn yaml(json: &[u8]) -> Result<String, ApiError> {
    to_yaml(json)
}

/// A CatalogImageList of stored objects, as stored: nothing is decoded.
pub fn plain_list(objects: &[Bytes], metadata: ListMeta) -> Bytes {
    let metadata = serde_json::to_string(&metadata).expect("list metadata serialises");
    let mut body = format!(
        r#"{{"kind":"{LIST_KIND}","apiVersion":"{API_VERSION}","metadata":{metadata},"items":["#
    )
    .into_bytes();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(object);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

fn to_bytes(value: &impl Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The resourceVersion stored bytes carry (every object this server stores or sends has one).
fn resource_version(bytes: &[u8]) -> Result<&str, ApiError> {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        metadata: Metadata<'a>,
    }
    #[derive(Deserialize)]
    struct Metadata<'a> {
        #[serde(rename = "resourceVersion", default)]
        resource_version: &'a str,
    }
    let object: Object = serde_json::from_slice(bytes).map_err(undecodable)?;
    Ok(object.metadata.resource_version)
}

/// One object in `format` (a get, a write's answer, or a watch event's object); a Table of
/// it carries the object's resourceVersion; `columns` as for [`table`]. `None` for plain
/// JSON, which is served as stored.
pub fn object(format: Output, bytes: &Bytes, columns: Columns) -> Result<Option<Bytes>, ApiError> {
    match format {
        Output::Json => Ok(None),
        Output::Table(include) => table(
            std::slice::from_ref(bytes),
            include,
            ListMeta::at(resource_version(bytes)?),
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
    metadata: ListMeta,
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
        Output::Table(include) => table(objects, include, metadata, Columns::Defined).map(Some),
        Output::Metadata(version) => to_bytes(&MetadataList {
            api_version: format!("meta.k8s.io/{version}"),
            items: objects
                .iter()
                .map(|o| Partial::of(o, version))
                .collect::<Result<_, _>>()?,
            kind: "PartialObjectMetadataList",
            metadata,
        })
        .map(Some),
    }
}

/// A whole list written piece by piece, so that no more than a page of it is ever in memory:
/// the envelope's start, the items a page at a time, then its end. Every format and encoding
/// the list is served in splits this way: the envelope is the list as it would be with no
/// items, cut where its (empty) items array is.
pub struct ListPieces {
    format: Output,
    encoding: Encoding,
    /// `rows` for a Table, else `items`.
    array: &'static str,
    now: jiff::Timestamp,
    head: Vec<u8>,
    tail: Vec<u8>,
    written: usize,
}

impl ListPieces {
    pub fn new(
        format: Output,
        encoding: Encoding,
        resource_version: &str,
    ) -> Result<Self, ApiError> {
        let metadata = ListMeta::at(resource_version);
        let empty = match list(format, &[], metadata)? {
            Some(rendered) => rendered,
            None => plain_list(&[], metadata),
        };
        let array = match format {
            Output::Table(_) => "rows",
            _ => "items",
        };
        let (text, marker) = match encoding {
            Encoding::Json => (
                String::from_utf8_lossy(&empty).into_owned(),
                format!("\"{array}\":[]"),
            ),
            Encoding::Yaml => (yaml(&empty)?, format!("{array}: []\n")),
        };
        let at = text
            .find(&marker)
            .ok_or_else(|| ApiError::internal(format!("the empty list has no {array}")))?;
        let (head, tail) = (&text[..at], &text[at + marker.len()..]);
        let (head, tail) = match encoding {
            Encoding::Json => (format!("{head}\"{array}\":["), format!("]{tail}")),
            // YAML's items open with their first one: an empty list keeps its `[]`.
            Encoding::Yaml => (head.to_string(), tail.to_string()),
        };
        Ok(ListPieces {
            format,
            encoding,
            array,
            now: jiff::Timestamp::now(),
            head: head.into_bytes(),
            tail: tail.into_bytes(),
            written: 0,
        })
    }

    pub fn head(&self) -> Bytes {
        Bytes::copy_from_slice(&self.head)
    }

    /// The next items, as they follow those already written.
    pub fn items(&mut self, objects: &[Bytes]) -> Result<Bytes, ApiError> {
        let mut out = Vec::with_capacity(objects.iter().map(|o| o.len() + 8).sum());
        for object in objects {
            let item = match self.format {
                Output::Json => None,
                Output::Table(include) => Some(to_bytes(&Row::of(object, include, self.now)?)?),
                Output::Metadata(version) => Some(to_bytes(&Partial::of(object, version)?)?),
            };
            let item = item.as_ref().unwrap_or(object);
            match self.encoding {
                Encoding::Json => {
                    if self.written > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(item);
                }
                Encoding::Yaml => {
                    if self.written == 0 {
                        out.extend_from_slice(format!("{}:\n", self.array).as_bytes());
                    }
                    for (i, line) in yaml(item)?.lines().enumerate() {
                        out.extend_from_slice(if i == 0 { b"- " } else { b"  " });
                        out.extend_from_slice(line.as_bytes());
                        out.push(b'\n');
                    }
                }
            }
            self.written += 1;
        }
        Ok(Bytes::from(out))
    }

    pub fn tail(&self) -> Bytes {
        match (self.encoding, self.written) {
            (Encoding::Yaml, 0) => Bytes::from(
                [
                    format!("{}: []\n", self.array).into_bytes(),
                    self.tail.clone(),
                ]
                .concat(),
            ),
            _ => Bytes::copy_from_slice(&self.tail),
        }
    }
}
