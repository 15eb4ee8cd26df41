//! The HTTPS surface: TLS, who is asking, what the request is about, and dispatch to one
//! handler per verb. Failures arrive as `api::status::ApiError`s and are written out here.

mod assets;
pub mod connections;
mod decode;
mod documents;
pub mod negotiate;
mod query;
mod reads;
mod render;
pub mod request;
mod response;
pub mod tls;
mod watch;
mod websocket;
mod writes;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio_rustls::TlsAcceptor;

use self::connections::{Connections, Slot, Throttle};
use self::query::Query;
use self::request::{Target, attributes, target};
use self::response::{Body, error};
use crate::api::openapi;
use crate::api::status::ApiError;
use crate::api::verb::Verb;
use crate::auth::identity::Identity;
use crate::auth::{Attributes, Auth, ChainVerdicts};
use crate::observe::{Metrics, RequestLabels, VerbLabels};
use crate::registry::{Registry, Subresource};

/// How long a replica may go without reading the shared store before it is not ready.
const SHARED_STORE_GRACE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Settings of the HTTP surface.
#[derive(Clone, Debug)]
pub struct Config {
    pub bookmark_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    pub connections: ConnectionLimits,
    /// A request for this path panics: how tests show that a panic is one request's 500.
    pub panic_path: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; at the cap the longest-idle one makes room.
    pub max_connections: usize,
    /// How long an HTTP/1 request head may take to arrive (also how long an idle HTTP/1
    /// connection waits for its next request).
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight is kept.
    pub idle_timeout: Duration,
}

/// Documents computed once at start.
pub struct Documents {
    pub openapi_v2: Value,
    pub openapi_v3: Value,
}

pub struct App {
    pub registry: Registry,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub documents: Documents,
    shutdown: signal::Receiver<bool>,
}

pub use self::assets::Assets;

/// What answers the requests of a listener.
pub trait Handler: Send + Sync + 'static {
    fn connection_limits(&self) -> &ConnectionLimits;

    /// Answers one request; the request body comes back with the response when it was not
    /// read, to be dropped only once the response is out.
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> impl Future<Output = (Response<Body>, Incoming)> + Send;
}

impl Handler for App {
    fn connection_limits(&self) -> &ConnectionLimits {
        &self.config.connections
    }

    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> impl Future<Output = (Response<Body>, Incoming)> + Send {
        self.answer(request, peer)
    }
}

/// What a request is about, from its method, path and query.
struct About<'a> {
    target: &'a Target,
    query: &'a Query,
    attributes: &'a Attributes,
    /// The object name a 403 names.
    name: &'a str,
}

/// The client certificate chain of a connection, as presented in its TLS handshake (the client
/// proved it holds the key; whether the chain is trusted is for the authenticator to say, and
/// it remembers its answer for the connection).
#[derive(Clone, Default)]
pub struct Peer {
    chain: Arc<Vec<CertificateDer<'static>>>,
    verdicts: Arc<ChainVerdicts>,
}

impl App {
    pub fn new(
        registry: Registry,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        config: Config,
        shutdown: signal::Receiver<bool>,
    ) -> App {
        let documents = Documents {
            openapi_v2: openapi::v2(),
            openapi_v3: openapi::v3(),
        };
        App {
            registry,
            auth,
            metrics,
            config,
            documents,
            shutdown,
        }
    }

    /// Ready once the authentication configuration is loaded (the store is open before the
    /// App exists), and until shutdown begins; a replica of a shared store also while it has
    /// read the shared log recently (otherwise its copy may be stale and writes fail).
    pub fn is_ready(&self) -> bool {
        self.auth.is_ready() && !*self.shutdown.borrow() && self.shared_store_reached()
    }

