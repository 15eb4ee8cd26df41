//! OpenAPI v3 (`/openapi/v3/apis/catalog.automotive.io/v1alpha1`) and v2 (`/openapi/v2`),
//! generated from the Rust types with schemars. Schemas carry
//! `x-kubernetes-group-version-kind`, which is how kubectl explain and kube-aggregator find them;
//! operations carry `x-kubernetes-action` and the `fieldValidation` parameter, which is how
//! kubectl decides to ask for server-side field validation. PATCH lists only the content types
//! we accept.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::types::*;

/// Prefix of the names of our own schemas, in the style of Kubernetes' reversed-group names.
const SCHEMA_PREFIX: &str = "io.automotive.catalog.v1alpha1.";
pub const PATCH_CONTENT_TYPES: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

fn ours(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{SCHEMA_PREFIX}{name}")
    }
}

/// Renames our schemas and points every `$ref` at `ref_prefix`.
fn rewrite_refs(value: &mut Value, ref_prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let name = target.rsplit('/').next().unwrap_or_default().to_string();
                *target = format!("{ref_prefix}{}", ours(&name));
            }
            map.values_mut().for_each(|v| rewrite_refs(v, ref_prefix));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, ref_prefix)),
        _ => {}
    }
}

/// Rewrites schemars' optional values into the Kubernetes style kubectl understands: an
/// optional field is one that is not required, never `anyOf` a null; a described reference is
/// `allOf: [$ref]`.
fn kubernetes_style(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("nullable");
            if let Some(Value::Array(options)) = map.get("anyOf") {
                let is_null = |o: &Value| o.get("enum").is_some_and(|e| e == &json!([null]));
                if options.len() == 2 && options.iter().any(is_null) {
                    let other = options
                        .iter()
                        .find(|o| !is_null(o))
                        .cloned()
                        .unwrap_or_default();
                    map.remove("anyOf");
                    match other {
                        Value::Object(other) if other.contains_key("$ref") => {
                            map.insert("allOf".into(), json!([other]));
                        }
                        Value::Object(other) => map.extend(other),
                        _ => {}
                    }
                }
            }
            map.values_mut().for_each(kubernetes_style);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_style),
        _ => {}
    }
}

fn gvk(kind: &str) -> Value {
    json!([{"group": GROUP, "version": VERSION, "kind": kind}])
}

/// The schemas, keyed by name, with `$ref`s relative to `ref_prefix`.
fn schemas(ref_prefix: &str) -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<CatalogImage>();
    let mut schemas: Map<String, Value> = generator
        .take_definitions(true)
        .into_iter()
        .map(|(name, schema)| (ours(&name), schema))
        .collect();
    let image = format!("{SCHEMA_PREFIX}{KIND}");
    if let Some(Value::Object(schema)) = schemas.get_mut(&image) {
        schema.insert("x-kubernetes-group-version-kind".into(), gvk(KIND));
    }
    schemas.insert(
        format!("{SCHEMA_PREFIX}{LIST_KIND}"),
        json!({
            "description": "CatalogImageList is a list of CatalogImage.",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                "metadata": {"$ref": "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta", "description": "Standard list metadata."},
                "items": {"type": "array", "items": {"$ref": format!("{SCHEMA_PREFIX}{KIND}")}, "description": "The entries."},
            },
            "x-kubernetes-group-version-kind": gvk(LIST_KIND),
        }),
    );
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta".into(), json!({
        "description": "ListMeta describes metadata that synthetic resources must have, including lists.",
        "type": "object",
        "properties": {
            "continue": {"type": "string", "description": "continue may be set if the user set a limit on the number of items returned."},
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": {"type": "string", "description": "String that identifies the server's internal version of this object."},
            "selfLink": {"type": "string"},
        },
    }));
    let mut schemas = Value::Object(schemas);
    kubernetes_style(&mut schemas);
    rewrite_refs(&mut schemas, ref_prefix);
    match schemas {
        Value::Object(map) => map,
        _ => unreachable!("built as an object"),
    }
}

struct Operation {
    method: &'static str,
    action: &'static str,
    id: &'static str,
    kind: &'static str,
    body: bool,
    patch: bool,
}

const fn op(
    method: &'static str,
    action: &'static str,
    id: &'static str,
    kind: &'static str,
) -> Operation {
    Operation {
        method,
        action,
        id,
        kind,
        body: false,
        patch: false,
    }
}

/// The paths and their operations: (path, operations, path parameters).
fn paths() -> Vec<(String, Vec<Operation>, Vec<&'static str>)> {
    let base = format!("/apis/{GROUP}/{VERSION}");
    let write = |mut o: Operation| {
        o.body = true;
        o
    };
    let patch = |mut o: Operation| {
        o.patch = true;
        o
    };
    vec![
        (
            format!("{base}/{PLURAL}"),
            vec![op(
                "get",
                "list",
                "listCatalogImageForAllNamespaces",
                LIST_KIND,
            )],
            vec![],
        ),
        (
            format!("{base}/namespaces/{{namespace}}/{PLURAL}"),
            vec![
                op("get", "list", "listNamespacedCatalogImage", LIST_KIND),
                write(op("post", "post", "createNamespacedCatalogImage", KIND)),
                op(
                    "delete",
                    "deletecollection",
                    "deleteCollectionNamespacedCatalogImage",
                    "Status",
                ),
            ],
            vec!["namespace"],
        ),
        (
            format!("{base}/namespaces/{{namespace}}/{PLURAL}/{{name}}"),
            vec![
                op("get", "get", "readNamespacedCatalogImage", KIND),
                write(op("put", "put", "replaceNamespacedCatalogImage", KIND)),
                patch(op("patch", "patch", "patchNamespacedCatalogImage", KIND)),
                op("delete", "delete", "deleteNamespacedCatalogImage", KIND),
            ],
            vec!["namespace", "name"],
        ),
        (
            format!("{base}/namespaces/{{namespace}}/{PLURAL}/{{name}}/status"),
            vec![
                op("get", "get", "readNamespacedCatalogImageStatus", KIND),
                write(op(
                    "put",
                    "put",
                    "replaceNamespacedCatalogImageStatus",
                    KIND,
                )),
                patch(op(
                    "patch",
                    "patch",
                    "patchNamespacedCatalogImageStatus",
                    KIND,
                )),
            ],
            vec!["namespace", "name"],
        ),
    ]
}

