//! Sets of field paths, as structured-merge-diff (sigs.k8s.io/structured-merge-diff,
//! `fieldpath/` and `typed/`) defines them: which fields a value sets, what changed between
//! two values, and the `fieldsV1` form kept in `metadata.managedFields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::api::shape::{ListType, Shape};

/// Why a managedFields entry does not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FieldsError(String);

impl From<String> for FieldsError {
    fn from(message: String) -> Self {
        FieldsError(message)
    }
}

/// One step of a path: a struct field or map key, a list item by its key fields, or a set item.
/// The order of the variants is the order fieldsV1 lists them in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Field(String),
    /// The key fields of a list item, as a JSON object with sorted keys.
    Key(String),
    /// A set item, as JSON.
    Value(String),
}

pub type Path = Vec<Step>;

/// A set of paths; a path to an object or list item stands for the item itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

impl FieldSet {
    /// Every field `value` sets: leaves, map entries and list items (structured-merge-diff's
    /// ToFieldSet).
    pub fn of(value: &Value, shape: &Shape) -> FieldSet {
        let mut set = FieldSet::default();
        collect(value, shape, &mut Vec::new(), &mut set.0);
        set
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Adds every path of `other`.
    pub fn insert_all(&mut self, other: FieldSet) {
        self.0.extend(other.0);
    }

    /// Removes every path of `other`.
    pub fn remove_all(&mut self, other: &FieldSet) {
        self.0.retain(|path| !other.0.contains(path));
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The paths of this set that are not ancestors of a path in `other`: an object some of
    /// whose fields are still owned is itself still there.
    pub fn without_ancestors_of(&self, other: &FieldSet) -> FieldSet {
        let is_ancestor = |path: &Path| {
            other
                .0
                .iter()
                .any(|o| o.len() > path.len() && o.starts_with(path))
        };
        FieldSet(self.0.iter().filter(|p| !is_ancestor(p)).cloned().collect())
    }

    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.0.retain(|p| keep(p));
    }

    /// The `fieldsV1` tree: `f:<field>`, `k:<keys>`, `v:<value>`, with `.` marking an object or
    /// item that is itself in the set. Built in one walk: every member is marked as it is met,
    /// and the marks of members that got no children are dropped after.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        let mut key = String::new();
        for path in &self.0 {
            let mut node = &mut root;
            for step in path {
                write_step_key(step, &mut key);
                if !node.contains_key(&key) {
                    node.insert(key.clone(), Value::Object(Map::new()));
                }
                node = node
                    .get_mut(&key)
                    .and_then(Value::as_object_mut)
                    .expect("fieldsV1 nodes are objects");
            }
            node.insert(".".into(), Value::Object(Map::new()));
        }
        for child in root.values_mut() {
            drop_lone_marks(child);
        }
        Value::Object(root)
    }

    pub fn from_fields_v1(tree: &Value) -> Result<FieldSet, FieldsError> {
        let mut set = FieldSet::default();
        parse_node(tree, &mut Vec::new(), &mut set.0)?;
        Ok(set)
    }
}

/// Writes the fieldsV1 key of `step` into `key`.
fn write_step_key(step: &Step, key: &mut String) {
    let (prefix, text) = match step {
        Step::Field(name) => ("f:", name),
        Step::Key(keys) => ("k:", keys),
        Step::Value(value) => ("v:", value),
    };
    key.clear();
    key.push_str(prefix);
    key.push_str(text);
}

/// A member without children is a leaf, `{}`, not `{".": {}}`.
fn drop_lone_marks(node: &mut Value) {
    let Value::Object(children) = node else {
        return;
    };
    if children.len() == 1 && children.contains_key(".") {
        children.clear();
    }
    for child in children.values_mut() {
        drop_lone_marks(child);
    }
}

fn parse_step(key: &str) -> Result<Step, String> {
    let canonical = |json: &str| -> Result<String, String> {
        let value: Value = serde_json::from_str(json).map_err(|e| format!("{key}: {e}"))?;
        Ok(value.to_string())
    };
    match key.split_once(':') {
        Some(("f", name)) => Ok(Step::Field(name.to_string())),
        Some(("k", keys)) => Ok(Step::Key(canonical(keys)?)),
        Some(("v", value)) => Ok(Step::Value(canonical(value)?)),
        _ => Err(format!("unsupported fieldsV1 key {key:?}")),
    }
}