    pub fn shared_store_reached(&self) -> bool {
        let store = self.registry.store();
        !store.follows()
            || store
                .followed_at()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|since| since < SHARED_STORE_GRACE)
    }

    /// Answers one request. The request body is handed back with the response when it was
    /// not read, to be dropped only once the response is out: an HTTP/2 stream reset before
    /// the answer would hide a 401 or 413 from the client.
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> (Response<Body>, Incoming) {
        let (parts, mut body) = request.into_parts();
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let started = std::time::Instant::now();
        // What the request is about, worked out once: routing, authorization and metrics share it.
        let target = target(&path);
        let query = Query::parse(parts.uri.query());
        let watch = query.flag("watch");
        let (attributes, name) =
            attributes(&method, &path, &target, *watch.as_ref().unwrap_or(&false));
        let encoding = negotiate::encoding(
            parts
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        let about = About {
            target: &target,
            query: &query,
            attributes: &attributes,
            name,
        };
        let routed = AssertUnwindSafe(async {
            if self.config.panic_path.as_deref() == Some(path.as_str()) {
                panic!("a panic asked for by --fault-panic-path");
            }
            self.route(parts, &mut body, peer, about, watch).await
        })
        .catch_unwind()
        .await;
        let mut response = match routed {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => error(&e, encoding),
            // The panic hook has logged it; the connection and the server go on.
            Err(_) => error(
                &ApiError::internal("an internal error occurred while handling the request"),
                encoding,
            ),
        };
        if method == Method::HEAD {
            *response.body_mut() = http_body_util::Empty::new().boxed();
        }
        let code = response.status().as_u16();
        tracing::debug!(%method, %path, code, elapsed = ?started.elapsed(), "request");
        let verb = attributes.verb();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                verb: verb.as_str().into(),
                code,
            })
            .inc();
        self.metrics
            .request_seconds
            .get_or_create(&VerbLabels {
                verb: verb.as_str().into(),
            })
            .observe(started.elapsed().as_secs_f64());
        (response, body)
    }

    async fn route(
        &self,
        mut parts: http::request::Parts,
        body: &mut Incoming,
        peer: Peer,
        about: About<'_>,
        watch_flag: Result<bool, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let (target, query) = (about.target, about.query);
        if let Target::Health(check) = target {
            return Ok(documents::health(self, check));
        }
        let identity = self
            .auth
            .authenticate(&peer.chain, &peer.verdicts, &parts.headers)
            .await?;
        // A malformed `watch` is a 400, but only to an authenticated client.
        watch_flag?;
        self.auth
            .authorize(&identity, about.attributes, about.name)
            .await?;
        let body = match parts.method {
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
                read_body(
                    body,
                    &parts.headers,
                    self.config.max_body_bytes,
                    self.config.body_read_timeout,
                )
                .await?
            }
            _ => bytes::Bytes::new(),
        };
        match target {
            Target::Collection { namespace } => {
                let verb = about.attributes.verb();
                self.on_collection(verb, &mut parts, query, namespace, &identity, &body)
                    .await
            }
            Target::Object {
                namespace,
                name,
                subresource,
            } => {
                let verb = about.attributes.verb();
                let object = (namespace.as_str(), name.as_str());
                self.on_object(
                    verb,
                    &parts,
                    query,
                    (object, *subresource),
                    &identity,
                    &body,
                )
                .await
            }
            document => self.document(&parts.method, document, &parts.headers),
        }
    }

    fn document(
        &self,
        method: &Method,
        target: &Target,
        headers: &http::HeaderMap,
    ) -> Result<Response<Body>, ApiError> {
        match (method, target) {
            (&Method::GET, Target::Version) => Ok(documents::version()),
            (&Method::GET, Target::Metrics) => Ok(documents::metrics(self)),
            (&Method::GET, Target::GroupList) => Ok(documents::group_list(headers)),
            (&Method::GET, Target::Group) => Ok(documents::group()),
            (&Method::GET, Target::ResourceList) => Ok(documents::resource_list()),
            (&Method::GET, Target::OpenApiV2) => Ok(documents::openapi_v2(self, headers)),
            (&Method::GET, Target::OpenApiV3Root) => Ok(documents::openapi_v3_root(self)),
            (&Method::GET, Target::OpenApiV3) => Ok(documents::openapi_v3(self, headers)),
            (_, Target::Unknown) => Err(ApiError::path_not_found()),
            _ => Err(ApiError::method_not_allowed(method)),
        }
    }

    async fn on_collection(
        &self,
        verb: Verb,
        parts: &mut http::request::Parts,
        query: &Query,
        namespace: &Option<String>,
        identity: &Identity,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let headers = &parts.headers;
        match verb {
            Verb::Watch => {
                let upgrade = reads::Upgrade {
                    on_upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
                    connection: parts.extensions.remove::<Arc<Slot>>(),
                };
                reads::watch(self, &parts.headers, query, namespace.clone(), upgrade).await
            }
            Verb::List => reads::list(self, headers, query, namespace.clone()).await,
            Verb::Create => match namespace {
                Some(ns) => writes::create(self, identity, headers, query, ns, body).await,
                None => Err(ApiError::method_not_allowed(&parts.method)),
            },
            Verb::DeleteCollection => {
                writes::delete_collection(self, headers, query, namespace.clone(), body).await
            }
            _ => Err(ApiError::method_not_allowed(&parts.method)),
        }
    }

    async fn on_object(
        &self,
        verb: Verb,
        parts: &http::request::Parts,
        query: &Query,
        (object, subresource): ((&str, &str), Subresource),
        identity: &Identity,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let request = (&parts.headers, query);
        let (namespace, name) = object;
        match (verb, subresource) {
            (Verb::Get, _) => reads::get(self, &parts.headers, query, namespace, name).await,
            (Verb::Update, _) => {
                writes::update(self, identity, request, object, subresource, body).await
            }
            (Verb::Patch, _) => {
                writes::patch(self, identity, request, object, subresource, body).await
            }
            (Verb::Delete, Subresource::Main) => {
                writes::delete(self, &parts.headers, query, namespace, name, body).await
            }
            _ => Err(ApiError::method_not_allowed(&parts.method)),
        }
    }
}