fn schema_ref(ref_prefix: &str, kind: &str) -> Value {
    if kind == "Status" {
        json!({"$ref": format!("{ref_prefix}io.k8s.apimachinery.pkg.apis.meta.v1.Status")})
    } else {
        json!({"$ref": format!("{ref_prefix}{SCHEMA_PREFIX}{kind}")})
    }
}

fn query_parameters(o: &Operation) -> Vec<&'static str> {
    match (o.action, o.body || o.patch) {
        ("list" | "deletecollection", _) => vec![
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "resourceVersionMatch",
            "watch",
            "allowWatchBookmarks",
            "sendInitialEvents",
            "timeoutSeconds",
        ],
        (_, true) if o.patch => vec!["dryRun", "fieldManager", "fieldValidation", "force"],
        (_, true) => vec!["dryRun", "fieldManager", "fieldValidation"],
        ("delete", _) => vec!["dryRun", "gracePeriodSeconds", "propagationPolicy"],
        _ => vec!["resourceVersion"],
    }
}

fn parameter_type(name: &str) -> &'static str {
    match name {
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        "watch" | "allowWatchBookmarks" | "sendInitialEvents" | "force" => "boolean",
        _ => "string",
    }
}

/// The OpenAPI v3 document of our group-version.
pub fn v3() -> Value {
    let prefix = "#/components/schemas/";
    let mut schemas = schemas(prefix);
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Status".into(), json!({
        "description": "Status is a return value for calls that don't return other objects.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "code": {"type": "integer", "format": "int32"}, "message": {"type": "string"},
            "reason": {"type": "string"}, "status": {"type": "string"},
            "details": {"type": "object"}, "metadata": {"$ref": format!("{prefix}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")},
        },
    }));
    let mut paths = Map::new();
    for (path, operations, path_params) in self::paths() {
        let mut item = Map::new();
        item.insert(
            "parameters".into(),
            path_params.iter().map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})).collect(),
        );
        for o in &operations {
            let response =
                json!({"content": {"application/json": {"schema": schema_ref(prefix, o.kind)}}});
            let mut operation = json!({
                "operationId": o.id,
                "tags": ["catalogAutomotiveIo_v1alpha1"],
                "parameters": query_parameters(o).iter().map(|p| json!({"name": p, "in": "query", "schema": {"type": parameter_type(p)}})).collect::<Vec<_>>(),
                "responses": {"200": response.clone(), "401": {"description": "Unauthorized"}},
                "x-kubernetes-action": o.action,
                "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": KIND},
            });
            if o.body {
                operation["requestBody"] = json!({"required": true, "content": {"*/*": {"schema": schema_ref(prefix, KIND)}}});
                operation["responses"]["201"] = response;
            }
            if o.patch {
                let content: Map<String, Value> = PATCH_CONTENT_TYPES
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
                    .collect();
                operation["requestBody"] = json!({"required": true, "content": content});
            }
            item.insert(o.method.into(), operation);
        }
        paths.insert(path, Value::Object(item));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "catalog-apiserver", "version": VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The OpenAPI v2 document, derived from v3: same schemas under `definitions`.
pub fn v2() -> Value {
    let v3 = v3();
    let mut text = v3["components"]["schemas"].to_string();
    text = text.replace("#/components/schemas/", "#/definitions/");
    let definitions: Value = serde_json::from_str(&text).expect("re-parsing our own JSON");
    let mut paths = Map::new();
    for (path, operations, path_params) in self::paths() {
        let mut item = Map::new();
        item.insert(
            "parameters".into(),
            path_params.iter().map(|p| json!({"name": p, "in": "path", "required": true, "type": "string", "uniqueItems": true})).collect(),
        );
        for o in &operations {
            let schema = schema_ref("#/definitions/", o.kind);
            let mut parameters: Vec<Value> = query_parameters(o)
                .iter()
                .map(|p| json!({"name": p, "in": "query", "type": parameter_type(p)}))
                .collect();
            if o.body || o.patch {
                parameters.push(json!({"name": "body", "in": "body", "required": true, "schema": if o.patch { json!({"type": "object"}) } else { schema.clone() }}));
            }
            let mut operation = json!({
                "operationId": o.id,
                "parameters": parameters,
                "produces": ["application/json", "application/yaml"],
                "schemes": ["https"],
                "responses": {"200": {"description": "OK", "schema": schema}},
                "x-kubernetes-action": o.action,
                "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": KIND},
            });
            if o.patch {
                operation["consumes"] = json!(PATCH_CONTENT_TYPES);
            }
            item.insert(o.method.into(), operation);
        }
        paths.insert(path, Value::Object(item));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "catalog-apiserver", "version": VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}
