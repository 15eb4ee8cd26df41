//! One look at an image in its registry, through oci-client: the manifest or index a reference
//! resolves to, each platform's manifest and config, and what that says about the image
//! (`status.registryMetadata`). Failures are sorted into what a retry may fix and what it
//! cannot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
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

/// Where automotive-image-builder pipelines name the helper (builder) image of an image: a
/// manifest annotation, or a label of the image config (the automotive-dev-operator's
/// `internal/common/oci/spec.json`: its annotation prefix and the `builder-image` key).
const BUILDER_IMAGE_KEY: &str = "automotive.sdv.cloud.redhat.com/builder-image";
/// Configs that are image configs, the only ones with labels; disk artifacts carry the OCI
/// empty config or their own type.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// How deep indexes of indexes are followed for builder images, as the operator does.
const MAX_INDEX_DEPTH: usize = 8;

/// One image's registry, as one client and credentials see it; errors are sorted for `reference`.
/// What is read by digest is kept for the inspection, which reads some of it twice (platform
/// manifests and configs, for the description and for builder images).
struct Source<'a> {
    client: &'a oci_client::Client,
    auth: &'a RegistryAuth,
    reference: &'a str,
    pinned: bool,
    credentials: bool,
    read: Mutex<HashMap<String, Value>>,
}