/// The whole request body, at most `limit` bytes (413 beyond, refused from Content-Length
/// when it says so) and within `timeout` (504, as kube-apiserver's request timeout answers a
/// request that does not complete).
async fn read_body(
    body: &mut Incoming,
    headers: &http::HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut collected = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > limit {
                    return Err(too_large());
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(bytes::Bytes::from(collected))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::timeout(format!(
                "the request body did not arrive within {timeout:?}"
            )))
        })
}

/// Accepts TLS connections until `stop` turns true, then stops accepting, lets watches end,
/// and waits (up to `drain`) for in-flight requests.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<H>,
    mut stop: signal::Receiver<bool>,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let limits = app.connection_limits();
    let connections = Connections::new(limits.max_connections, limits.idle_timeout);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let (accept_log, refused_log) = (Throttle::default(), Throttle::default());
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (tcp, remote): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                // Out of descriptors (or another passing failure): retrying at once would
                // spin; back off as Go's http.Server does, 5 ms doubling up to 1 s.
                backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                if let Some(held_back) = accept_log.allow() {
                    tracing::warn!(error = %e, held_back, retry_in = ?backoff, "accept failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        };
        let Some(slot) = connections.admit().await else {
            if let Some(held_back) = refused_log.allow() {
                tracing::warn!(%remote, held_back, limit = limits.max_connections, "connection refused: every connection is busy");
            }
            continue;
        };
        // As Go's net package does for kube-apiserver: without it, the last segment of a
        // response waits for the client's delayed ACK (40 ms on Linux) behind Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "TCP_NODELAY not set");
        }
        tokio::spawn(serve_connection(
            tcp,
            remote,
            slot,
            acceptor.clone(),
            app.clone(),
            builder.clone(),
            stop.clone(),
        ));
    }
    tracing::info!("no longer accepting connections; draining");
    drop(listener);
    if tokio::time::timeout(drain, connections.drained())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// One connection, from its TLS handshake to its end, in its place among the open ones.
async fn serve_connection<H: Handler>(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    slot: Arc<Slot>,
    acceptor: TlsAcceptor,
    app: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    stop: signal::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let mut handshake_stop = stop.clone();
    let tls = tokio::select! {
        tls = handshake => match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
        },
        _ = slot.should_close(&mut handshake_stop) => return,
    };
    let peer = Peer {
        chain: Arc::new(
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        ),
        verdicts: Arc::default(),
    };
    let service_slot = slot.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        let app = app.clone();
        let peer = peer.clone();
        let busy = service_slot.busy();
        // A WebSocket outlives its request: it keeps the connection busy itself.
        request.extensions_mut().insert(service_slot.clone());
        async move {
            let (response, unread) = app.handle(request, peer).await;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| BodyExt::boxed(response::Tracked::new(body, (busy, unread)))),
            )
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    if let Err(e) = slot.drive(connection, stop).await {
        tracing::debug!(%remote, error = %e, "connection ended");
    }
}
