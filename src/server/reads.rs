//! The read verbs: get, list (paged, or the whole collection streamed a page at a time) and
//! watch (streamed, or over WebSocket).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use super::App;
use super::connections::Slot;
use super::decode::{self, list_query};
use super::negotiate::{Delivery, accept, output};
use super::query::Query;
use super::render;
use super::response::{Body, encoded, object_response, response_form, streamed};
use super::watch::{self, WatchOptions};
use super::websocket;
use crate::api::status::ApiError;
use crate::observe::OpenWatch;
use crate::registry::{RevisionMatch, WatchFrom};

/// Items read per store page while streaming a list with no limit.
const STREAM_PAGE: usize = 500;
/// The most items one page of a paged list holds, whatever its limit asks.
const MAX_PAGE: usize = 5000;

pub async fn get(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let form = response_form(headers, query)?;
    app.registry.fresh(decode::resource_version(query)?).await?;
    let item = app.registry.get(namespace, name)?;
    object_response(form, StatusCode::OK, item.value)
}

pub async fn list(
    app: &App,
    headers: &HeaderMap,
    query: &Query,
    namespace: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let (format, encoding) = output(accept(headers), query.get("includeObject"), Delivery::Whole)?;
    let list_query = list_query(namespace, query)?;
    app.registry.fresh(list_query.resource_version).await?;
    let cursor = app.registry.start(&list_query)?;
    // A continue token may come from another replica, a little ahead of this one.
    app.registry.wait_for_revision(cursor.revision).await?;
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
    let (format, _) = output(
        accept(headers),
        query.get("includeObject"),
        Delivery::Events,
    )?;
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
    app.registry.fresh(rv).await?;
    let after = match (rv, send_initial) {
        (_, Some(true)) => None,
        (None | Some(0), None) => None,
        (None | Some(0), Some(false)) => Some(app.registry.store().revision()),
        (Some(rv), _) => Some(rv),
    };
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
    let from = match (after, send_initial) {
        (Some(revision), _) => WatchFrom::Revision(revision),
        (None, Some(true)) => WatchFrom::InitialEvents,
        (None, _) => WatchFrom::CurrentState,
    };
    let stream = app.registry.watch(list_query, from)?;
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
