//! The HTTPS surface: TLS, who is asking, what the request is about, and dispatch to one
//! handler per verb. Every failure becomes a metav1.Status here and nowhere else.

mod handlers;
pub mod negotiate;
mod query;
mod render;
pub mod request;
mod response;
pub mod selectors;
pub mod status;
pub mod tls;
mod watch;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio_rustls::TlsAcceptor;

use self::query::Query;
use self::request::{Target, attributes, target};
use self::response::{Body, error};
use self::status::ApiError;
use crate::api::openapi;
use crate::auth::{Attributes, Auth, ChainVerdicts};
use crate::observe::{Metrics, RequestLabels, VerbLabels};
use crate::registry::Registry;

/// Settings of the HTTP surface.
#[derive(Clone, Debug)]
pub struct Config {
    pub bookmark_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
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
struct Peer {
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
    /// App exists), and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.auth.is_ready() && !*self.shutdown.borrow()
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: Peer) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let started = std::time::Instant::now();
        // What the request is about, worked out once: routing, authorization and metrics share it.
        let target = target(&path);
        let query = Query::parse(request.uri().query());
        let watch = query.flag("watch");
        let (attributes, name) =
            attributes(&method, &path, &target, *watch.as_ref().unwrap_or(&false));
        let encoding = negotiate::encoding(
            request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        let about = About {
            target: &target,
            query: &query,
            attributes: &attributes,
            name,
        };
        let response = match self.route(request, peer, about, watch).await {
            Ok(response) => response,
            Err(e) => error(&e, encoding),
        };
        let code = response.status().as_u16();
        tracing::debug!(%method, %path, code, elapsed = ?started.elapsed(), "request");
        let verb = attributes.verb();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                code,
            })
            .inc();
        self.metrics
            .request_seconds
            .get_or_create(&VerbLabels { verb: verb.into() })
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        peer: Peer,
        about: About<'_>,
        watch_flag: Result<bool, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let (mut parts, body) = request.into_parts();
        let (target, query) = (about.target, about.query);
        if let Target::Health(check) = target {
            return Ok(handlers::health(self, check));
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
        let headers = &parts.headers;
        let body = match parts.method {
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
                read_body(body, self.config.max_body_bytes).await?
            }
            _ => bytes::Bytes::new(),
        };
        match (&parts.method, target) {
            (&Method::GET, Target::Version) => Ok(handlers::version()),
            (&Method::GET, Target::Metrics) => Ok(handlers::metrics(self)),
            (&Method::GET, Target::GroupList) => Ok(handlers::group_list(headers)),
            (&Method::GET, Target::Group) => Ok(handlers::group()),
            (&Method::GET, Target::ResourceList) => Ok(handlers::resource_list()),
            (&Method::GET, Target::OpenApiV2) => Ok(handlers::openapi_v2(self, headers)),
            (&Method::GET, Target::OpenApiV3Root) => Ok(handlers::openapi_v3_root(self)),
            (&Method::GET, Target::OpenApiV3) => Ok(handlers::openapi_v3(self, headers)),
            (_, Target::Unknown) => Err(ApiError::path_not_found()),
            (_, Target::Collection { namespace }) => match about.attributes.verb() {
                "watch" => {
                    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                    handlers::watch(self, headers, query, namespace.clone(), on_upgrade)
                }
                "list" => handlers::list(self, headers, query, namespace.clone()).await,
                "create" => match namespace {
                    Some(ns) => handlers::create(self, &identity, headers, query, ns, &body).await,
                    None => Err(ApiError::method_not_allowed(&parts.method)),
                },
                "deletecollection" => {
                    handlers::delete_collection(self, headers, query, namespace.clone()).await
                }
                _ => Err(ApiError::method_not_allowed(&parts.method)),
            },
            (
                _,
                Target::Object {
                    namespace,
                    name,
                    status,
                },
            ) => match (about.attributes.verb(), status) {
                ("get", _) => handlers::get(self, headers, query, namespace, name),
                ("update", _) => {
                    handlers::update(
                        self, &identity, headers, query, namespace, name, *status, &body,
                    )
                    .await
                }
                ("patch", _) => {
                    handlers::patch(
                        self, &identity, headers, query, namespace, name, *status, &body,
                    )
                    .await
                }
                ("delete", false) => {
                    handlers::delete(self, headers, query, namespace, name, &body).await
                }
                _ => Err(ApiError::method_not_allowed(&parts.method)),
            },
            _ => Err(ApiError::method_not_allowed(&parts.method)),
        }
    }
}

async fn read_body(body: Incoming, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Accepts TLS connections until `stop` turns true, then stops accepting, lets watches end,
/// and waits (up to `drain`) for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    mut stop: signal::Receiver<bool>,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, remote): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        // As Go's net package does for kube-apiserver: without it, the last segment of a
        // response waits for the client's delayed ACK (40 ms on Linux) behind Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
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
            let service = service_fn(move |request| {
                let app = app.clone();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(request, peer).await) }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
        });
    }
    tracing::info!("no longer accepting connections; draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}
