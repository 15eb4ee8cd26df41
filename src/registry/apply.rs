//! Server-side apply (`application/apply-patch+yaml`): an apply configuration is pruned to the
//! schema, merged into the live object (or creates it) with field ownership checked, then
//! written through the same create and replace rules as every other write.

use serde_json::{Value, json};

use super::limits::check_object_size;
use super::managed::{self, Conflict, Managers, Writer};
use super::strategy::{Context, Ownership, Subresource, without_managed_fields};
use super::write::{WriteOptions, Written, patch_names_revision};
use super::{Registry, decode_stored, now};
use crate::api::decode::{FieldValidation, decode_object};
use crate::api::shape::{self, Shape};
use crate::api::status::ApiError;
use crate::api::types::{API_VERSION, KIND};

/// Optimistic-concurrency retries of an apply that names no resourceVersion.
const APPLY_RETRIES: usize = 8;

/// The apply request besides its body.
pub struct ApplyOptions {
    pub force: bool,
    pub write: WriteOptions,
}

impl Registry {
    /// Applies `config` (the request's apply configuration) to the object or its `/status`.
    pub async fn apply(
        &self,
        (namespace, name): (&str, &str),
        subresource: Subresource,
        config: Value,
        options: &ApplyOptions,
    ) -> Result<Written, ApiError> {
        let mut config = apply_configuration(config, namespace, name)?;
        let warnings = prune_unknown(&mut config, options.write.field_validation)?;
        let writer = Writer {
            manager: &options.write.manager,
            subresource,
        };
        let (config, writer) = (&config, &writer);
        // Someone else wrote in between: apply again onto what they wrote.
        let retry = |e: &ApiError| {
            (e.is_conflict() || e.is_already_exists()) && !patch_names_revision(config)
        };
        let mut written = self
            .write_from_copy(name, (APPLY_RETRIES, retry), |base| async move {
                let current = self.base(namespace, name, base).await?;
                let (live, managers) = match &current {
                    Some(item) => {
                        let stored = decode_stored(&item.value)?;
                        let managers = stored
                            .metadata
                            .managed_fields
                            .as_deref()
                            .unwrap_or_default();
                        let managers = Managers::decode(managers).unwrap_or_default();
                        (without_managed_fields(&stored), managers)
                    }
                    None if subresource == Subresource::Status => {
                        return Err(ApiError::not_found(name));
                    }
                    None => (json!({}), Managers::default()),
                };
                let (merged, managers) =
                    managed::apply(managers, &live, config, writer, options.force, &now())
                        .map_err(|conflicts| conflict_error(&conflicts))?;
                check_object_size(&merged)?;
                let (mut image, _) = decode_object(&merged, FieldValidation::Ignore)?;
                image.metadata.managed_fields = managers.encode();
                let write = &options.write;
                match &current {
                    None => {
                        self.insert(namespace, image, write, Ownership::SetByApply)
                            .await
                    }
                    Some(item) => {
                        let context = Context {
                            manager: &write.manager,
                            subresource,
                            ownership: Ownership::SetByApply,
                            now: now(),
                        };
                        let target = (namespace, name);
                        self.replace(target, image, item, write, &context).await
                    }
                }
            })
            .await?;
        written.warnings.extend(warnings);
        Ok(written)
    }
}

/// Checks an apply configuration: an object of our kind, for the object the URL names,
/// without managedFields.
fn apply_configuration(mut config: Value, namespace: &str, name: &str) -> Result<Value, ApiError> {
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match config.get(field).and_then(Value::as_str) {
            Some(given) if given == expected => {}
            given => {
                return Err(ApiError::bad_request(format!(
                    "the {field} of the apply configuration ({}) must be {expected}",
                    given.unwrap_or("unset")
                )));
            }
        }
    }
    let metadata = config
        .as_object_mut()
        .expect("checked above")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !metadata.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if metadata.get("managedFields").is_some_and(|m| !m.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    match metadata.get("name").and_then(Value::as_str) {
        Some(given) if given != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        _ => metadata["name"] = name.into(),
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != namespace => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => metadata["namespace"] = namespace.into(),
    }
    Ok(config)
}

/// Prunes the configuration's unknown fields; the warnings to send, or a 400 under Strict.
fn prune_unknown(config: &mut Value, validation: FieldValidation) -> Result<Vec<String>, ApiError> {
    let unknown = prune(config, shape::image(), "");
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok(unknown),
        _ => Ok(Vec::new()),
    }
}

/// Drops the fields the schema does not declare, as kube-apiserver prunes a custom resource;
/// returns them as `unknown field "spec.x"` warnings.
fn prune(value: &mut Value, shape: &Shape, path: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    match (value, shape) {
        (Value::Object(fields), Shape::Struct(_) | Shape::Map(_)) => {
            fields.retain(|name, _| {
                let known = shape.field(name).is_some();
                if !known {
                    unknown.push(format!("unknown field {:?}", join(path, name)));
                }
                known
            });
            for (name, child) in fields.iter_mut() {
                if let Some(child_shape) = shape.field(name) {
                    unknown.extend(prune(child, child_shape, &join(path, name)));
                }
            }
        }
        (Value::Array(items), Shape::List(_, item_shape)) => {
            for (i, item) in items.iter_mut().enumerate() {
                unknown.extend(prune(item, item_shape, &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    unknown
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// 409 naming each conflicting manager and field (fieldmanager's conflict.go).
fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.path
        ),
        _ => {
            let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
            managers.sort();
            managers.dedup();
            let lines: Vec<String> = managers
                .iter()
                .flat_map(|manager| {
                    std::iter::once(format!("conflicts with {manager}:")).chain(
                        conflicts
                            .iter()
                            .filter(|c| c.manager == *manager)
                            .map(|c| format!("- {}", c.path)),
                    )
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.path}))
        .collect();
    let mut error = ApiError::new(http::StatusCode::CONFLICT, "Conflict", message);
    error.details = Some(json!({"causes": causes}));
    error
}
