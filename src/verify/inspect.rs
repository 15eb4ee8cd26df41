//! One look at an image in its registry, through oci-client: the manifest or index a reference
//! resolves to, each platform's manifest and config, and what that says about the image
//! (`status.registryMetadata`). Failures are sorted into what a retry may fix and what it
//! cannot.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

use crate::api::fields::normalise_architecture;
use crate::api::types::{Platform, PlatformVariant, RegistryMetadata};

const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// Why a look failed, and whether trying again later can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The registry could not be reached or failed (connection, timeout, 5xx): retried, and
    /// counted against the host's circuit breaker.
    Unreachable(String),
    /// The registry answered, but not with the image (a tag not pushed yet, 429, ...): retried.
    Transient {
        reason: &'static str,
        message: String,
    },
    /// Nothing a retry can fix without a person (unknown digest, refused credentials).
    Permanent {
        reason: &'static str,
        message: String,
    },
}

impl Failure {
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "RegistryUnreachable",
            Failure::Transient { reason, .. } | Failure::Permanent { reason, .. } => reason,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Unreachable(message) => message,
            Failure::Transient { message, .. } | Failure::Permanent { message, .. } => message,
        }
    }
}

/// Sorts an oci-client error. `pinned`: the reference names a digest; `credentials`: we sent
/// some.
fn classify(
    error: OciDistributionError,
    reference: &str,
    pinned: bool,
    credentials: bool,
) -> Failure {
    let refused = |message: String| {
        if credentials {
            Failure::Permanent {
                reason: "Unauthorized",
                message: format!(
                    "{message}: the credentials were refused; fix the Secret or auth file"
                ),
            }
        } else {
            Failure::Transient {
                reason: "Unauthorized",
                message: format!(
                    "{message}: the registry wants credentials; set spec.authSecretRef or spec.imagePullSecrets"
                ),
            }
        }
    };
    let missing = |message: String| {
        if pinned {
            Failure::Permanent {
                reason: "ManifestUnknown",
                message: format!("{reference}: {message}; the registry does not have this digest"),
            }
        } else {
            Failure::Transient {
                reason: "ManifestUnknown",
                message: format!("{reference}: {message}; the tag is not in the registry (yet)"),
            }
        }
    };
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            refused(format!("{reference}: 401 Unauthorized"))
        }
        OciDistributionError::ImageManifestNotFoundError(m) => missing(m),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
            {
                missing(text)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                refused(format!("{reference}: {text}"))
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Failure::Transient {
                    reason: "RateLimited",
                    message: format!("{reference}: {text}"),
                }
            } else {
                Failure::Transient {
                    reason: "RegistryError",
                    message: format!("{reference}: {text}"),
                }
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => refused(format!("{reference}: {message}")),
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => missing(message),
        OciDistributionError::ServerError {
            code: 429, message, ..
        } => Failure::Transient {
            reason: "RateLimited",
            message: format!("{reference}: {message}"),
        },
        OciDistributionError::ServerError { code, message, .. } if code >= 500 => {
            Failure::Unreachable(format!(
                "{reference}: the registry answered {code}: {message}"
            ))
        }
        OciDistributionError::RequestError(e) => {
            Failure::Unreachable(format!("{reference}: {}", error_chain(&e)))
        }
        OciDistributionError::IoError(e) => Failure::Unreachable(format!("{reference}: {e}")),
        other => Failure::Transient {
            reason: "RegistryError",
            message: format!("{reference}: {other}"),
        },
    }
}

/// An error with its causes, which is where connection errors say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What the registry says about an image.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    pub metadata: RegistryMetadata,
}

