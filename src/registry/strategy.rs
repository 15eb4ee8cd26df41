//! The steps every write takes, in k8s.io/apiserver's order (`rest.BeforeCreate`,
//! `rest.BeforeUpdate`): prepare (server-owned metadata, the spec/status split, defaults,
//! managedFields), then admit (validation, and the Secret check through a capability the caller
//! passes), then commit (`write.rs`). Prepare is pure: the same input, the same object.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use serde_json::Value;

use super::managed::{Writer, record_update, starting_managers};
use crate::api::status::ApiError;
use crate::api::types::CatalogImage;
use crate::api::validate::{Cause, default, validate};

/// Which endpoint a write comes through: the object, or its `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// Who sets the managedFields of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// The write records its manager's fields (create, update, patch).
    Record,
    /// Server-side apply has set them already.
    SetByApply,
}

/// Answers Ok when the writer may `get` Secret (namespace, name), else the error to return.
pub type SecretAccess =
    Arc<dyn Fn(String, String) -> BoxFuture<'static, Result<(), ApiError>> + Send + Sync>;

/// What a write is asked to do besides its object: its manager, and the moment it happens.
pub struct Context<'a> {
    pub manager: &'a str,
    pub subresource: Subresource,
    pub ownership: Ownership,
    pub now: Time,
}

/// A create's object, before admission: server-owned metadata set, status dropped (it is
/// written through `/status` only), defaults filled in, managedFields recorded. A name still to
/// be generated is left to the commit, which retries a generated name that is taken.
pub fn prepare_for_create(
    namespace: &str,
    mut image: CatalogImage,
    context: &Context,
) -> Result<CatalogImage, ApiError> {
    match image.metadata.namespace.as_deref() {
        Some(ns) if !ns.is_empty() && ns != namespace => return Err(namespace_mismatch()),
        _ => image.metadata.namespace = Some(namespace.to_string()),
    }
    let meta = &mut image.metadata;
    meta.uid = Some(uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp = Some(context.now.clone());
    meta.generation = Some(1);
    meta.resource_version = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.self_link = None;
    image.status = None;
    default(&mut image);
    if context.ownership == Ownership::Record {
        image.metadata.managed_fields = record(&image, None, context);
    }
    Ok(image)
}

/// Whether a create asks for a generated name (`generateName` and no name).
pub fn generates_name(image: &CatalogImage) -> bool {
    let meta = &image.metadata;
    meta.name.as_deref().unwrap_or("").is_empty()
        && !meta.generate_name.as_deref().unwrap_or("").is_empty()
}

/// An update's object, before admission, from the stored `old` (at `revision`): the request's
/// resourceVersion checked, only spec and metadata (main resource) or only status (`/status`)
/// taken from `image`, server-owned metadata carried over, the generation bumped by a spec
/// change, defaults filled in, managedFields recorded.
pub fn prepare_for_update(
    (namespace, name): (&str, &str),
    mut image: CatalogImage,
    old: &CatalogImage,
    revision: u64,
    context: &Context,
) -> Result<CatalogImage, ApiError> {
    if image.metadata.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            image.metadata.name.as_deref().unwrap_or("")
        )));
    }
    let given_namespace = image.metadata.namespace.as_deref();
    if given_namespace.is_some_and(|ns| !ns.is_empty() && ns != namespace) {
        return Err(namespace_mismatch());
    }
    check_revision(name, image.metadata.resource_version.as_deref(), revision)?;
    // Defaults first, so that a spec that differs only by omitted defaults is unchanged.
    default(&mut image);
    match context.subresource {
        Subresource::Status => {
            let status = image.status.take();
            image = old.clone();
            image.status = status;
        }
        Subresource::Main => {
            image.status = old.status.clone();
            let meta = &mut image.metadata;
            meta.deletion_timestamp = old.metadata.deletion_timestamp.clone();
            meta.deletion_grace_period_seconds = old.metadata.deletion_grace_period_seconds;
            let generation = old.metadata.generation.unwrap_or(1);
            let bump = i64::from(image.spec != old.spec);
            image.metadata.generation = Some(generation + bump);
        }
    }
    let meta = &mut image.metadata;
    meta.name = Some(name.to_string());
    meta.namespace = Some(namespace.to_string());
    meta.uid = old.metadata.uid.clone();
    meta.creation_timestamp = old.metadata.creation_timestamp.clone();
    meta.generate_name = meta
        .generate_name
        .take()
        .or(old.metadata.generate_name.clone());
    meta.self_link = None;
    meta.resource_version = old.metadata.resource_version.clone();
    if context.ownership == Ownership::Record {
        image.metadata.managed_fields = record(&image, Some(old), context);
    }
    Ok(image)
}

/// A resourceVersion in the request must be the stored one (optimistic concurrency).
fn check_revision(name: &str, given: Option<&str>, revision: u64) -> Result<(), ApiError> {
    match given {
        None | Some("") => Ok(()),
        Some(given) if given == revision.to_string() => Ok(()),
        Some(given) if given.parse::<u64>().is_err() => {
            let cause = Cause::invalid(
                "metadata.resourceVersion",
                given,
                "must be a resourceVersion this server returned",
            );
            Err(ApiError::invalid(name, &[cause]))
        }
        Some(_) => Err(ApiError::stale(name)),
    }
}

fn namespace_mismatch() -> ApiError {
    ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}

