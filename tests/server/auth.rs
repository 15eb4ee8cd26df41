//! `serve` mode's delegated authentication and authorization against a stand-in
//! kube-apiserver (kube_apiserver.rs) and a front proxy that behaves like kube-aggregator's
//! `handler_proxy.go`: its client certificate from the front-proxy CA, the user in X-Remote-*.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::common::*;
use super::kube_apiserver::{KubeApiserver, Policy};
use super::pki::{Ca, Issued};

/// What the server logs when it has applied an authentication configuration.
const CONFIG_LOADED: &str = "authentication configuration loaded";

const NAMESPACE_PATH: &str = "/apis/catalog.automotive.io/v1alpha1/namespaces/auth/catalogimages";

/// A stand-in kube-apiserver and our server in `serve` mode configured by it.
pub struct Cluster {
    pub kube: KubeApiserver,
    pub server: Server,
    pub serving_ca: Ca,
    pub client_ca: Ca,
    pub front_proxy_ca: Ca,
}

fn config_map(client_ca: &Ca, front_proxy_ca: &Ca) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("client-ca-file".into(), client_ca.pem.clone()),
        (
            "requestheader-client-ca-file".into(),
            front_proxy_ca.pem.clone(),
        ),
        (
            "requestheader-allowed-names".into(),
            r#"["front-proxy-client"]"#.into(),
        ),
        (
            "requestheader-username-headers".into(),
            r#"["X-Remote-User"]"#.into(),
        ),
        (
            "requestheader-uid-headers".into(),
            r#"["X-Remote-Uid"]"#.into(),
        ),
        (
            "requestheader-group-headers".into(),
            r#"["X-Remote-Group"]"#.into(),
        ),
        (
            "requestheader-extra-headers-prefix".into(),
            r#"["X-Remote-Extra-"]"#.into(),
        ),
    ])
}