/// Looks at `reference` with `client`, as `auth`. `architecture` is the one the entry claims:
/// its platform's manifest is the one described, and an index without it fails.
pub async fn inspect(
    client: &oci_client::Client,
    reference: &str,
    auth: &RegistryAuth,
    architecture: Option<&str>,
) -> Result<Inspection, Failure> {
    let parsed: Reference = reference.parse().map_err(|e| Failure::Permanent {
        reason: "InvalidReference",
        message: format!("{reference}: {e}"),
    })?;
    let pinned = parsed.digest().is_some();
    let credentials = !matches!(auth, RegistryAuth::Anonymous);
    let fail = |e| classify(e, reference, pinned, credentials);
    let (bytes, digest) = client
        .pull_manifest_raw(&parsed, auth, &MANIFEST_TYPES)
        .await
        .map_err(fail)?;
    let top: Value = serde_json::from_slice(&bytes).map_err(|e| Failure::Permanent {
        reason: "InvalidManifest",
        message: format!("{reference}: the manifest is not JSON: {e}"),
    })?;
    let media_type = media_type(&top);
    let mut metadata = RegistryMetadata {
        resolved_digest: Some(digest.clone()),
        media_type: Some(media_type.clone()),
        annotations: annotations(&top),
        ..RegistryMetadata::default()
    };
    let (manifest_ref, manifest) = if is_index(&media_type) {
        metadata.is_multi_arch = Some(true);
        let mut chosen = None;
        for entry in top["manifests"].as_array().into_iter().flatten() {
            let platform = platform_of(&entry["platform"]);
            let Some(platform_digest) = entry["digest"].as_str() else {
                continue;
            };
            let child = parsed.clone_with_digest(platform_digest.to_string());
            let (child_bytes, _) = client
                .pull_manifest_raw(&child, auth, &MANIFEST_TYPES)
                .await
                .map_err(fail)?;
            let child_manifest: Value = serde_json::from_slice(&child_bytes).unwrap_or(Value::Null);
            metadata.platform_variants.push(PlatformVariant {
                platform: platform.clone(),
                digest: Some(platform_digest.to_string()),
                size_bytes: Some(image_size(&child_manifest)),
            });
            let wanted = match architecture {
                Some(arch) => {
                    platform.architecture.as_deref().map(normalise_architecture)
                        == Some(normalise_architecture(arch))
                }
                None => chosen.is_none(),
            };
            if wanted && chosen.is_none() {
                chosen = Some((child, child_manifest));
            }
        }
        match chosen {
            Some(chosen) => chosen,
            None => {
                let offered: Vec<String> = metadata
                    .platform_variants
                    .iter()
                    .filter_map(|v| v.platform.architecture.clone())
                    .collect();
                return Err(Failure::Permanent {
                    reason: "ArchitectureMissing",
                    message: format!(
                        "{reference} offers {} but not spec.metadata.architecture {:?}",
                        offered.join(", "),
                        architecture.unwrap_or_default()
                    ),
                });
            }
        }
    } else {
        metadata.is_multi_arch = Some(false);
        (parsed.clone(), top.clone())
    };
    metadata.layer_count = Some(manifest["layers"].as_array().map_or(0, Vec::len) as i32);
    metadata.size_bytes = Some(image_size(&manifest));
    for (key, value) in annotations(&manifest) {
        metadata.annotations.entry(key).or_insert(value);
    }
    let config = match manifest["config"]["digest"].as_str() {
        Some(config_digest) => {
            let mut blob = Vec::new();
            client
                .pull_blob(&manifest_ref, config_digest, &mut blob)
                .await
                .map_err(fail)?;
            serde_json::from_slice(&blob).unwrap_or(Value::Null)
        }
        None => Value::Null,
    };
    let platform = platform_of(&config);
    metadata.platform = Some(if platform == Platform::default() {
        metadata
            .platform_variants
            .first()
            .map(|v| v.platform.clone())
            .unwrap_or_default()
    } else {
        platform
    });
    metadata.created_at = config["created"]
        .as_str()
        .or(metadata
            .annotations
            .get("org.opencontainers.image.created")
            .map(String::as_str))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| Time(Timestamp::from_second(t.as_second()).unwrap_or(t)));
    Ok(Inspection { metadata })
}

fn media_type(manifest: &Value) -> String {
    match manifest["mediaType"].as_str() {
        Some(media_type) => media_type.to_string(),
        // OCI allows leaving it out; an index is what has `manifests`.
        None if manifest.get("manifests").is_some() => OCI_IMAGE_INDEX_MEDIA_TYPE.into(),
        None => OCI_IMAGE_MEDIA_TYPE.into(),
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_IMAGE_INDEX_MEDIA_TYPE || media_type == IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

fn annotations(manifest: &Value) -> BTreeMap<String, String> {
    manifest["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

fn platform_of(value: &Value) -> Platform {
    let text = |key: &str| {
        value[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Platform {
        architecture: text("architecture"),
        os: text("os"),
        variant: text("variant"),
    }
}

/// An image's size: its config and layers, as registries and `skopeo inspect` count it.
fn image_size(manifest: &Value) -> i64 {
    let layers: i64 = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["size"].as_i64())
        .sum();
    layers + manifest["config"]["size"].as_i64().unwrap_or(0)
}