impl Source<'_> {
    /// Sorts an oci-client error into what a retry may fix and what it cannot.
    fn fail(&self, error: OciDistributionError) -> Failure {
        let reference = self.reference;
        let transient = |reason, message: &dyn std::fmt::Display| Failure::Transient {
            reason,
            message: format!("{reference}: {message}"),
        };
        match error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => self.refused("401 Unauthorized"),
            OciDistributionError::ImageManifestNotFoundError(m) => self.missing(&m),
            OciDistributionError::RegistryError { envelope, .. } => self.refusal(&envelope),
            OciDistributionError::ServerError {
                code: 401 | 403,
                message,
                ..
            } => self.refused(&message),
            OciDistributionError::ServerError {
                code: 404, message, ..
            } => self.missing(&message),
            OciDistributionError::ServerError {
                code: 429, message, ..
            } => transient("RateLimited", &message),
            OciDistributionError::ServerError { code, message, .. } if code >= 500 => {
                Failure::Unreachable(format!(
                    "{reference}: the registry answered {code}: {message}"
                ))
            }
            OciDistributionError::RequestError(e) => {
                Failure::Unreachable(format!("{reference}: {}", error_chain(&e)))
            }
            OciDistributionError::IoError(e) => Failure::Unreachable(format!("{reference}: {e}")),
            other => transient("RegistryError", &other),
        }
    }

    /// The registry's own error document, sorted by its codes.
    fn refusal(&self, envelope: &OciEnvelope) -> Failure {
        let has =
            |wanted: &[OciErrorCode]| envelope.errors.iter().any(|e| wanted.contains(&e.code));
        let text = envelope
            .errors
            .iter()
            .map(|e| format!("{:?}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let reference = self.reference;
        if has(&[OciErrorCode::ManifestUnknown, OciErrorCode::NameUnknown]) {
            self.missing(&text)
        } else if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
            self.refused(&text)
        } else if has(&[OciErrorCode::Toomanyrequests]) {
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

    /// Credentials refused or wanted: final if we sent some, else worth a retry once they are
    /// configured.
    fn refused(&self, message: &str) -> Failure {
        let message = format!("{}: {message}", self.reference);
        if self.credentials {
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
    }

    /// No such manifest: final for a digest, which will not appear; a tag may be pushed later.
    fn missing(&self, message: &str) -> Failure {
        let reference = self.reference;
        if self.pinned {
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
    }

    /// The manifest or index `image` names, parsed, with its digest.
    async fn manifest(&self, image: &Reference) -> Result<(Value, String), Failure> {
        if let Some(digest) = image.digest()
            && let Some(manifest) = self.kept(digest)
        {
            return Ok((manifest, digest.to_string()));
        }
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(image, self.auth, &MANIFEST_TYPES)
            .await
            .map_err(|e| self.fail(e))?;
        let manifest: Value = serde_json::from_slice(&bytes).map_err(|e| Failure::Permanent {
            reason: "InvalidManifest",
            message: format!("{}: the manifest is not JSON: {e}", self.reference),
        })?;
        self.keep(&digest, &manifest);
        Ok((manifest, digest))
    }

    fn kept(&self, digest: &str) -> Option<Value> {
        self.read.lock().ok()?.get(digest).cloned()
    }

    fn keep(&self, digest: &str, value: &Value) {
        if let Ok(mut read) = self.read.lock() {
            read.insert(digest.to_string(), value.clone());
        }
    }

    /// The image config of an image manifest; Null for other configs (artifacts).
    async fn config(&self, image: &Reference, manifest: &Value) -> Result<Value, Failure> {
        let config = &manifest["config"];
        let is_image = config["mediaType"]
            .as_str()
            .is_some_and(|t| IMAGE_CONFIG_TYPES.contains(&t));
        let Some(digest) = config["digest"].as_str().filter(|_| is_image) else {
            return Ok(Value::Null);
        };
        if let Some(config) = self.kept(digest) {
            return Ok(config);
        }
        let mut blob = Vec::new();
        self.client
            .pull_blob(image, digest, &mut blob)
            .await
            .map_err(|e| self.fail(e))?;
        let config = serde_json::from_slice(&blob).unwrap_or(Value::Null);
        self.keep(digest, &config);
        Ok(config)
    }

    /// Adds the builder images `manifest` (found at `image`) names to `found`, as the
    /// automotive-dev-operator's `readBuilderImages` reads them
    /// (`internal/controller/catalogimage/registry.go`): the manifest's annotation; for an
    /// index, every platform's; for an image manifest without the annotation, its config's
    /// label.
    fn builder_images<'a>(
        &'a self,
        image: &'a Reference,
        manifest: &'a Value,
        depth: usize,
        found: &'a mut Vec<String>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let annotation = manifest["annotations"].get(BUILDER_IMAGE_KEY);
            if let Some(name) = annotation.and_then(Value::as_str).filter(|n| !n.is_empty()) {
                found.push(name.to_string());
            }
            if is_index(&media_type(manifest)) {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(Failure::Permanent {
                        reason: "InvalidManifest",
                        message: format!(
                            "{}: indexes nested more than {MAX_INDEX_DEPTH} deep",
                            self.reference
                        ),
                    });
                }
                for digest in child_digests(manifest) {
                    let child = image.clone_with_digest(digest.to_string());
                    let (child_manifest, _) = self.manifest(&child).await?;
                    self.builder_images(&child, &child_manifest, depth + 1, found)
                        .await?;
                }
            } else if annotation.is_none() {
                let config = self.config(image, manifest).await?;
                let label = config["config"]["Labels"][BUILDER_IMAGE_KEY].as_str();
                if let Some(name) = label.filter(|n| !n.is_empty()) {
                    found.push(name.to_string());
                }
            }
            Ok(())
        })
    }
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
    let source = Source {
        client,
        auth,
        reference,
        pinned: parsed.digest().is_some(),
        credentials: !matches!(auth, RegistryAuth::Anonymous),
        read: Mutex::default(),
    };
    let (top, digest) = source.manifest(&parsed).await?;
    let media_type = media_type(&top);
    let mut metadata = RegistryMetadata {
        resolved_digest: Some(digest),
        media_type: Some(media_type.clone()),
        annotations: annotations(&top),
        ..RegistryMetadata::default()
    };
    let (manifest_ref, manifest) = if is_index(&media_type) {
        metadata.is_multi_arch = Some(true);
        choose_platform(&source, &parsed, &top, architecture, &mut metadata).await?
    } else {
        metadata.is_multi_arch = Some(false);
        (parsed.clone(), top.clone())
    };
    metadata.layer_count = Some(manifest["layers"].as_array().map_or(0, Vec::len) as i32);
    metadata.size_bytes = Some(image_size(&manifest));
    for (key, value) in annotations(&manifest) {
        metadata.annotations.entry(key).or_insert(value);
    }
    let config = source.config(&manifest_ref, &manifest).await?;
    let platform = platform_of(&config);
    metadata.platform = Some(if platform == Platform::default() {
        metadata
            .platform_variants
            .first()
            .map(PlatformVariant::platform)
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
    // As the operator does, a builder image that cannot be read leaves the rest of the
    // inspection standing and says so in builderImageResolved.
    let mut builders = Vec::new();
    let resolved = source.builder_images(&parsed, &top, 0, &mut builders).await;
    if let Err(failure) = &resolved {
        tracing::info!(%reference, reason = failure.reason(), error = failure.message(), "builder images not resolved");
    }
    metadata.builder_images = builders;
    metadata.builder_image_resolved = Some(resolved.is_ok());
    Ok(Inspection { metadata })
}

/// The manifest of the platform the entry claims in an index (the first when it claims
/// none), recording every platform in `metadata.platformVariants`.
async fn choose_platform(
    source: &Source<'_>,
    index_ref: &Reference,
    index: &Value,
    architecture: Option<&str>,
    metadata: &mut RegistryMetadata,
) -> Result<(Reference, Value), Failure> {
    let mut chosen = None;
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let platform = platform_of(&entry["platform"]);
        let Some(platform_digest) = entry["digest"].as_str() else {
            continue;
        };
        let child = index_ref.clone_with_digest(platform_digest.to_string());
        let (child_manifest, _) = source.manifest(&child).await?;
        metadata.platform_variants.push(PlatformVariant::new(
            platform.clone(),
            platform_digest.to_string(),
            image_size(&child_manifest),
        ));
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
    chosen.ok_or_else(|| {
        let offered: Vec<String> = metadata
            .platform_variants
            .iter()
            .filter_map(|v| v.architecture.clone())
            .collect();
        Failure::Permanent {
            reason: "ArchitectureMissing",
            message: format!(
                "{} offers {} but not spec.metadata.architecture {:?}",
                source.reference,
                offered.join(", "),
                architecture.unwrap_or_default()
            ),
        }
    })
}

fn child_digests(index: &Value) -> impl Iterator<Item = &str> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["digest"].as_str())
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
