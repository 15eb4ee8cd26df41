//! What a request says, decoded once into the registry's typed values: bodies (JSON or YAML,
//! bounded), `fieldValidation`, DeleteOptions, and the list and watch parameters. Everything
//! malformed is a 400 here, before the registry is asked anything.

use http::{HeaderMap, header};
use serde_json::Value;

use super::query::Query;
use crate::api::decode::FieldValidation;
use crate::api::selector::Selector;
use crate::api::status::ApiError;
use crate::registry::{DeleteOptions, ListQuery, RevisionMatch, check_object_size};

/// YAML nodes (scalars, sequences, mappings, aliases expanded) one body may decode into: an
/// object of MAX_OBJECT_BYTES written as YAML has far fewer.
const MAX_YAML_NODES: usize = 200_000;
/// YAML aliases one body may use, bounded as sigs.k8s.io/yaml's parser bounds them
/// ("excessive aliasing").
const MAX_YAML_ALIASES: usize = 1_000;
/// The media types of create and update bodies.
const WRITE_TYPES: [&str; 2] = ["application/json", "application/yaml"];

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("application/json")
        .trim()
}

pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

/// Parses a YAML body into JSON with its nodes and aliases bounded: a "billion laughs" body
/// of a few lines would otherwise expand into gigabytes.
pub fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_aliases = MAX_YAML_ALIASES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let value: Value = serde_saphyr::from_slice_with_options(body, options)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?;
    check_object_size(&value)?;
    Ok(value)
}

/// A create or update body, JSON or YAML as its Content-Type says.
pub fn object_document(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    match content_type(headers) {
        "application/json" | "" | "*/*" => parse_json(body),
        "application/yaml" => parse_yaml(body),
        other => Err(ApiError::unsupported_media_type(other, &WRITE_TYPES)),
    }
}

pub fn field_validation(query: &Query) -> Result<FieldValidation, ApiError> {
    match query.get("fieldValidation") {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
        ))),
    }
}

/// DeleteOptions from the body (none: the defaults), with the query's `propagationPolicy` and
/// `orphanDependents` (as kube-apiserver takes them from either), checked.
pub fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut options = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(policy) = query.get("propagationPolicy") {
        options.propagation_policy = Some(policy.to_string());
    }
    if query.get("orphanDependents").is_some() {
        options.orphan_dependents = Some(query.flag("orphanDependents")?);
    }
    if let Some(policy) = &options.propagation_policy
        && !["Orphan", "Background", "Foreground"].contains(&policy.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy {policy:?} is not one of Orphan, Background, Foreground"
        )));
    }
    if options.orphan_dependents.is_some() && options.propagation_policy.is_some() {
        return Err(ApiError::bad_request(
            "orphanDependents and propagationPolicy may not both be set",
        ));
    }
    if options.grace_period_seconds.is_some_and(|g| g < 0) {
        return Err(ApiError::bad_request(
            "gracePeriodSeconds must be 0 or more",
        ));
    }
    Ok(options)
}

/// A resourceVersion parameter: none when empty, else a revision this server wrote.
pub fn resource_version(query: &Query) -> Result<Option<u64>, ApiError> {
    match query.get("resourceVersion") {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion {text:?} is not valid: it was not returned by this server"
            ))
        }),
    }
}

/// The parameters of a list or watch.
pub fn list_query(namespace: Option<String>, query: &Query) -> Result<ListQuery, ApiError> {
    let resource_version_match = match query.get("resourceVersionMatch") {
        None | Some("") => None,
        Some("NotOlderThan") => Some(RevisionMatch::NotOlderThan),
        Some("Exact") => Some(RevisionMatch::Exact),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: unsupported value {other:?}"
            )));
        }
    };
    Ok(ListQuery {
        namespace,
        selector: Selector::parse(query.get("labelSelector"), query.get("fieldSelector"))?,
        limit: query
            .number("limit")?
            .filter(|l| *l > 0)
            .map(|l| l as usize),
        continue_token: query
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        resource_version: resource_version(query)?,
        resource_version_match,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_alias_bombs_are_refused() {
        let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            yaml.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert_eq!(
            parse_yaml(yaml.as_bytes()).unwrap_err().code,
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_yaml(b"a: &x [1]\nb: *x\n").unwrap(),
            json!({"a": [1], "b": [1]})
        );
    }
}