fn parse_node(node: &Value, path: &mut Path, set: &mut BTreeSet<Path>) -> Result<(), String> {
    let Value::Object(children) = node else {
        return Err("fieldsV1 nodes must be objects".into());
    };
    if (children.is_empty() || children.contains_key(".")) && !path.is_empty() {
        set.insert(path.clone());
    }
    for (key, child) in children {
        if key == "." {
            continue;
        }
        path.push(parse_step(key)?);
        parse_node(child, path, set)?;
        path.pop();
    }
    Ok(())
}

/// The step that names a list item: its key fields, or the item itself in a set.
pub fn item_step(list_type: &ListType, item: &Value) -> Option<Step> {
    match list_type {
        ListType::Atomic => None,
        ListType::Set => Some(Step::Value(item.to_string())),
        ListType::Map(keys) => {
            let fields: Map<String, Value> = keys
                .iter()
                .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            Some(Step::Key(Value::Object(fields).to_string()))
        }
    }
}

fn collect(value: &Value, shape: &Shape, path: &mut Path, out: &mut BTreeSet<Path>) {
    match (value, shape) {
        (Value::Object(fields), Shape::Struct(_) | Shape::Map(_)) => {
            for (name, child) in fields {
                let Some(child_shape) = shape.field(name) else {
                    continue;
                };
                path.push(Step::Field(name.clone()));
                collect(child, child_shape, path, out);
                if matches!(shape, Shape::Map(_)) {
                    out.insert(path.clone());
                }
                path.pop();
            }
        }
        (Value::Array(items), Shape::List(list_type, item_shape))
            if *list_type != ListType::Atomic =>
        {
            for item in items {
                let Some(step) = item_step(list_type, item) else {
                    continue;
                };
                path.push(step);
                collect(item, item_shape, path, out);
                out.insert(path.clone());
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// What changed from `old` to `new`: fields added or modified, and fields removed
/// (structured-merge-diff's Compare). An object or item that appears or disappears is itself
/// in the set, besides its fields.
#[derive(Debug, Default)]
pub struct Changes {
    pub changed: FieldSet,
    pub removed: FieldSet,
}

impl Changes {
    /// A change at `path`: set (or changed) when something is there now, else removed.
    fn record(&mut self, is: bool, path: &Path) {
        let set = if is {
            &mut self.changed
        } else {
            &mut self.removed
        };
        set.0.insert(path.clone());
    }
}

pub fn compare(old: &Value, new: &Value, shape: &Shape) -> Changes {
    let mut changes = Changes::default();
    compare_at(Some(old), Some(new), shape, &mut Vec::new(), &mut changes);
    changes
}

fn is_empty_container(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    shape: &Shape,
    path: &mut Path,
    changes: &mut Changes,
) {
    let granular = match (shape, old.or(new)) {
        (Shape::Struct(_) | Shape::Map(_), Some(Value::Object(_))) => true,
        (Shape::List(list_type, _), Some(Value::Array(_))) => *list_type != ListType::Atomic,
        _ => false,
    };
    let same_kind = match (old, new) {
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => true,
    };
    // Both empty: compared as a leaf, which keeps `{}` apart from absent.
    let leaf = !granular || !same_kind || (is_empty_container(old) && is_empty_container(new));
    if leaf {
        if old != new {
            changes.record(new.is_some(), path);
        }
        return;
    }
    match shape {
        Shape::Struct(_) | Shape::Map(_) => compare_fields(old, new, shape, path, changes),
        Shape::List(list_type, item_shape) => {
            compare_items(old, new, (list_type, item_shape), path, changes)
        }
        Shape::Scalar => {}
    }
    // An object or item that appears or disappears is itself a change.
    if !path.is_empty() && old.is_some() != new.is_some() {
        changes.record(new.is_some(), path);
    }
}

fn compare_fields(
    old: Option<&Value>,
    new: Option<&Value>,
    shape: &Shape,
    path: &mut Path,
    changes: &mut Changes,
) {
    let empty = Map::new();
    let old_fields = old.and_then(Value::as_object).unwrap_or(&empty);
    let new_fields = new.and_then(Value::as_object).unwrap_or(&empty);
    let names: BTreeSet<&String> = old_fields.keys().chain(new_fields.keys()).collect();
    for name in names {
        let Some(child_shape) = shape.field(name) else {
            continue;
        };
        path.push(Step::Field(name.clone()));
        let (a, b) = (old_fields.get(name), new_fields.get(name));
        compare_at(a, b, child_shape, path, changes);
        path.pop();
    }
}

fn compare_items(
    old: Option<&Value>,
    new: Option<&Value>,
    (list_type, item_shape): (&ListType, &Shape),
    path: &mut Path,
    changes: &mut Changes,
) {
    let (old_items, new_items) = (list_items(list_type, old), list_items(list_type, new));
    let steps: BTreeSet<&Step> = old_items
        .iter()
        .chain(new_items.iter())
        .map(|(s, _)| s)
        .collect();
    for step in steps {
        let (a, b) = (find_item(&old_items, step), find_item(&new_items, step));
        path.push(step.clone());
        compare_at(a, b, item_shape, path, changes);
        path.pop();
    }
}

/// The items of a list with the steps that name them.
fn list_items<'v>(list_type: &ListType, list: Option<&'v Value>) -> Vec<(Step, &'v Value)> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item_step(list_type, item).map(|step| (step, item)))
        .collect()
}

fn find_item<'v>(items: &[(Step, &'v Value)], step: &Step) -> Option<&'v Value> {
    items.iter().find(|(s, _)| s == step).map(|(_, item)| *item)
}

