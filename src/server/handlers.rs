//! One handler per verb, each taking what it needs: get, list, watch, create, update, patch,
//! delete, deletecollection, and the discovery, OpenAPI and health documents.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::App;
use super::connections::Slot;
use super::decode::{self, list_query};
use super::negotiate::{Encoding, Output, encoding, output, wants_aggregated_discovery};
use super::query::Query;
use super::render;
use super::response::{Body, encoded, full, json, streamed, with_warnings};
use super::watch::{self, WatchOptions};
use super::websocket;
use crate::api::decode::decode_object;
use crate::api::selector::Selector;
use crate::api::status::ApiError;
use crate::api::types::API_VERSION;
use crate::api::{discovery, openapi};
use crate::auth::identity::Identity;
use crate::auth::secret_access;
use crate::observe::OpenWatch;
use crate::registry::{ApplyOptions, PatchKind, RevisionMatch, Subresource, WriteOptions, Written};

/// Items read per store page while streaming a list with no limit.
const STREAM_PAGE: usize = 500;
/// The most items one page of a paged list holds, whatever its limit asks.
const MAX_PAGE: usize = 5000;

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// A document served with an ETag, answering 304 to a matching If-None-Match.
fn document(headers: &HeaderMap, content_type: &str, body: &Value) -> Response<Body> {
    let bytes = body.to_string();
    let etag = format!("\"{:x}\"", Sha256::digest(bytes.as_bytes()));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        full(StatusCode::NOT_MODIFIED, content_type, Bytes::new())
    } else {
        full(StatusCode::OK, content_type, bytes)
    };
    response.headers_mut().insert(
        header::ETAG,
        etag.parse().expect("a hex etag is a valid header"),
    );
    response
        .headers_mut()
        .insert(header::VARY, "Accept".parse().expect("static"));
    response
}

pub fn group_list(headers: &HeaderMap) -> Response<Body> {
    if wants_aggregated_discovery(accept(headers)) {
        document(headers, discovery::AGGREGATED_V2, &discovery::aggregated())
    } else {
        json(StatusCode::OK, discovery::api_group_list().to_string())
    }
}