/// Everyone may do everything but mallory, as an RBAC without rules for her would answer; and
/// nobody may read the Secrets of namespace `vault`.
fn policy() -> Policy {
    Box::new(|spec: &Value| {
        let secrets = &spec["resourceAttributes"];
        if spec["user"] == "mallory"
            || (secrets["resource"] == "secrets" && secrets["namespace"] == "vault")
        {
            (false, "no RBAC policy matched".into())
        } else {
            (true, "RBAC: allowed".into())
        }
    })
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Cluster {
        let (client_ca, front_proxy_ca, serving_ca) = (
            Ca::new("client-ca"),
            Ca::new("front-proxy-ca"),
            Ca::new("serving-ca"),
        );
        let tokens = HashMap::from([(
            "good-token".to_string(),
            json!({"username": "carol", "uid": "c-1", "groups": ["devs"]}),
        )]);
        let kube = KubeApiserver::start(config_map(&client_ca, &front_proxy_ca), tokens, policy());
        let server = serve_against(&kube, &serving_ca, extra);
        let cluster = Cluster {
            kube,
            server,
            serving_ca,
            client_ca,
            front_proxy_ca,
        };
        cluster.wait_ready(&cluster.server);
        cluster
    }

    /// Another replica in the same cluster, with its own store.
    pub fn replica(&self, extra: &[&str]) -> Server {
        let server = serve_against(&self.kube, &self.serving_ca, extra);
        self.wait_ready(&server);
        server
    }

    /// Ready once the ConfigMap is loaded: the server says when it has loaded it.
    fn wait_ready(&self, server: &Server) {
        server.wait_for_log(CONFIG_LOADED, 0);
        let ready = runtime().block_on(async {
            let anonymous = client_of(&server.address, &self.serving_ca.pem, None, None, &[]);
            request(&anonymous, "GET", "/readyz", "").await.0
        });
        assert_eq!(ready, 200);
    }

    pub fn client(
        &self,
        identity: Option<&Issued>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> kube::Client {
        client_of(
            &self.server.address,
            &self.serving_ca.pem,
            identity,
            token,
            headers,
        )
    }

    async fn get(&self, client: &kube::Client, path: &str) -> u16 {
        request(client, "GET", path, "").await.0
    }
}

/// `catalog-apiserver serve` reaching `kube`, serving a certificate of `serving_ca`.
fn serve_against(kube: &KubeApiserver, serving_ca: &Ca, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let serving = serving_ca.server("catalog-apiserver");
    std::fs::write(dir.path().join("tls.crt"), &serving.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &serving.key).unwrap();
    let kubeconfig = kube.kubeconfig(dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let mut flags = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
        "--tls-reload-interval",
        "1s",
    ];
    flags.extend(extra);
    Server::serve(dir, &flags)
}

pub fn client_of(
    address: &str,
    ca_pem: &str,
    identity: Option<&Issued>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> kube::Client {
    use base64::Engine as _;
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let mut config = kube::Config::new(format!("https://{address}").parse().unwrap());
    config.root_cert = Some(vec![pem_der(ca_pem)]);
    if let Some(identity) = identity {
        config.auth_info.client_certificate_data = Some(encode(&identity.cert));
        config.auth_info.client_key_data = Some(encode(&identity.key).into());
    }
    config.auth_info.token = token.map(|t| t.to_string().into());
    config.headers = headers
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect();
    kube::Client::try_from(config).unwrap()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn request(client: &kube::Client, method: &str, path: &str, body: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let code = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn proxy_headers<'a>() -> [(&'a str, &'a str); 5] {
    [
        ("X-Remote-User", "alice"),
        ("X-Remote-Uid", "a-1"),
        ("X-Remote-Group", "devs"),
        (
            "X-Remote-Extra-Scopes.authorization.openshift.io",
            "user:full",
        ),
        ("X-Remote-Extra-Acme.com%2fProject", "p1"),
    ]
}

#[test]
fn identities_are_trusted_exactly_as_configured() {
    let cluster = Cluster::start();
    runtime().block_on(async {
        // The front proxy with its certificate: the user its headers name, with the SAR saying so.
        let proxy = cluster.front_proxy_ca.client("front-proxy-client", &[]);
        let client = cluster.client(Some(&proxy), None, &proxy_headers());
        assert_eq!(cluster.get(&client, NAMESPACE_PATH).await, 200);
        let review = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!(review["user"], "alice");
        assert_eq!(review["uid"], "a-1");
        assert_eq!(review["groups"], json!(["devs", "system:authenticated"]));
        assert_eq!(review["extra"], json!({"acme.com/project": ["p1"], "scopes.authorization.openshift.io": ["user:full"]}));
        assert_eq!(review["resourceAttributes"], json!({"verb": "list", "group": "catalog.automotive.io", "version": "v1alpha1", "resource": "catalogimages", "namespace": "auth"}));

        // Forged headers: without a certificate, with one from another CA, with a CN not allowed.
        let no_certificate = cluster.client(None, None, &proxy_headers());
        assert_eq!(cluster.get(&no_certificate, NAMESPACE_PATH).await, 401);
        let stranger = Ca::new("wrong-ca").client("front-proxy-client", &[]);
        assert_eq!(cluster.get(&cluster.client(Some(&stranger), None, &proxy_headers()), NAMESPACE_PATH).await, 401);
        let impostor = cluster.front_proxy_ca.client("someone-else", &[]);
        assert_eq!(cluster.get(&cluster.client(Some(&impostor), None, &proxy_headers()), NAMESPACE_PATH).await, 401);
        // A client certificate is its own identity; headers beside it are not believed.
        let bob = cluster.client_ca.client("bob", &["catalog-admins"]);
        assert_eq!(cluster.get(&cluster.client(Some(&bob), None, &proxy_headers()), NAMESPACE_PATH).await, 200);
        let review = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!((review["user"].as_str(), &review["groups"]), (Some("bob"), &json!(["catalog-admins", "system:authenticated"])));

        // Tokens: reviewed once, then cached; a bad token is 401, and cached too.
        let before = cluster.kube.token_reviews();
        let carol = cluster.client(None, Some("good-token"), &[]);
        assert_eq!(cluster.get(&carol, NAMESPACE_PATH).await, 200);
        assert_eq!(cluster.get(&carol, NAMESPACE_PATH).await, 200);
        assert_eq!(cluster.kube.token_reviews(), before + 1);
        let review = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!((review["user"].as_str(), review["uid"].as_str()), (Some("carol"), Some("c-1")));
        let stranger = cluster.client(None, Some("bad-token"), &[]);
        assert_eq!(cluster.get(&stranger, NAMESPACE_PATH).await, 401);
        assert_eq!(cluster.get(&stranger, NAMESPACE_PATH).await, 401);
        assert_eq!(cluster.kube.token_reviews(), before + 2);
        // Health needs nobody; discovery is a non-resource request like any other.
        let anonymous = cluster.client(None, None, &[]);
        assert_eq!(cluster.get(&anonymous, "/livez").await, 200);
        assert_eq!(cluster.get(&anonymous, "/apis").await, 401);
        assert_eq!(cluster.get(&carol, "/openapi/v2").await, 200);
        let review = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!(review["nonResourceAttributes"], json!({"verb": "get", "path": "/openapi/v2"}));
        // Verification is off here (--verify=false): nobody takes the verifier's Lease.
        assert_eq!(cluster.kube.lease_holder("catalog-system", "catalog-apiserver-verifier"), None);
    });
}

#[test]
fn a_denied_user_gets_403_for_every_verb() {
    let cluster = Cluster::start();
    runtime().block_on(async {
        let mallory = cluster.client(Some(&cluster.client_ca.client("mallory", &[])), None, &[]);
        let object = format!("{NAMESPACE_PATH}/one");
        let body = image_json("auth", "one", "cs9").to_string();
        for (method, path, body, verb) in [
            ("GET", NAMESPACE_PATH.to_string(), "", "list"),
            ("GET", format!("{NAMESPACE_PATH}?watch=true"), "", "watch"),
            ("POST", NAMESPACE_PATH.to_string(), body.as_str(), "create"),
            ("GET", object.clone(), "", "get"),
            ("PUT", object.clone(), body.as_str(), "update"),
            ("PATCH", object.clone(), "{}", "patch"),
            ("DELETE", object.clone(), "", "delete"),
            ("DELETE", NAMESPACE_PATH.to_string(), "", "deletecollection"),
        ] {
            let (code, status) = request(&mallory, method, &path, body).await;
            assert_eq!(code, 403, "{verb}: {status}");
            assert_eq!(status["reason"], "Forbidden");
            let named = if path == object { "catalogimages.catalog.automotive.io \"one\"" } else { "catalogimages.catalog.automotive.io" };
            assert_eq!(
                status["message"],
                format!("{named} is forbidden: User \"mallory\" cannot {verb} resource \"catalogimages\" in API group \"catalog.automotive.io\" in the namespace \"auth\": no RBAC policy matched"),
            );
        }
        let verbs: Vec<String> = cluster.kube.access_reviews().iter().filter(|r| r["user"] == "mallory")
            .map(|r| r["resourceAttributes"]["verb"].as_str().unwrap().to_string()).collect();
        assert_eq!(verbs, ["list", "watch", "create", "get", "update", "patch", "delete", "deletecollection"]);
        // The denial is cached: asking again does not ask kube-apiserver again.
        let asked = cluster.kube.access_reviews().len();
        assert_eq!(request(&mallory, "GET", NAMESPACE_PATH, "").await.0, 403);
        assert_eq!(cluster.kube.access_reviews().len(), asked);
    });
}

#[test]
fn a_rotated_request_header_ca_applies_without_restart() {
    let cluster = Cluster::start();
    let old_proxy = cluster.front_proxy_ca.client("front-proxy-client", &[]);
    let new_ca = Ca::new("front-proxy-ca-2");
    let new_proxy = new_ca.client("front-proxy-client", &[]);
    let get = |identity: &Issued| {
        runtime().block_on(async {
            cluster
                .get(
                    &cluster.client(Some(identity), None, &proxy_headers()),
                    NAMESPACE_PATH,
                )
                .await
        })
    };
    assert_eq!(get(&old_proxy), 200);
    assert_eq!(get(&new_proxy), 401);
    let loaded = cluster.server.logged(CONFIG_LOADED);
    cluster
        .kube
        .set_config_map(config_map(&cluster.client_ca, &new_ca));
    cluster.server.wait_for_log(CONFIG_LOADED, loaded);
    assert_eq!(get(&new_proxy), 200);
    assert_eq!(get(&old_proxy), 401);
}

#[test]
fn a_rotated_serving_certificate_drops_no_request() {
    let cluster = Cluster::start();
    let admin = cluster.client_ca.client("admin", &["system:masters"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Continuous requests on a kept-alive connection while the certificate changes.
    let load = {
        let (address, ca) = (
            cluster.server.address.clone(),
            cluster.serving_ca.pem.clone(),
        );
        let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let client = client_of(&address, &ca, Some(&admin), None, &[]);
                while !stop.load(Ordering::SeqCst) {
                    match request(&client, "GET", NAMESPACE_PATH, "").await.0 {
                        200 => done.fetch_add(1, Ordering::SeqCst),
                        _ => failures.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
    };
    let served = || served_certificate(&cluster.server.address, &cluster.serving_ca.pem);
    let reloaded = cluster.server.logged("serving certificate reloaded");
    let rotated = cluster.serving_ca.server("catalog-apiserver");
    std::fs::write(cluster.server.dir.path().join("tls.key.new"), &rotated.key).unwrap();
    std::fs::write(cluster.server.dir.path().join("tls.crt.new"), &rotated.cert).unwrap();
    // Renamed into place, as a Secret volume update swaps files atomically.
    std::fs::rename(
        cluster.server.dir.path().join("tls.key.new"),
        cluster.server.dir.path().join("tls.key"),
    )
    .unwrap();
    std::fs::rename(
        cluster.server.dir.path().join("tls.crt.new"),
        cluster.server.dir.path().join("tls.crt"),
    )
    .unwrap();
    cluster
        .server
        .wait_for_log("serving certificate reloaded", reloaded);
    assert_eq!(served(), pem_der(&rotated.cert));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert!(done.load(Ordering::SeqCst) > 0);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

/// The certificate a new TLS handshake is answered with.
fn served_certificate(address: &str, ca_pem: &str) -> Vec<u8> {
    runtime().block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_der(ca_pem).into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    })
}

#[test]
fn a_secret_in_another_namespace_needs_read_access_to_it() {
    let cluster = Cluster::start();
    runtime().block_on(async {
        let carol = cluster.client(None, Some("good-token"), &[]);
        let with_secret = |name: &str, namespace: &str| {
            let mut image = image_json("auth", name, "cs9");
            image["spec"]["authSecretRef"] = json!({"name": "pull", "namespace": namespace});
            image.to_string()
        };
        let (code, status) = request(&carol, "POST", NAMESPACE_PATH, &with_secret("vaulted", "vault")).await;
        assert_eq!(code, 403, "{status}");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.authSecretRef");
        assert!(status["message"].as_str().unwrap().contains("User \"carol\" cannot get resource \"secrets\""), "{status}");
        let asked = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!(asked["resourceAttributes"], json!({"verb": "get", "group": "", "version": "v1", "resource": "secrets", "namespace": "vault", "name": "pull"}));
        let (code, status) = request(&carol, "POST", NAMESPACE_PATH, &with_secret("shared", "shared")).await;
        assert_eq!(code, 201, "{status}");
        // The entry's own namespace needs no review.
        let before = cluster.kube.access_reviews().len();
        let (code, _) = request(&carol, "POST", NAMESPACE_PATH, &with_secret("local", "auth")).await;
        assert_eq!(code, 201);
        let secret_reviews = cluster.kube.access_reviews()[before..].iter().filter(|r| r["resourceAttributes"]["resource"] == "secrets").count();
        assert_eq!(secret_reviews, 0);
    });
}

#[test]
fn anonymous_requests_are_served_as_system_anonymous_when_enabled() {
    let cluster = Cluster::start_with(&["--anonymous-auth"]);
    runtime().block_on(async {
        let anonymous = cluster.client(None, None, &[]);
        assert_eq!(cluster.get(&anonymous, NAMESPACE_PATH).await, 200);
        let review = cluster.kube.access_reviews().last().cloned().unwrap();
        assert_eq!(review["user"], "system:anonymous");
        assert_eq!(review["groups"], json!(["system:unauthenticated"]));
    });
}
