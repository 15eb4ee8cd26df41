//! A stand-in for the three things a delegating API server asks kube-apiserver, which cannot
//! run here. Small, and answering as upstream does:
//! - ConfigMap `kube-system/extension-apiserver-authentication`: list and watch with a
//!   `metadata.name` field selector (k8s.io/apiserver `endpoints/handlers/get.go`, `watch.go`);
//!   kube-apiserver publishes it from its flags (`pkg/controlplane/controller/
//!   clusterauthenticationtrust`), list values as JSON arrays.
//! - TokenReview (`pkg/registry/authentication/tokenreview/storage.go`): the spec echoed, a
//!   status with `authenticated` and the user, audiences granted as asked.
//! - SubjectAccessReview (`pkg/registry/authorization/subjectaccessreview/rest.go`): the spec
//!   echoed, a status with `allowed` and `reason` from the test's policy.
//! - Secrets: GET of one `v1` Secret by namespace and name, 404 Status when absent.
//! - The automotive-dev-operator's CatalogImages (`automotive.sdv.cloud.redhat.com/v1alpha1`),
//!   listed cluster-wide in pages of `limit` with a `continue` token, as a CRD list answers.
//! - Leases (`coordination.k8s.io/v1`): GET, POST (409 AlreadyExists) and PUT with
//!   optimistic concurrency (409 Conflict on a stale resourceVersion), as the generic registry
//!   store (`k8s.io/apiserver/pkg/registry/generic/registry/store.go`) does.
//!
//! Callers must present the bearer token of the kubeconfig it writes, as RBAC would require.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::pki::Ca;

const CALLER_TOKEN: &str = "catalog-apiserver-service-account-token";

/// The access policy: (allowed, reason) for a SubjectAccessReview spec.
pub type Policy = Box<dyn Fn(&Value) -> (bool, String) + Send + Sync>;

struct State {
    config_map: Mutex<(u64, BTreeMap<String, String>)>,
    changes: broadcast::Sender<Value>,
    tokens: HashMap<String, Value>,
    token_reviews: AtomicUsize,
    access_reviews: Mutex<Vec<Value>>,
    policy: Policy,
    secrets: Mutex<HashMap<String, Value>>,
    leases: Mutex<(u64, HashMap<String, Value>)>,
    old_catalog: Mutex<Vec<Value>>,
}

pub struct KubeApiserver {
    pub address: String,
    ca: Ca,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(code: u16, body: Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

impl KubeApiserver {
    /// `tokens`: bearer token → user (`{username, uid, groups, extra}`).
    pub fn start(
        config_map: BTreeMap<String, String>,
        tokens: HashMap<String, Value>,
        policy: Policy,
    ) -> KubeApiserver {
        let ca = Ca::new("kubernetes");
        let serving = ca.server("kube-apiserver");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State {
            config_map: Mutex::new((1, config_map)),
            changes: broadcast::channel(16).0,
            tokens,
            token_reviews: AtomicUsize::new(0),
            access_reviews: Mutex::new(Vec::new()),
            policy,
            secrets: Mutex::new(HashMap::new()),
            leases: Mutex::new((100, HashMap::new())),
            old_catalog: Mutex::new(Vec::new()),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let tls = tokio_rustls::TlsAcceptor::from(server_config(&serving.cert, &serving.key));
        let shared = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, state) = (tls.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KubeApiserver {
            address,
            ca,
            state,
            _runtime: runtime,
        }
    }

    /// A kubeconfig reaching this stand-in with the caller's token.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca.pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\n\
             users:\n- name: catalog\n  user:\n    token: {CALLER_TOKEN}\ncontexts:\n- name: c\n  context: {{cluster: cluster, user: catalog}}\ncurrent-context: c\n",
            self.address
        );
        let path = dir.join("cluster.kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Publishes a new version of the ConfigMap, as kube-apiserver does when its flags change.
    pub fn set_config_map(&self, data: BTreeMap<String, String>) {
        {
            let mut current = self.state.config_map.lock().unwrap();
            *current = (current.0 + 1, data);
        }
        let _ = self.state.changes.send(config_map(&self.state));
    }

    /// Stores a `kubernetes.io/dockerconfigjson` Secret holding `config` (a docker config).
    pub fn put_pull_secret(&self, namespace: &str, name: &str, config: &Value) {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(config.to_string());
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "uid": format!("secret-{namespace}-{name}")},
            "data": {".dockerconfigjson": data}});
        self.state
            .secrets
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"), secret);
    }

    /// Replaces the CatalogImages of the old CRD.
    pub fn set_old_catalog(&self, objects: Vec<Value>) {
        *self.state.old_catalog.lock().unwrap() = objects;
    }

    /// The holder of a Lease, if it exists.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Option<String> {
        let leases = self.state.leases.lock().unwrap();
        leases
            .1
            .get(&format!("{namespace}/{name}"))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    pub fn token_reviews(&self) -> usize {
        self.state.token_reviews.load(Ordering::SeqCst)
    }

    pub fn access_reviews(&self) -> Vec<Value> {
        self.state.access_reviews.lock().unwrap().clone()
    }
}

fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn config_map(state: &State) -> Value {
    let (revision, data) = state.config_map.lock().unwrap().clone();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data, "metadata": {
        "name": "extension-apiserver-authentication", "namespace": "kube-system",
        "uid": "7d8c2b0e-5e4b-4a55-9a47-000000000001", "resourceVersion": revision.to_string()}})
}

async fn handle(
    state: &State,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {CALLER_TOKEN}"));
    if !authorized {
        return respond(
            401,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}),
        );
    }
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let method = request.method().clone();
    let body: Value = {
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    if path == "/apis/automotive.sdv.cloud.redhat.com/v1alpha1/catalogimages" {
        let all = state.old_catalog.lock().unwrap().clone();
        let start: usize = query
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(all.len().max(1));
        let end = (start + limit).min(all.len());
        let mut metadata = json!({"resourceVersion": "42"});
        if end < all.len() {
            metadata["continue"] = end.to_string().into();
        }
        return respond(
            200,
            json!({"apiVersion": "automotive.sdv.cloud.redhat.com/v1alpha1", "kind": "CatalogImageList",
            "metadata": metadata, "items": all[start..end]}),
        );
    }
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        return lease(state, &method, rest, body);
    }
    match path.as_str() {
        "/api/v1/namespaces/kube-system/configmaps" => {
            let selected = query
                .get("fieldSelector")
                .is_none_or(|s| s == "metadata.name=extension-apiserver-authentication");
            if query.get("watch").map(String::as_str) == Some("true") {
                return watch_config_map(
                    state,
                    query
                        .get("resourceVersion")
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                );
            }
            let object = config_map(state);
            let revision = object["metadata"]["resourceVersion"].clone();
            let items = if selected { vec![object] } else { vec![] };
            respond(
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": revision}, "items": items}),
            )
        }
        "/apis/authentication.k8s.io/v1/tokenreviews" => {
            state.token_reviews.fetch_add(1, Ordering::SeqCst);
            let spec = body["spec"].clone();
            let status = match spec["token"].as_str().and_then(|t| state.tokens.get(t)) {
                Some(user) => {
                    json!({"authenticated": true, "user": user, "audiences": spec.get("audiences").cloned().unwrap_or(json!([]))})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            respond(
                201,
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
            )
        }
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
            let spec = body["spec"].clone();
            state.access_reviews.lock().unwrap().push(spec.clone());
            let (allowed, reason) = (state.policy)(&spec);
            let status = if allowed {
                json!({"allowed": true, "reason": reason})
            } else {
                json!({"allowed": false, "reason": reason})
            };
            respond(
                201,
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
            )
        }
        _ => {
            let secret = path
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|rest| rest.split_once("/secrets/"))
                .and_then(|(namespace, name)| {
                    state
                        .secrets
                        .lock()
                        .unwrap()
                        .get(&format!("{namespace}/{name}"))
                        .cloned()
                });
            match secret {
                Some(secret) => respond(200, secret),
                None => respond(
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
            }
        }
    }
}

fn status(code: u16, reason: &str) -> hyper::Response<Body> {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}),
    )
}

/// `rest` is `<namespace>/leases[/<name>]`.
fn lease(
    state: &State,
    method: &hyper::Method,
    rest: &str,
    mut body: Value,
) -> hyper::Response<Body> {
    let mut parts = rest.split('/');
    let (Some(namespace), Some("leases")) = (parts.next(), parts.next()) else {
        return status(404, "NotFound");
    };
    let name = parts
        .next()
        .map(str::to_string)
        .or_else(|| body["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let mut leases = state.leases.lock().unwrap();
    let current = leases.1.get(&key).cloned();
    match (method.as_str(), current) {
        ("GET", Some(lease)) => respond(200, lease),
        ("GET", None) => status(404, "NotFound"),
        ("POST", Some(_)) => status(409, "AlreadyExists"),
        ("PUT", None) => status(404, "NotFound"),
        ("PUT", Some(lease))
            if lease["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] =>
        {
            status(409, "Conflict")
        }
        ("POST" | "PUT", _) => {
            leases.0 += 1;
            body["metadata"]["resourceVersion"] = leases.0.to_string().into();
            body["metadata"]["namespace"] = namespace.into();
            leases.1.insert(key, body.clone());
            respond(
                if method == hyper::Method::POST {
                    201
                } else {
                    200
                },
                body,
            )
        }
        _ => status(405, "MethodNotAllowed"),
    }
}

/// A watch from `after`: the current version if it is newer, then each new version.
fn watch_config_map(state: &State, after: u64) -> hyper::Response<Body> {
    let mut changes = state.changes.subscribe();
    let current = config_map(state);
    let newer = current["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        > Some(after);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    let event = |object: Value| {
        Bytes::from(format!(
            "{}\n",
            json!({"type": "MODIFIED", "object": object})
        ))
    };
    tokio::spawn(async move {
        if newer && sender.send(event(current)).await.is_err() {
            return;
        }
        while let Ok(object) = changes.recv().await {
            if sender.send(event(object)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut r| async move {
        r.recv()
            .await
            .map(|c| (Ok::<_, Infallible>(Frame::data(c)), r))
    });
    hyper::Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