/// Admission: the object is valid, and its writer may read a Secret of another namespace it
/// newly names (asked only when the reference is new or changed, so writes that leave it alone
/// need no access; `secret_access` is None when the server itself writes).
pub async fn admit(
    image: &CatalogImage,
    old: Option<&CatalogImage>,
    secret_access: Option<&SecretAccess>,
) -> Result<(), ApiError> {
    let causes = validate(image);
    if !causes.is_empty() {
        let name = image.metadata.name.as_deref().unwrap_or("");
        return Err(ApiError::invalid(name, &causes));
    }
    let (Some(check), Some(reference)) = (secret_access, &image.spec.auth_secret_ref) else {
        return Ok(());
    };
    let namespace = image.metadata.namespace.as_deref().unwrap_or("");
    let other_namespace = reference
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty() && *ns != namespace);
    let Some(secret_namespace) = other_namespace else {
        return Ok(());
    };
    if old.is_some_and(|old| old.spec.auth_secret_ref == image.spec.auth_secret_ref) {
        return Ok(());
    }
    check(secret_namespace.to_string(), reference.name.clone()).await
}

/// The managedFields of `image` after its writer's non-apply write from `old` (None: create).
fn record(
    image: &CatalogImage,
    old: Option<&CatalogImage>,
    context: &Context,
) -> Option<Vec<ManagedFieldsEntry>> {
    let writer = Writer {
        manager: context.manager,
        subresource: context.subresource,
    };
    let stored = old.and_then(|o| o.metadata.managed_fields.as_deref());
    let managers = starting_managers(image.metadata.managed_fields.as_deref(), stored)?;
    let old = old.map_or_else(|| Value::Object(Default::default()), without_managed_fields);
    let new = without_managed_fields(image);
    record_update(managers, &old, &new, &writer, &context.now).encode()
}

/// An object as JSON, without its managedFields: what field ownership is computed over.
pub fn without_managed_fields(image: &CatalogImage) -> Value {
    let mut value = serde_json::to_value(image).expect("a CatalogImage always serialises");
    if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
        metadata.remove("managedFields");
    }
    value
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::types::{CatalogImageSpec, CatalogImageStatus, ImageMetadata, Phase};

    fn context(subresource: Subresource) -> Context<'static> {
        Context {
            manager: "kubectl",
            subresource,
            ownership: Ownership::Record,
            now: crate::registry::now(),
        }
    }

    fn image(url: &str) -> CatalogImage {
        CatalogImage {
            metadata: ObjectMeta {
                name: Some("a".into()),
                ..ObjectMeta::default()
            },
            spec: CatalogImageSpec {
                registry_url: url.into(),
                metadata: Some(ImageMetadata {
                    variant: Some(String::new()),
                    ..ImageMetadata::default()
                }),
                ..CatalogImageSpec::default()
            },
            status: Some(CatalogImageStatus {
                phase: Some(Phase::Available),
                ..CatalogImageStatus::default()
            }),
            ..CatalogImage::default()
        }
    }

    /// The object as stored at revision 7.
    fn stored() -> CatalogImage {
        let mut old =
            prepare_for_create("ns", image("q.io/a:1"), &context(Subresource::Main)).unwrap();
        old.metadata.resource_version = Some("7".into());
        old
    }

    #[test]
    fn create_sets_what_the_server_owns_and_drops_status() {
        let created = stored();
        let meta = &created.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(meta.generation, Some(1));
        assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
        assert_eq!(
            created.status, None,
            "status is written through /status only"
        );
        let metadata = created.spec.metadata.as_ref().unwrap();
        assert_eq!(metadata.variant, None, "an empty optional string is unset");
        assert_eq!(metadata.os.as_deref(), Some("linux"));
        assert_eq!(
            meta.managed_fields.as_ref().unwrap()[0].manager.as_deref(),
            Some("kubectl")
        );
        let mut other = image("q.io/a:1");
        other.metadata.namespace = Some("other".into());
        let refused = prepare_for_create("ns", other, &context(Subresource::Main));
        assert_eq!(refused.unwrap_err().code, http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn update_of_the_main_resource_keeps_status_and_bumps_generation_on_spec_changes() {
        let old = stored();
        let main = context(Subresource::Main);
        let same = prepare_for_update(("ns", "a"), image("q.io/a:1"), &old, 7, &main).unwrap();
        assert_eq!(same.metadata.generation, Some(1));
        assert_eq!(same.status, old.status);
        assert_eq!(same.metadata.uid, old.metadata.uid);
        let changed = prepare_for_update(("ns", "a"), image("q.io/a:2"), &old, 7, &main).unwrap();
        assert_eq!(changed.metadata.generation, Some(2));
        assert_eq!(changed.spec.registry_url, "q.io/a:2");
    }

    #[test]
    fn update_of_status_takes_only_status() {
        let old = stored();
        let status = context(Subresource::Status);
        let written = prepare_for_update(("ns", "a"), image("q.io/a:2"), &old, 7, &status).unwrap();
        assert_eq!(written.spec, old.spec);
        assert_eq!(written.metadata.generation, Some(1));
        assert_eq!(written.status.unwrap().phase, Some(Phase::Available));
    }

    #[test]
    fn update_checks_names_and_the_resource_version() {
        let old = stored();
        let main = context(Subresource::Main);
        let with_revision = |revision: &str| {
            let mut image = image("q.io/a:1");
            image.metadata.resource_version = Some(revision.into());
            prepare_for_update(("ns", "a"), image, &old, 7, &main).map(|_| ())
        };
        assert!(with_revision("7").is_ok());
        assert!(with_revision("6").unwrap_err().is_conflict());
        assert_eq!(
            with_revision("x").unwrap_err().code,
            http::StatusCode::UNPROCESSABLE_ENTITY
        );
        let renamed = prepare_for_update(("ns", "b"), image("q.io/a:1"), &old, 7, &main);
        assert_eq!(renamed.unwrap_err().code, http::StatusCode::BAD_REQUEST);
    }
}
