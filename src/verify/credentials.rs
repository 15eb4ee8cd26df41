//! Registry credentials for an entry, in this order: its `spec.authSecretRef`, then its
//! `spec.imagePullSecrets` (`kubernetes.io/dockerconfigjson` Secrets, read through
//! kube-apiserver); for the OpenShift internal registry, the service account token; then an
//! auth file in the containers/Docker format. The first that has an entry for the registry
//! host wins.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

use crate::api::types::CatalogImage;
use crate::kube_errors::{is_not_found, one_line};

/// Why an entry's registry credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

impl From<String> for CredentialsError {
    fn from(message: String) -> Self {
        CredentialsError(message)
    }
}

/// Where credentials come from besides the entry's Secrets.
#[derive(Clone, Default)]
pub struct CredentialSources {
    /// Reads Secrets; None when there is no cluster (standalone).
    pub cluster: Option<kube::Client>,
    /// Auth files, first match wins (containers' auth.json, Docker's config.json).
    pub auth_files: Vec<PathBuf>,
    /// The OpenShift internal registry's host, and the token file to present to it.
    pub internal_registry: Option<(String, PathBuf)>,
}

/// The default auth files, as podman and docker look for them.
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&runtime).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

/// The host part of an image reference, as auth files key it.
pub fn image_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => host,
        _ => "docker.io",
    }
}

/// The credentials for `host` in a dockerconfigjson / auth.json document.
fn from_config_json(document: &Value, host: &str) -> Option<RegistryAuth> {
    let auths = document["auths"].as_object()?;
    let entry = auths.iter().find_map(|(key, entry)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or(key);
        let same = key == host
            || (host == "docker.io" && matches!(key, "index.docker.io" | "registry-1.docker.io"));
        same.then_some(entry)
    })?;
    if let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(user), Some(password)) => Some(RegistryAuth::Basic(user.into(), password.into())),
        _ => None,
    }
}

impl CredentialSources {
    /// The credentials to use for `image`; Anonymous when nothing has any for its host. An
    /// error names a Secret that could not be read or is not a dockerconfigjson one.
    pub async fn for_image(&self, image: &CatalogImage) -> Result<RegistryAuth, CredentialsError> {
        let host = image_host(&image.spec.registry_url);
        let namespace = image.metadata.namespace.as_deref().unwrap_or("default");
        let mut secrets: Vec<(String, String)> = Vec::new();
        if let Some(reference) = &image.spec.auth_secret_ref {
            let ns = reference
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace.to_string());
            secrets.push((ns, reference.name.clone()));
        }
        secrets.extend(
            image
                .spec
                .image_pull_secrets
                .iter()
                .map(|s| (namespace.to_string(), s.name.clone())),
        );
        if !secrets.is_empty() {
            let Some(client) = &self.cluster else {
                let why =
                    "the entry names Secrets, but standalone mode has no cluster to read them from";
                return Err(CredentialsError(why.into()));
            };
            for (namespace, name) in &secrets {
                let document = read_secret(client, namespace, name).await?;
                if let Some(auth) = from_config_json(&document, host) {
                    return Ok(auth);
                }
            }
        }
        if let Some((internal, token_file)) = &self.internal_registry
            && internal == host
        {
            let token = std::fs::read_to_string(token_file).map_err(|e| {
                format!(
                    "reading the service account token {}: {e}",
                    token_file.display()
                )
            })?;
            return Ok(RegistryAuth::Basic(
                "serviceaccount".into(),
                token.trim().to_string(),
            ));
        }
        for file in &self.auth_files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let Ok(document) = serde_json::from_str::<Value>(&text) else {
                tracing::warn!(file = %file.display(), "auth file is not JSON; skipped");
                continue;
            };
            if let Some(auth) = from_config_json(&document, host) {
                return Ok(auth);
            }
        }
        Ok(RegistryAuth::Anonymous)
    }
}

async fn read_secret(client: &kube::Client, namespace: &str, name: &str) -> Result<Value, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|e| {
        if is_not_found(&e) {
            format!("Secret {namespace}/{name} not found")
        } else {
            format!("reading Secret {namespace}/{name}: {}", one_line(&e))
        }
    })?;
    if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
        return Err(format!(
            "Secret {namespace}/{name} is not of type kubernetes.io/dockerconfigjson"
        ));
    }
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .ok_or_else(|| format!("Secret {namespace}/{name} has no .dockerconfigjson"))?;
    serde_json::from_slice(&data.0)
        .map_err(|e| format!("Secret {namespace}/{name}: .dockerconfigjson is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hosts_and_config_entries() {
        assert_eq!(image_host("quay.io/automotive/autosd:10"), "quay.io");
        assert_eq!(image_host("127.0.0.1:5000/a/b@sha256:00"), "127.0.0.1:5000");
        assert_eq!(image_host("library/fedora:40"), "docker.io");
        let document = json!({"auths": {
            "https://quay.io": {"auth": STANDARD.encode("robot:secret")},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
        }});
        assert!(
            matches!(from_config_json(&document, "quay.io"), Some(RegistryAuth::Basic(u, p)) if u == "robot" && p == "secret")
        );
        assert!(
            matches!(from_config_json(&document, "127.0.0.1:5000"), Some(RegistryAuth::Basic(u, _)) if u == "u")
        );
        assert!(from_config_json(&document, "docker.io").is_none());
    }

    fn image(reference: &str) -> CatalogImage {
        let mut image = CatalogImage::default();
        image.metadata.namespace = Some("builds".into());
        image.spec.registry_url = reference.into();
        image
    }

    #[tokio::test]
    async fn the_internal_registry_gets_the_service_account_token_and_others_the_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "sa-token\n").unwrap();
        let auth_file = dir.path().join("auth.json");
        let document = json!({"auths": {"quay.io": {"auth": STANDARD.encode("robot:secret")}}});
        std::fs::write(&auth_file, document.to_string()).unwrap();
        let internal = "image-registry.openshift-image-registry.svc:5000";
        let sources = CredentialSources {
            cluster: None,
            auth_files: vec![dir.path().join("missing.json"), auth_file],
            internal_registry: Some((internal.into(), token)),
        };
        let auth = sources
            .for_image(&image(&format!("{internal}/builds/autosd:10")))
            .await
            .unwrap();
        assert!(
            matches!(auth, RegistryAuth::Basic(u, p) if u == "serviceaccount" && p == "sa-token")
        );
        let auth = sources
            .for_image(&image("quay.io/automotive/autosd:10"))
            .await
            .unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, _) if u == "robot"));
        let auth = sources
            .for_image(&image("ghcr.io/automotive/autosd:10"))
            .await
            .unwrap();
        assert!(matches!(auth, RegistryAuth::Anonymous));
        // Secrets named without a cluster to read them from: an error that says so.
        let mut secret = image("quay.io/automotive/autosd:10");
        secret.spec.image_pull_secrets = vec![crate::api::types::LocalObjectReference {
            name: "pull".into(),
        }];
        assert!(
            sources
                .for_image(&secret)
                .await
                .unwrap_err()
                .to_string()
                .contains("standalone")
        );
    }
}
