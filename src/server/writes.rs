//! The write verbs: create, update, patch (JSON, merge, server-side apply), delete and
//! deletecollection, each with its options decoded from the request and its answer in the form
//! the client negotiated before anything was written.

use http::{HeaderMap, Response, StatusCode, header};
use serde_json::json;

use super::App;
use super::decode;
use super::negotiate::{Encoding, Output, accept, encoding};
use super::query::Query;
use super::render;
use super::response::{Body, encoded, object_response, response_form, with_warnings};
use crate::api::decode::decode_object;
use crate::api::openapi;
use crate::api::selector::Selector;
use crate::api::status::ApiError;
use crate::api::types::CatalogImage;
use crate::auth::identity::Identity;
use crate::auth::secret_access;
use crate::registry::{ApplyOptions, PatchKind, Subresource, WriteOptions, Written};

fn write_options(
    app: &App,
    identity: &Identity,
    headers: &HeaderMap,
    query: &Query,
) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        dry_run: query.dry_run()?,
        field_validation: decode::field_validation(query)?,
        manager: field_manager(headers, query)?,
        secret_access: Some(secret_access(app.auth.clone(), identity.clone())),
    })
}

/// The field manager of a write: `fieldManager`, else the User-Agent's product name, as
/// kube-apiserver names writers that do not say (kubectl-edit, kube-controller-manager, ...).
fn field_manager(headers: &HeaderMap, query: &Query) -> Result<String, ApiError> {
    match query.get("fieldManager") {
        Some(manager) if manager.len() > 128 => Err(invalid_option(
            "fieldManager",
            "must be no more than 128 characters",
        )),
        Some(manager) if manager.chars().any(|c| c.is_control()) => Err(invalid_option(
            "fieldManager",
            "must only contain printable characters",
        )),
        Some(manager) if !manager.is_empty() => Ok(manager.to_string()),
        _ => {
            let agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let product: String = agent
                .split('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(128)
                .collect();
            Ok(product)
        }
    }
}

/// 422 for a bad write option, shaped as kube-apiserver reports invalid PatchOptions.
fn invalid_option(field: &'static str, why: &str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {why}"),
    );
    error.details = Some(
        json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field}]}),
    );
    error
}

/// A write's answer, with the warnings of decoding its request and of the write.
fn written(
    form: (Output, Encoding),
    code: StatusCode,
    written: Written,
    mut warnings: Vec<String>,
) -> Result<Response<Body>, ApiError> {
    let response = object_response(form, code, written.object)?;
    warnings.extend(written.warnings);
    Ok(with_warnings(response, &warnings))
}

/// What a create or update asks: the answer's form, the write's options, and its object with
/// the warnings of decoding it.
struct ObjectWrite {
    form: (Output, Encoding),
    options: WriteOptions,
    image: CatalogImage,
    warnings: Vec<String>,
}

fn object_write(
    app: &App,
    identity: &Identity,
    (headers, query): (&HeaderMap, &Query),
    body: &[u8],
) -> Result<ObjectWrite, ApiError> {
    let form = response_form(headers, query)?;
    let options = write_options(app, identity, headers, query)?;
    let document = decode::object_document(headers, body)?;
    let (image, warnings) = decode_object(&document, options.field_validation)?;
    Ok(ObjectWrite {
        form,
        options,
        image,
        warnings,
    })
}

pub async fn create(
    app: &App,
    identity: &Identity,
    headers: &HeaderMap,
    query: &Query,
    namespace: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let write = object_write(app, identity, (headers, query), body)?;
    let result = app
        .registry
        .create(namespace, write.image, &write.options)
        .await?;
    written(write.form, StatusCode::CREATED, result, write.warnings)
}

pub async fn update(
    app: &App,
    identity: &Identity,
    (headers, query): (&HeaderMap, &Query),
    target: (&str, &str),
    subresource: Subresource,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let write = object_write(app, identity, (headers, query), body)?;
    let result = app
        .registry
        .update(target, subresource, write.image, &write.options)
        .await?;
    written(write.form, StatusCode::OK, result, write.warnings)
}

pub async fn patch(
    app: &App,
    identity: &Identity,
    (headers, query): (&HeaderMap, &Query),
    target: (&str, &str),
    subresource: Subresource,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    let write = write_options(app, identity, headers, query)?;
    let force = query
        .get("force")
        .map(|_| query.flag("force"))
        .transpose()?;
    let kind = match decode::content_type(headers) {
        "application/apply-patch+yaml" => {
            if query.get("fieldManager").is_none_or(str::is_empty) {
                return Err(invalid_option(
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            }
            let config = decode::parse_yaml(body)?;
            let options = ApplyOptions {
                force: force.unwrap_or(false),
                write,
            };
            let result = app
                .registry
                .apply(target, subresource, config, &options)
                .await?;
            return written(form, StatusCode::OK, result, Vec::new());
        }
        "application/json-patch+json" => PatchKind::Json,
        "application/merge-patch+json" => PatchKind::Merge,
        other => {
            return Err(ApiError::unsupported_media_type(
                other,
                &openapi::PATCH_CONTENT_TYPES,
            ));
        }
    };
    if force.is_some() {
        return Err(invalid_option(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let patch = decode::parse_json(body)?;
    let result = app
        .registry
        .patch(target, subresource, (kind, &patch), &write)
        .await?;
    written(form, StatusCode::OK, result, Vec::new())
}

pub async fn delete(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    let options = decode::delete_options(query, body)?;
    let (object, gone) = app
        .registry
        .delete(namespace, name, &options, query.dry_run()?)
        .await?;
    // 202 for an entry kept for its dependents' deletion when asked with the deprecated
    // orphanDependents=false, as endpoints/handlers/delete.go answers (and only then).
    let code = match (gone, options.orphan_dependents) {
        (false, Some(false)) => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    object_response(form, code, object)
}

pub async fn delete_collection(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: Option<String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"))?;
    let options = decode::delete_options(query, body)?;
    let (revision, objects) = app
        .registry
        .delete_collection(namespace.as_deref(), &selector, &options, query.dry_run()?)
        .await?;
    Ok(encoded(
        StatusCode::OK,
        encoding(accept(headers)),
        render::plain_list(&objects, render::ListMeta::at(&revision.to_string())),
    ))
}
