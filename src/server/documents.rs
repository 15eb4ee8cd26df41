//! The documents the server answers besides objects: discovery, OpenAPI, version, metrics and
//! health. Discovery and OpenAPI carry ETags, as kube-apiserver serves them.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::App;
use super::negotiate::{accept, wants_aggregated_discovery};
use super::response::{Body, full, json};
use crate::api::discovery;
use crate::api::types::API_VERSION;

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
        let failed = match app.shared_store_reached() {
            true => "[-]store not open\n",
            false => "[-]shared-store: the shared log has not been read for 30 s\n",
        };
        let body = format!("{failed}readyz check failed\n");
        return full(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", body);
    }
    full(StatusCode::OK, "text/plain; charset=utf-8", "ok")
}
