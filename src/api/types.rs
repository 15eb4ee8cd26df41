//! The CatalogImage resource as stored and served (see shared/design/catalogimage-api.md).
//! Doc comments become the OpenAPI descriptions that `kubectl explain` prints.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "catalog.automotive.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "catalog.automotive.io/v1alpha1";
pub const KIND: &str = "CatalogImage";
pub const LIST_KIND: &str = "CatalogImageList";
pub const PLURAL: &str = "catalogimages";
pub const SINGULAR: &str = "catalogimage";
pub const SHORT_NAMES: [&str; 1] = ["cimg"];
pub const CATEGORIES: [&str; 1] = ["catalog"];

/// CatalogImage is one automotive OS image (AutoSD, CentOS Stream, ... built with
/// automotive-image-builder) kept in an OCI registry, with what is known about it and the result
/// of checking it against its registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogImage {
    /// APIVersion defines the versioned schema of this representation of an object.
    #[serde(default)]
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    #[serde(default)]
    pub kind: String,
    /// Standard object's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the image is and where it lives, written by users and build pipelines.
    pub spec: CatalogImageSpec,
    /// What the server's verification loop found, written through the status subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CatalogImageStatus>,
}

/// The image: where it is, which digest it is pinned to, and what it was built for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogImageSpec {
    /// Image reference: host[:port]/path with a :tag or @sha256:<64 hex> digest.
    pub registry_url: String,
    /// Pinned manifest digest (sha256:<64 hex>); verification fails if the registry serves another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Tags of this image; the field selector spec.tags=X matches when X is one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub tags: Vec<String>,
    /// A kubernetes.io/dockerconfigjson Secret with credentials for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretReference>,
    /// More kubernetes.io/dockerconfigjson Secrets, in the entry's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// How often to re-verify, as a Go duration (90s, 30m, 1h30m). Default 1h, minimum 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_interval: Option<String>,
    /// What the image was built as and for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ImageMetadata>,
    /// The automotive-image-builder helper image that built this image, kept here so that the
    /// helper is retained (not garbage-collected) while an entry names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_image: Option<String>,
}

/// A Secret in the same or, if the requesting user may read it, another namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret; the entry's namespace when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A Secret in the entry's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the Secret.
    pub name: String,
}

/// How the image was built and what it runs on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageMetadata {
    /// CPU architecture: x86_64/aarch64 (automotive-image-builder) or amd64/arm64 (OCI); stored
    /// as written, compared normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Operating system. Default linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// CPU variant, e.g. v8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Distribution, as automotive-image-builder names it (aib list-dist): cs9, autosd10-sig, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro: Option<String>,
    /// Version of the distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro_version: Option<String>,
    /// Hardware targets the image is built for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub targets: Vec<HardwareTarget>,
    /// Whether the image is bootc-capable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootc: Option<bool>,
    /// How the image was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_mode: Option<BuildMode>,
    /// Export format: qcow2, raw, image, container, bootc, simg, ... (an open set of tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_format: Option<String>,
}

/// A hardware target of the image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HardwareTarget {
    /// Target name: qemu, rpi4, beagleplay, ...
    pub name: String,
    /// Tested on that hardware, not only supported in theory.
    #[serde(default)]
    pub verified: bool,
    /// Notes for people, e.g. what does not work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// How automotive-image-builder built the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    Bootc,
    Image,
    Package,
}

impl BuildMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildMode::Bootc => "bootc",
            BuildMode::Image => "image",
            BuildMode::Package => "package",
        }
    }
}

/// What the verification loop found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogImageStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending (never verified), Verifying, Available, Unavailable (will retry), Failed (needs a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Verified, Available and Ready, with reasons and messages a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What the registry says about the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_metadata: Option<RegistryMetadata>,
    /// When the last verification attempt completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification_time: Option<Time>,
    /// Consecutive failed verifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_failures: Option<i32>,
    /// When the image was published to the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Time>,
    /// The name of the ImageBuild (same namespace) that published this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_build: Option<String>,
    /// Downloadable artifacts of the image (disk images, containers, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifact_refs: Vec<ArtifactReference>,
    /// How many times the image has been accessed, as counted by its publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_count: Option<i64>,
}

/// A downloadable artifact of the image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactReference {
    /// Artifact type: qcow2, raw, vmdk, container, iso, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// Where to download it.
    pub url: String,
    /// Content digest to check the download against (sha256:...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Format details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

/// The lifecycle phase of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Pending,
    Verifying,
    Available,
    Unavailable,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Verifying => "Verifying",
            Phase::Available => "Available",
            Phase::Unavailable => "Unavailable",
            Phase::Failed => "Failed",
        }
    }
}

/// The manifest or index the registry serves for the reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMetadata {
    /// Digest the reference resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_digest: Option<String>,
    /// Media type of the manifest or index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Total size of config and layers, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Number of layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_count: Option<i32>,
    /// Platform of a single-platform image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Creation time, from the image config or org.opencontainers.image.created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// Whether the reference is an index of several platforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_multi_arch: Option<bool>,
    /// The platforms of an index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_variants: Vec<PlatformVariant>,
    /// All OCI annotations of the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The builder (helper) image references of every platform of the image, from the
    /// `automotive.sdv.cloud.redhat.com/builder-image` manifest annotation or image config label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builder_images: Vec<String>,
    /// Whether builderImages could be read from every platform: true with no builderImages
    /// means the image names no helper; false means it is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_image_resolved: Option<bool>,
}

/// An OCI platform.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Platform {
    /// CPU architecture, as OCI names it (amd64, arm64, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// CPU variant, e.g. v8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// One platform of a multi-platform index: the platform's fields beside its digest and size.
/// (Written out, not a flattened `Platform`: unknown fields under a flattened struct escape
/// the unknown-field check.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformVariant {
    /// CPU architecture, as OCI names it (amd64, arm64, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// CPU variant, e.g. v8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Digest of this platform's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size of this platform's config and layers, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

impl PlatformVariant {
    pub fn new(platform: Platform, digest: String, size_bytes: i64) -> PlatformVariant {
        PlatformVariant {
            architecture: platform.architecture,
            os: platform.os,
            variant: platform.variant,
            digest: Some(digest),
            size_bytes: Some(size_bytes),
        }
    }

    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
}