/// A path as structured-merge-diff prints it in conflicts: `.spec.tags[="10"]`,
/// `.spec.metadata.targets[name="qemu"].notes`.
pub fn path_string(path: &Path) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Key(keys) => {
                let fields: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
                let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", pairs.join(",")));
            }
            Step::Value(value) => out.push_str(&format!("[={value}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::shape;

    fn field(name: &str) -> Step {
        Step::Field(name.into())
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let object = json!({
            "metadata": {"labels": {"app": "x"}, "finalizers": ["a"]},
            "spec": {"registryUrl": "quay.io/a/b:1", "tags": ["10", "latest"],
                     "metadata": {"targets": [{"name": "qemu", "verified": true}]}},
        });
        let set = FieldSet::of(&object, shape::image());
        let fields = set.to_fields_v1();
        assert_eq!(
            fields,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {
                    "f:registryUrl": {},
                    "f:tags": {"v:\"10\"": {}, "v:\"latest\"": {}},
                    "f:metadata": {"f:targets": {"k:{\"name\":\"qemu\"}": {".": {}, "f:name": {}, "f:verified": {}}}},
                },
            })
        );
        assert_eq!(FieldSet::from_fields_v1(&fields).unwrap(), set);
        let target = vec![
            field("spec"),
            field("metadata"),
            field("targets"),
            Step::Key(r#"{"name":"qemu"}"#.into()),
            field("verified"),
        ];
        assert_eq!(
            path_string(&target),
            r#".spec.metadata.targets[name="qemu"].verified"#
        );
    }

    #[test]
    fn compare_finds_added_modified_and_removed_fields() {
        let old = json!({"spec": {"registryUrl": "a", "digest": "d", "tags": ["1"]}});
        let new = json!({"spec": {"registryUrl": "b", "tags": ["1", "2"], "metadata": {"distro": "cs9"}}});
        let changes = compare(&old, &new, shape::image());
        let changed: Vec<String> = changes.changed.0.iter().map(path_string).collect();
        assert_eq!(
            changed,
            [
                ".spec.metadata",
                ".spec.metadata.distro",
                ".spec.registryUrl",
                r#".spec.tags[="2"]"#
            ]
        );
        let removed: Vec<String> = changes.removed.0.iter().map(path_string).collect();
        assert_eq!(removed, [".spec.digest"]);
    }
}
