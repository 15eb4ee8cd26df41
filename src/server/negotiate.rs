//! Content negotiation: which representation a request's Accept header asks for, the first
//! one we can serve winning, as kube-apiserver's negotiation does.

use http::{HeaderMap, header};

use crate::api::status::ApiError;

/// The request's Accept header, if it is text.
pub fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// How a response body is written: JSON, or YAML as kube-apiserver serves `application/yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Yaml,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Yaml => "application/yaml",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Table(IncludeObject),
    /// PartialObjectMetadata (or ...List for lists) of meta.k8s.io at this version.
    Metadata(&'static str),
}

const SUPPORTED: [&str; 4] = [
    "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
    "application/json",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/yaml",
];

/// One media range of an Accept header: type/subtype and its parameters.
struct MediaRange<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

fn media_ranges(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let essence = parts.next().unwrap_or("");
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
                .collect();
            MediaRange { essence, params }
        })
        .collect()
}

/// Whether the Accept header asks for aggregated discovery v2 before anything else we serve.
pub fn wants_aggregated_discovery(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    for range in media_ranges(accept) {
        if range.essence == "application/json"
            && range.param("g") == Some("apidiscovery.k8s.io")
            && range.param("v") == Some("v2")
        {
            return true;
        }
        if matches!(range.essence, "application/json" | "*/*" | "application/*")
            && range.param("as").is_none()
        {
            return false;
        }
    }
    false
}

/// How a response carries objects: whole (an object or a list), or as a stream of watch
/// events, which rules YAML out, as kube-apiserver has no YAML stream serializer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Whole,
    Events,
}

/// The representation and encoding for an object or list response, or a watch.
/// `include_object` is the query parameter.
pub fn output(
    accept: Option<&str>,
    include_object: Option<&str>,
    delivery: Delivery,
) -> Result<(Output, Encoding), ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok((Output::Json, Encoding::Json));
    };
    for range in media_ranges(accept) {
        let encoding = match range.essence {
            "application/json" | "*/*" | "application/*" => Encoding::Json,
            "application/yaml" if delivery == Delivery::Whole => Encoding::Yaml,
            _ => continue, // protobuf, cbor...: not served here, try the next one
        };
        let format = match (range.param("as"), range.param("g"), range.param("v")) {
            (None, _, _) => Output::Json,
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => {
                Output::Table(match include_object {
                    None | Some("") | Some("Metadata") => IncludeObject::Metadata,
                    Some("None") => IncludeObject::None,
                    Some("Object") => IncludeObject::Object,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported includeObject {other:?}"
                        )));
                    }
                })
            }
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1"),
            ) => Output::Metadata("v1"),
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1beta1"),
            ) => Output::Metadata("v1beta1"),
            _ => continue,
        };
        return Ok((format, encoding));
    }
    Err(ApiError::not_acceptable(&SUPPORTED))
}

/// The encoding for a response that is always a plain object (Status, written objects).
pub fn encoding(accept: Option<&str>) -> Encoding {
    output(accept, None, Delivery::Whole)
        .map(|(_, encoding)| encoding)
        .unwrap_or(Encoding::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            output(Some(table), None, Delivery::Whole).unwrap().0,
            Output::Table(IncludeObject::Metadata)
        );
        assert_eq!(
            output(Some(table), Some("Object"), Delivery::Whole)
                .unwrap()
                .0,
            Output::Table(IncludeObject::Object)
        );
        assert_eq!(
            output(None, None, Delivery::Whole).unwrap(),
            (Output::Json, Encoding::Json)
        );
        assert_eq!(
            output(Some("*/*"), None, Delivery::Events).unwrap().0,
            Output::Json
        );
        assert_eq!(
            output(Some("application/yaml"), None, Delivery::Whole).unwrap(),
            (Output::Json, Encoding::Yaml)
        );
        assert_eq!(
            output(Some("application/yaml"), None, Delivery::Events)
                .unwrap_err()
                .code,
            406
        );
        assert_eq!(
            output(
                Some("application/vnd.kubernetes.protobuf, application/json"),
                None,
                Delivery::Whole
            )
            .unwrap()
            .0,
            Output::Json
        );
        assert_eq!(
            output(
                Some("application/vnd.kubernetes.protobuf"),
                None,
                Delivery::Whole
            )
            .unwrap_err()
            .code,
            406
        );
        let metadata = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            output(Some(metadata), None, Delivery::Whole).unwrap().0,
            Output::Metadata("v1")
        );
        assert!(wants_aggregated_discovery(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_aggregated_discovery(Some(
            "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )));
        assert!(!wants_aggregated_discovery(None));
    }
}
