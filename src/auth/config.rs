//! The authentication configuration kube-apiserver publishes in ConfigMap
//! `kube-system/extension-apiserver-authentication` (client CA, request-header CA, allowed
//! names and header names), each value overridable by a flag; kept current by a watch, so a CA
//! rotation takes effect without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::Auth;
use super::identity::RequestHeaderNames;

/// Why the authentication configuration (flags or ConfigMap) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// The configuration's values as published (PEM bundles, lists): from the ConfigMap, or from
/// flags where given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub client_ca: Option<String>,
    pub request_header_ca: Option<String>,
    pub allowed_names: Option<Vec<String>>,
    pub username_headers: Option<Vec<String>>,
    pub uid_headers: Option<Vec<String>>,
    pub group_headers: Option<Vec<String>>,
    pub extra_headers_prefix: Option<Vec<String>>,
}

impl Sources {
    /// Reads the ConfigMap's data; list values are JSON arrays of strings, as kube-apiserver
    /// writes them.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Sources, ConfigError> {
        let list = |key: &str| -> Result<Option<Vec<String>>, String> {
            data.get(key)
                .map(|v| serde_json::from_str(v).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        Ok(Sources {
            client_ca: data.get("client-ca-file").cloned(),
            request_header_ca: data.get("requestheader-client-ca-file").cloned(),
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            uid_headers: list("requestheader-uid-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_headers_prefix: list("requestheader-extra-headers-prefix")?,
        })
    }

    /// These values, with each one `flags` sets taking precedence.
    pub fn overridden_by(self, flags: &Sources) -> Sources {
        Sources {
            client_ca: flags.client_ca.clone().or(self.client_ca),
            request_header_ca: flags.request_header_ca.clone().or(self.request_header_ca),
            allowed_names: flags.allowed_names.clone().or(self.allowed_names),
            username_headers: flags.username_headers.clone().or(self.username_headers),
            uid_headers: flags.uid_headers.clone().or(self.uid_headers),
            group_headers: flags.group_headers.clone().or(self.group_headers),
            extra_headers_prefix: flags
                .extra_headers_prefix
                .clone()
                .or(self.extra_headers_prefix),
        }
    }

    pub fn build(&self) -> Result<AuthConfig, ConfigError> {
        let client_ca = self
            .client_ca
            .as_deref()
            .map(|pem| verifier(pem, "client-ca-file"))
            .transpose()?;
        let request_header = self
            .request_header_ca
            .as_deref()
            .map(|pem| -> Result<RequestHeader, String> {
                Ok(RequestHeader {
                    verifier: verifier(pem, "requestheader-client-ca-file")?,
                    allowed_names: self.allowed_names.clone().unwrap_or_default(),
                    names: RequestHeaderNames {
                        username: self.username_headers.clone().unwrap_or_default(),
                        uid: self.uid_headers.clone().unwrap_or_default(),
                        group: self.group_headers.clone().unwrap_or_default(),
                        extra_prefix: self.extra_headers_prefix.clone().unwrap_or_default(),
                    },
                })
            })
            .transpose()?;
        Ok(AuthConfig {
            client_ca,
            request_header,
        })
    }
}

/// Certificate verifiers for the current CA bundles.
pub struct AuthConfig {
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
    pub request_header: Option<RequestHeader>,
}

pub struct RequestHeader {
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Common names a front-proxy certificate may carry; empty allows any.
    pub allowed_names: Vec<String>,
    pub names: RequestHeaderNames,
}

fn verifier(pem: &str, what: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|e| format!("{what}: {e}"))?;
        roots.add(certificate).map_err(|e| format!("{what}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ClientCertVerifier> =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("{what}: {e}"))?;
    Ok(verifier)
}

/// Keeps `auth`'s configuration equal to the ConfigMap (with `flags` on top) for as long as the
/// process runs. Until the first version arrives, `auth` is not ready.
pub async fn follow_config_map(client: kube::Client, flags: Sources, auth: Arc<Auth>) {
    let api: Api<ConfigMap> = Api::namespaced(client, CONFIG_MAP_NAMESPACE);
    let selector = format!("metadata.name={CONFIG_MAP_NAME}");
    let mut events = watcher(api, watcher::Config::default().fields(&selector)).boxed();
    while let Some(event) = events.next().await {
        let config_map = match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching the authentication ConfigMap");
                continue;
            }
        };
        let data = config_map.data.unwrap_or_default();
        let built = Sources::from_config_map(&data).and_then(|s| s.overridden_by(&flags).build());
        match built {
            Ok(config) => {
                tracing::info!(
                    client_ca = config.client_ca.is_some(),
                    request_header = config.request_header.is_some(),
                    "authentication configuration loaded"
                );
                auth.set_config(config);
            }
            Err(e) => {
                tracing::error!(error = %e, "authentication ConfigMap rejected; keeping the previous configuration")
            }
        }
    }
}
