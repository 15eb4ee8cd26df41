//! The structural shape of a CatalogImage, compiled once from its schemars schema: which
//! objects are structs (fixed fields) and which are maps, and how each list merges
//! (`x-kubernetes-list-type`). Server-side apply follows it the way structured-merge-diff
//! follows a CRD's structural schema: field ownership, merging, and pruning of unknown fields.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::types::CatalogImage;

#[derive(Debug)]
pub enum Shape {
    /// A string, number, boolean, or an object with no declared structure (kept whole).
    Scalar,
    Struct(BTreeMap<String, Shape>),
    Map(Box<Shape>),
    List(ListType, Box<Shape>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// Scalars, each owned on its own.
    Set,
    /// Objects identified by these fields, each merged and owned on its own.
    Map(Vec<String>),
}

impl Shape {
    /// The shape of a struct's field or a map's values.
    pub fn field(&self, name: &str) -> Option<&Shape> {
        match self {
            Shape::Struct(fields) => fields.get(name),
            Shape::Map(values) => Some(values),
            _ => None,
        }
    }
}

/// The shape of a CatalogImage.
pub fn image() -> &'static Shape {
    static SHAPE: LazyLock<Shape> = LazyLock::new(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let root = generator.subschema_for::<CatalogImage>().to_value();
        let definitions = generator.take_definitions(true);
        let mut shape = compile(&root, &definitions);
        kubernetes_list_types(&mut shape);
        shape
    });
    &SHAPE
}

fn compile(schema: &Value, definitions: &Map<String, Value>) -> Shape {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let name = target.rsplit('/').next().unwrap_or_default();
        return definitions
            .get(name)
            .map_or(Shape::Scalar, |s| compile(s, definitions));
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(options) = schema.get(combinator).and_then(Value::as_array) {
            // schemars writes an optional reference as anyOf [the type, null].
            let is_null = |o: &&Value| o.get("type") == Some(&"null".into());
            if let Some(option) = options.iter().find(|o| !is_null(o)) {
                return compile(option, definitions);
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    match schema.get("type").and_then(Value::as_str) {
        _ if properties.is_some_and(|p| !p.is_empty()) => Shape::Struct(
            properties
                .into_iter()
                .flatten()
                .map(|(name, s)| (name.clone(), compile(s, definitions)))
                .collect(),
        ),
        Some("object") => match schema.get("additionalProperties") {
            Some(values @ Value::Object(_)) => Shape::Map(Box::new(compile(values, definitions))),
            _ => Shape::Scalar,
        },
        Some("array") => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            Shape::List(list_type(schema), Box::new(compile(items, definitions)))
        }
        _ => Shape::Scalar,
    }
}

fn list_type(schema: &Value) -> ListType {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        ),
        _ => ListType::Atomic,
    }
}

/// ObjectMeta's list types, as Kubernetes' own OpenAPI declares them (k8s-openapi's schemas
/// leave them out).
fn kubernetes_list_types(image: &mut Shape) {
    let Shape::Struct(fields) = image else { return };
    let Some(Shape::Struct(metadata)) = fields.get_mut("metadata") else {
        return;
    };
    for (field, list_type) in [
        ("finalizers", ListType::Set),
        ("ownerReferences", ListType::Map(vec!["uid".into()])),
    ] {
        if let Some(Shape::List(kind, _)) = metadata.get_mut(field) {
            *kind = list_type;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_shape_knows_its_lists_and_maps() {
        let image = image();
        let spec = image.field("spec").unwrap();
        assert!(matches!(
            spec.field("tags"),
            Some(Shape::List(ListType::Set, _))
        ));
        let targets = spec.field("metadata").unwrap().field("targets").unwrap();
        assert!(matches!(targets, Shape::List(ListType::Map(keys), _) if keys == &["name"]));
        let metadata = image.field("metadata").unwrap();
        assert!(matches!(metadata.field("labels"), Some(Shape::Map(_))));
        assert!(matches!(
            metadata.field("finalizers"),
            Some(Shape::List(ListType::Set, _))
        ));
        let status = image.field("status").unwrap();
        assert!(matches!(
            status.field("conditions"),
            Some(Shape::List(ListType::Map(keys), _)) if keys == &["type"]
        ));
        assert!(matches!(
            status
                .field("registryMetadata")
                .unwrap()
                .field("annotations"),
            Some(Shape::Map(_))
        ));
    }
}