/// `GET /version`, as every API server answers it.
pub fn version() -> Response<Body> {
    let version = env!("CARGO_PKG_VERSION");
    let body = json!({
        "major": "1", "minor": "37", "gitVersion": format!("v{version}"), "gitCommit": "", "gitTreeState": "",
        "buildDate": "", "goVersion": "", "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    });
    json(StatusCode::OK, body.to_string())
}

/// `GET /metrics`, in the Prometheus text format.
pub fn metrics(app: &App) -> Response<Body> {
    let revision = app.registry.store().revision();
    app.metrics.store_revision.set(revision as i64);
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(),
    )
}

pub fn group() -> Response<Body> {
    json(StatusCode::OK, discovery::api_group_document().to_string())
}

pub fn resource_list() -> Response<Body> {
    json(StatusCode::OK, discovery::api_resource_list().to_string())
}

pub fn openapi_v2(app: &App, headers: &HeaderMap) -> Response<Body> {
    document(headers, "application/json", &app.documents.openapi_v2)
}

pub fn openapi_v3_root(app: &App) -> Response<Body> {
    let hash = format!(
        "{:X}",
        Sha256::digest(app.documents.openapi_v3.to_string().as_bytes())
    );
    let path = format!("apis/{}", API_VERSION);
    let root = json!({"paths": {path.clone(): {"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}}});
    json(StatusCode::OK, root.to_string())
}

pub fn openapi_v3(app: &App, headers: &HeaderMap) -> Response<Body> {
    document(headers, "application/json", &app.documents.openapi_v3)
}

pub fn health(app: &App, check: &str) -> Response<Body> {
    if check == "readyz" && !app.is_ready() {
        return full(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "[-]store not open\nreadyz check failed\n",
        );
    }
    full(StatusCode::OK, "text/plain; charset=utf-8", "ok")
}

pub fn get(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    let item = app.registry.get(namespace, name)?;
    object_response(form, StatusCode::OK, item.value)
}

pub async fn list(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let (format, encoding) = output(accept(headers), query.get("includeObject"), false)?;
    let list_query = list_query(namespace, query)?;
    let cursor = app.registry.start(&list_query)?;
    let rv = cursor.revision.to_string();
    if let Some(limit) = list_query.limit {
        // A page is held whole; the server may serve fewer items than asked (the continue
        // token says more remain), so one request can't make it hold the whole collection.
        let page = app
            .registry
            .page(&list_query, &cursor, limit.min(MAX_PAGE))?;
        let token = page.next.as_ref().map(|c| c.token());
        let metadata = render::ListMeta {
            continue_token: token.as_deref(),
            remaining_item_count: page.remaining(),
            resource_version: &rv,
        };
        let objects: Vec<Bytes> = page.items.into_iter().map(|i| i.value).collect();
        let body = match render::list(format, &objects, metadata)? {
            Some(rendered) => rendered,
            None => render::plain_list(&objects, metadata),
        };
        return Ok(encoded(StatusCode::OK, encoding, body));
    }
    // The whole list, streamed a page at a time. Store reads block, so the pages are read and
    // rendered on a blocking thread, which waits whenever the connection is a few chunks
    // behind: memory stays at a few pages however slowly the client reads.
    let mut pieces = render::ListPieces::new(format, encoding, &rv)?;
    let first = app.registry.page(&list_query, &cursor, STREAM_PAGE)?;
    let (sender, response) = streamed(StatusCode::OK, encoding.content_type());
    let registry = app.registry.clone();
    tokio::task::spawn_blocking(move || {
        // Headers are gone once the head is out: a failure ends the body without closing the
        // list, which tells the client it is incomplete.
        let failed = |e: ApiError| tracing::error!(error = %e.message, "list stream failed");
        if sender.blocking_send(pieces.head()).is_err() {
            return; // the client went away
        }
        let mut page = first;
        loop {
            let objects: Vec<Bytes> = page.items.into_iter().map(|i| i.value).collect();
            let items = match pieces.items(&objects) {
                Ok(items) => items,
                Err(e) => return failed(e),
            };
            drop(objects);
            // An empty chunk would end an HTTP/1.1 chunked body early.
            if !items.is_empty() && sender.blocking_send(items).is_err() {
                return;
            }
            let Some(next) = page.next else { break };
            page = match registry.page(&list_query, &next, STREAM_PAGE) {
                Ok(page) => page,
                Err(e) => return failed(e),
            };
        }
        let _ = sender.blocking_send(pieces.tail());
    });
    Ok(response)
}

/// What a watch needs to become a WebSocket: hyper's upgrade, and the connection to keep busy
/// for as long as the WebSocket lives.
pub struct Upgrade {
    pub on_upgrade: Option<OnUpgrade>,
    pub connection: Option<Arc<Slot>>,
}

/// A watch, streamed in the response body, or over WebSocket when the request is an Upgrade.
pub async fn watch(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: Option<String>,
    upgrade: Upgrade,
) -> Result<Response<Body>, ApiError> {
    let (format, _) = output(accept(headers), query.get("includeObject"), true)?;
    let list_query = list_query(namespace, query)?;
    let rv = list_query.resource_version;
    let send_initial = query
        .get("sendInitialEvents")
        .map(|_| query.flag("sendInitialEvents"))
        .transpose()?;
    if send_initial == Some(true)
        && list_query.resource_version_match != Some(RevisionMatch::NotOlderThan)
    {
        return Err(ApiError::invalid(
            "",
            &[crate::api::validate::Cause::invalid(
                "resourceVersionMatch",
                "",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let after = match (rv, send_initial) {
        (_, Some(true)) => None,
        (None | Some(0), None) => None,
        (None | Some(0), Some(false)) => Some(app.registry.store().revision()),
        (Some(rv), _) => Some(rv),
    };
    if let Some(after) = after {
        app.registry.wait_for_revision(after).await?;
    }
    let timeout = match query.number("timeoutSeconds")? {
        Some(seconds) => Duration::from_secs(seconds),
        // kube-apiserver spreads watches between the minimum request timeout and twice that.
        None => Duration::from_secs(1800 + rand::random_range(0..1800)),
    };
    let options = WatchOptions {
        open: OpenWatch::new(&app.metrics.watches),
        format,
        bookmarks: query.flag("allowWatchBookmarks")?,
        bookmark_interval: app.config.bookmark_interval,
        timeout,
    };
    let stream = app
        .registry
        .watch(list_query, after, send_initial == Some(true))?;
    if websocket::is_upgrade(headers) {
        let shutdown = app.shutdown.clone();
        let busy = upgrade.connection.map(|slot| slot.busy());
        return websocket::serve(
            headers,
            upgrade.on_upgrade,
            || watch::events(stream, options, shutdown),
            busy,
        );
    }
    Ok(watch::serve_watch(stream, options, app.shutdown.clone()))
}

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

/// The form the client asked for its answer: a full object, a Table, or
/// PartialObjectMetadata (as the garbage collector's metadata client asks), in JSON or YAML.
/// Negotiated before anything is done, so that a write is never made and then refused a 406.
fn response_form(headers: &HeaderMap, query: &Query) -> Result<(Output, Encoding), ApiError> {
    output(accept(headers), query.get("includeObject"), false)
}

/// An object in the negotiated form, as kube-apiserver transforms every response object.
fn object_response(
    (format, encoding): (Output, Encoding),
    code: StatusCode,
    object: Bytes,
) -> Result<Response<Body>, ApiError> {
    let rendered = render::object(format, &object, true)?;
    Ok(encoded(code, encoding, rendered.unwrap_or(object)))
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

pub async fn create(
    app: &App,
    identity: &Identity,
    headers: &HeaderMap,
    query: &Query,
    namespace: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    let options = write_options(app, identity, headers, query)?;
    let document = decode::object_document(headers, body)?;
    let (image, warnings) = decode_object(&document, options.field_validation)?;
    let result = app.registry.create(namespace, image, &options).await?;
    written(form, StatusCode::CREATED, result, warnings)
}

pub async fn update(
    app: &App,
    identity: &Identity,
    (headers, query): (&HeaderMap, &Query),
    target: (&str, &str),
    subresource: Subresource,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    let options = write_options(app, identity, headers, query)?;
    let document = decode::object_document(headers, body)?;
    let (image, warnings) = decode_object(&document, options.field_validation)?;
    let result = app
        .registry
        .update(target, subresource, image, &options)
        .await?;
    written(form, StatusCode::OK, result, warnings)
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
