//! `metadata.managedFields`: who owns which fields. Every write records its writer's fields as
//! an Update; server-side apply merges an apply configuration, refuses to take fields another
//! manager set to a different value unless forced, and removes fields its manager stopped
//! applying. Follows k8s.io/apiserver's `pkg/endpoints/handlers/fieldmanager` and
//! structured-merge-diff's `merge/update.go`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use serde_json::Value;

use super::fieldset::{FieldSet, FieldsError, Path, Step, compare, item_step, path_string};
use super::strategy::Subresource;
use crate::api::shape::{self, ListType, Shape};
use crate::api::types::API_VERSION;

/// Metadata fields the server owns; they are never anybody's (fieldmanager's stripmeta.go).
const SERVER_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// Update entries kept at most (fieldmanager's DefaultMaxUpdateManagers); older ones are
/// folded into one entry of this name.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who is writing: the field manager, and through which endpoint.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: Subresource,
}

impl Writer<'_> {
    fn subresource(&self) -> &'static str {
        match self.subresource {
            Subresource::Main => "",
            Subresource::Status => "status",
        }
    }

    fn through_status(&self) -> bool {
        self.subresource == Subresource::Status
    }

    fn is(&self, entry: &Manager, operation: Operation) -> bool {
        entry.name == self.manager
            && entry.operation == operation
            && entry.subresource == self.subresource()
    }

    /// Whether a writer through this endpoint can own `path`: the main resource never owns
    /// status, `/status` owns nothing else, and nobody owns what the server sets.
    fn owns(&self, path: &Path) -> bool {
        match path.as_slice() {
            [Step::Field(top), rest @ ..] => match top.as_str() {
                "status" => self.through_status(),
                "metadata" => {
                    !self.through_status()
                        && matches!(rest.first(), Some(Step::Field(f)) if !SERVER_METADATA.contains(&f.as_str()))
                }
                "apiVersion" | "kind" => false,
                _ => !self.through_status(),
            },
            _ => false,
        }
    }

    fn tracked(&self, mut set: FieldSet) -> FieldSet {
        set.retain(|p| self.owns(p));
        set
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Manager {
    name: String,
    operation: Operation,
    subresource: String,
    api_version: String,
    time: Option<Time>,
    fields: FieldSet,
}

impl Manager {
    /// How conflicts name a manager (fieldmanager's conflict.go).
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {}", self.api_version));
            if let Some(time) = &self.time {
                text.push_str(&format!(" at {}", time.0.strftime("%Y-%m-%dT%H:%M:%SZ")));
            }
        }
        text
    }
}

/// The managers of an object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Managers(Vec<Manager>);

impl Managers {
    pub fn decode(entries: &[ManagedFieldsEntry]) -> Result<Managers, FieldsError> {
        entries
            .iter()
            .map(|entry| {
                let operation = match entry.operation.as_deref() {
                    Some("Apply") => Operation::Apply,
                    Some("Update") => Operation::Update,
                    other => return Err(format!("unsupported operation {other:?}").into()),
                };
                let fields = match &entry.fields_v1 {
                    Some(FieldsV1(tree)) => FieldSet::from_fields_v1(tree)?,
                    None => FieldSet::default(),
                };
                Ok(Manager {
                    name: entry.manager.clone().unwrap_or_default(),
                    operation,
                    subresource: entry.subresource.clone().unwrap_or_default(),
                    api_version: entry.api_version.clone().unwrap_or_default(),
                    time: entry.time.clone(),
                    fields,
                })
            })
            .collect::<Result<_, _>>()
            .map(Managers)
    }

    /// The entries to store, in kube-apiserver's order: Apply before Update, then by time
    /// and name. None when nobody owns anything.
    pub fn encode(mut self) -> Option<Vec<ManagedFieldsEntry>> {
        self.0.retain(|m| !m.fields.is_empty());
        self.cap_updates();
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_by(|a, b| {
            (a.operation, a.time.as_ref().map(|t| t.0), &a.name).cmp(&(
                b.operation,
                b.time.as_ref().map(|t| t.0),
                &b.name,
            ))
        });
        Some(
            self.0
                .into_iter()
                .map(|m| ManagedFieldsEntry {
                    api_version: Some(m.api_version),
                    fields_type: Some("FieldsV1".into()),
                    fields_v1: Some(FieldsV1(m.fields.to_fields_v1())),
                    manager: Some(m.name),
                    operation: Some(m.operation.as_str().into()),
                    subresource: (!m.subresource.is_empty()).then_some(m.subresource),
                    time: m.time,
                })
                .collect(),
        )
    }

    /// At most [`MAX_UPDATE_MANAGERS`] Update entries: the oldest are folded, per API version,
    /// into one `ancient-changes` entry, as fieldmanager's capmanagers.go does (the oldest
    /// becomes the bucket when the second oldest is folded into it; the bucket takes the time
    /// of the last entry folded in).
    fn cap_updates(&mut self) {
        let updates = |m: &Manager| m.operation == Operation::Update;
        let mut count = self.0.iter().filter(|m| updates(m)).count();
        if count <= MAX_UPDATE_MANAGERS {
            return;
        }
        let mut oldest_first: Vec<usize> =
            (0..self.0.len()).filter(|&i| updates(&self.0[i])).collect();
        oldest_first.sort_by_key(|&i| {
            let m = &self.0[i];
            (
                m.time.as_ref().map_or(0, |t| t.0.as_second()),
                m.name.clone(),
            )
        });
        let mut first_of_version: Vec<(String, usize)> = Vec::new();
        let mut folded = vec![false; self.0.len()];
        for i in oldest_first {
            if count <= MAX_UPDATE_MANAGERS {
                break;
            }
            let version = self.0[i].api_version.clone();
            let Some(&(_, first)) = first_of_version.iter().find(|(v, _)| *v == version) else {
                first_of_version.push((version, i));
                continue;
            };
            let bucket = self
                .0
                .iter()
                .position(|m| {
                    m.name == ANCIENT_CHANGES
                        && updates(m)
                        && m.subresource.is_empty()
                        && m.api_version == version
                })
                .unwrap_or_else(|| {
                    self.0[first].name = ANCIENT_CHANGES.into();
                    self.0[first].subresource = String::new();
                    first
                });
            if bucket == i {
                continue;
            }
            let (fields, time) = (self.0[i].fields.clone(), self.0[i].time.clone());
            self.0[bucket].fields.insert_all(fields);
            self.0[bucket].time = time;
            folded[i] = true;
            count -= 1;
        }
        let mut index = 0;
        self.0.retain(|_| {
            index += 1;
            !folded[index - 1]
        });
    }

    /// The entry of `writer` for `operation`, created empty if it has none.
    fn entry(&mut self, writer: &Writer, operation: Operation) -> &mut Manager {
        let index = match self.0.iter().position(|m| writer.is(m, operation)) {
            Some(index) => index,
            None => {
                self.0.push(Manager {
                    name: writer.manager.to_string(),
                    operation,
                    subresource: writer.subresource().into(),
                    api_version: API_VERSION.into(),
                    time: None,
                    fields: FieldSet::default(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[index]
    }
}

/// The managers a write starts from, as fieldmanager decides: those the request sent, when it
/// sent some that decode; otherwise the stored ones. A request that sends exactly one empty
/// entry clears them all, and its own write is then not recorded either (None).
pub fn starting_managers(
    sent: Option<&[ManagedFieldsEntry]>,
    stored: Option<&[ManagedFieldsEntry]>,
) -> Option<Managers> {
    match sent {
        Some([only]) if *only == ManagedFieldsEntry::default() => None,
        Some(sent) if !sent.is_empty() => Some(
            Managers::decode(sent)
                .or_else(|_| Managers::decode(stored.unwrap_or_default()))
                .unwrap_or_default(),
        ),
        _ => Some(Managers::decode(stored.unwrap_or_default()).unwrap_or_default()),
    }
}

/// Records a non-apply write from `old` to `new` (objects without managedFields): the writer
/// takes every field it added or changed, from whoever had it.
pub fn record_update(
    mut managers: Managers,
    old: &Value,
    new: &Value,
    writer: &Writer,
    now: &Time,
) -> Managers {
    let changes = compare(old, new, shape::image());
    let changed = writer.tracked(changes.changed);
    let removed = writer.tracked(changes.removed);
    if changed.is_empty() && removed.is_empty() {
        return managers;
    }
    for manager in managers.0.iter_mut() {
        if !writer.is(manager, Operation::Update) {
            manager.fields.remove_all(&changed);
        }
    }
    let entry = managers.entry(writer, Operation::Update);
    entry.fields.insert_all(changed);
    entry.fields.remove_all(&removed);
    entry.time = Some(now.clone());
    managers
}

/// A field another manager owns and an apply would change.
#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// Server-side apply of `config` onto `live` (both without managedFields): the merged object
/// and its managers, or the conflicts that stop it when not forced.
pub fn apply(
    mut managers: Managers,
    live: &Value,
    config: &Value,
    writer: &Writer,
    force: bool,
    now: &Time,
) -> Result<(Value, Managers), Vec<Conflict>> {
    let shape = shape::image();
    let applied = writer.tracked(FieldSet::of(config, shape));
    let mut merged = merge(live, config, shape);
    let changed = writer.tracked(compare(live, &merged, shape).changed);
    let mut conflicts = Vec::new();
    for manager in managers.0.iter_mut() {
        if writer.is(manager, Operation::Apply) {
            continue;
        }
        let taken = manager.fields.intersection(&changed);
        conflicts.extend(taken.0.iter().map(|path| Conflict {
            manager: manager.describe(),
            path: path_string(path),
        }));
        manager.fields.remove_all(&taken);
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let others = managers
        .0
        .iter()
        .filter(|m| !writer.is(m, Operation::Apply))
        .fold(FieldSet::default(), |all, m| all.union(&m.fields));
    let entry = managers.entry(writer, Operation::Apply);
    // Fields this manager applied before and no longer does, that nobody else owns, go; an
    // object still holding fields someone owns stays (a field set written by a client, such
    // as kubectl's client-side-apply migration, may name objects themselves with `.`).
    let kept = applied.union(&others);
    let dropped = entry.fields.difference(&kept).without_ancestors_of(&kept);
    // In order, so an item goes before its fields (which name it by its keys).
    for path in &dropped.0 {
        remove(&mut merged, path);
    }
    if entry.fields != applied || !changed.is_empty() || !dropped.is_empty() {
        entry.fields = applied;
        entry.time = Some(now.clone());
    }
    Ok((merged, managers))
}

/// `config` merged into `live`: objects field by field, sets and keyed lists item by item,
/// everything else replaced (structured-merge-diff's merge with the applied side winning).
fn merge(live: &Value, config: &Value, shape: &Shape) -> Value {
    match (live, config, shape) {
        (
            Value::Object(live_fields),
            Value::Object(config_fields),
            Shape::Struct(_) | Shape::Map(_),
        ) => {
            let mut merged = live_fields.clone();
            for (name, value) in config_fields {
                let value = match (live_fields.get(name), shape.field(name)) {
                    (Some(old), Some(child)) => merge(old, value, child),
                    _ => value.clone(),
                };
                merged.insert(name.clone(), value);
            }
            Value::Object(merged)
        }
        (
            Value::Array(live_items),
            Value::Array(config_items),
            Shape::List(list_type, item_shape),
        ) if *list_type != ListType::Atomic => {
            Value::Array(merge_items(live_items, config_items, list_type, item_shape))
        }
        _ => config.clone(),
    }
}

/// The items of a set or keyed list after an apply, ordered as structured-merge-diff orders
/// them (`typed/merge.go`, `visitListItems`): items both lists have come in the applied
/// order, each merged with its live self; live items the apply does not name keep their
/// place among them; new items come where the apply puts them.
fn merge_items(
    live: &[Value],
    config: &[Value],
    list_type: &ListType,
    shape: &Shape,
) -> Vec<Value> {
    let live_steps: Vec<Option<Step>> = live.iter().map(|i| item_step(list_type, i)).collect();
    let config_steps: Vec<Option<Step>> = config.iter().map(|i| item_step(list_type, i)).collect();
    let live_item =
        |step: &Option<Step>| live_steps.iter().position(|s| s == step).map(|i| &live[i]);
    let in_config = |step: &Option<Step>| config_steps.contains(step);
    // The items both have, in the applied order: the next one due is at the front.
    let mut shared = config_steps
        .iter()
        .filter(|s| live_steps.contains(s))
        .peekable();
    let mut placed: Vec<&Option<Step>> = Vec::new();
    let mut merged = Vec::with_capacity(live.len().max(config.len()));
    let (mut l, mut c) = (0, 0);
    while l < live.len() || c < config.len() {
        if l < live.len() && c < config.len() {
            if live_steps[l] == config_steps[c] {
                merged.push(merge(&live[l], &config[c], shape));
                placed.push(&config_steps[c]);
                shared.next();
                (l, c) = (l + 1, c + 1);
                continue;
            }
            if in_config(&live_steps[l])
                && shared.peek().is_some_and(|next| **next != live_steps[l])
            {
                l += 1; // a shared item that is not due yet: it comes in the applied order
                continue;
            }
        }
        if l < live.len() {
            if !in_config(&live_steps[l]) {
                merged.push(live[l].clone());
                l += 1;
                continue;
            }
            if placed.contains(&&live_steps[l]) {
                l += 1;
            }
        }
        if c < config.len() {
            let step = &config_steps[c];
            merged.push(match live_item(step) {
                Some(old) => merge(old, &config[c], shape),
                None => config[c].clone(),
            });
            placed.push(step);
            if shared.peek().is_some_and(|next| *next == step) {
                shared.next();
            }
            c += 1;
        }
    }
    merged
}

fn matches_step(value: &Value, step: &Step) -> bool {
    match step {
        Step::Field(_) => false,
        Step::Value(json) => serde_json::from_str::<Value>(json).is_ok_and(|v| v == *value),
        Step::Key(json) => serde_json::from_str::<serde_json::Map<String, Value>>(json)
            .is_ok_and(|keys| keys.iter().all(|(k, v)| value.get(k) == Some(v))),
    }
}

/// Removes the field, map entry or list item at `path`, if it is there.
fn remove(value: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for step in parents {
        let next = match (node, step) {
            (Value::Object(fields), Step::Field(name)) => fields.get_mut(name),
            (Value::Array(items), step) => items.iter_mut().find(|i| matches_step(i, step)),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return,
        }
    }
    match (node, last) {
        (Value::Object(fields), Step::Field(name)) => {
            fields.remove(name);
        }
        (Value::Array(items), step) => items.retain(|i| !matches_step(i, step)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: Subresource::Main,
        }
    }

    #[test]
    fn apply_conflicts_shares_and_removes_as_kube_apiserver_does() {
        let base = json!({"spec": {"registryUrl": "quay.io/a/b:1", "tags": ["10"], "metadata": {"targets": [{"name": "qemu", "verified": true}]}}});
        // A creates by apply.
        let (live, managers) = apply(
            Managers::default(),
            &json!({}),
            &base,
            &writer("a"),
            false,
            &now(),
        )
        .unwrap();
        assert_eq!(live, base);
        // B applies the same registryUrl (shared, no conflict) and another tag and target.
        let b = json!({"spec": {"registryUrl": "quay.io/a/b:1", "tags": ["latest"], "metadata": {"targets": [{"name": "rpi4"}]}}});
        let (live, managers) = apply(managers, &live, &b, &writer("b"), false, &now()).unwrap();
        assert_eq!(live["spec"]["tags"], json!(["10", "latest"]));
        assert_eq!(
            live["spec"]["metadata"]["targets"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // B changing registryUrl conflicts with A...
        let b2 = json!({"spec": {"registryUrl": "quay.io/a/b:2"}});
        let conflicts =
            apply(managers.clone(), &live, &b2, &writer("b"), false, &now()).unwrap_err();
        let paths: Vec<(&str, &str)> = conflicts
            .iter()
            .map(|c| (c.manager.as_str(), c.path.as_str()))
            .collect();
        assert_eq!(paths, [("\"a\"", ".spec.registryUrl")]);
        // ...forced, B takes it; and B's tag and target, no longer applied, are removed.
        let (live, managers) = apply(managers, &live, &b2, &writer("b"), true, &now()).unwrap();
        assert_eq!(
            live["spec"],
            json!({"registryUrl": "quay.io/a/b:2", "tags": ["10"], "metadata": {"targets": [{"name": "qemu", "verified": true}]}})
        );
        // A re-applying its old registryUrl now conflicts with B.
        let conflicts = apply(managers, &live, &base, &writer("a"), false, &now()).unwrap_err();
        assert_eq!(conflicts[0].path, ".spec.registryUrl");
        assert_eq!(conflicts[0].manager, "\"b\"");
    }

    #[test]
    fn applied_lists_take_the_applied_order() {
        let names =
            |list: &[&str]| -> Vec<Value> { list.iter().map(|n| json!({"name": n})).collect() };
        let shape = Shape::Struct(Default::default());
        let cases: [(&[&str], &[&str], &[&str]); 5] = [
            // Reordered by the apply.
            (&["a", "b", "c"], &["c", "b", "a"], &["c", "b", "a"]),
            // Live-only items keep their place; new ones come where applied.
            (&["a", "x", "b"], &["b", "a"], &["x", "b", "a"]),
            (&["a", "b"], &["a", "n", "b"], &["a", "n", "b"]),
            (&["x", "a"], &["n"], &["x", "a", "n"]),
            (&[], &["a", "b"], &["a", "b"]),
        ];
        for (live, config, expected) in cases {
            let merged = merge_items(
                &names(live),
                &names(config),
                &ListType::Map(vec!["name".into()]),
                &shape,
            );
            assert_eq!(merged, names(expected), "{live:?} + {config:?}");
        }
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let old = json!({"spec": {"registryUrl": "a", "tags": ["1"]}});
        let (_, managers) = apply(
            Managers::default(),
            &json!({}),
            &old,
            &writer("applier"),
            false,
            &now(),
        )
        .unwrap();
        let new = json!({"spec": {"registryUrl": "b", "tags": ["1"]}});
        let managers = record_update(managers, &old, &new, &writer("kubectl-edit"), &now());
        let entries = managers.encode().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].manager.as_deref(), Some("applier"));
        assert_eq!(
            entries[0].fields_v1.as_ref().unwrap().0,
            json!({"f:spec": {"f:tags": {"v:\"1\"": {}}}})
        );
        assert_eq!(entries[1].operation.as_deref(), Some("Update"));
        assert_eq!(
            entries[1].fields_v1.as_ref().unwrap().0,
            json!({"f:spec": {"f:registryUrl": {}}})
        );
        let conflicts = apply(
            Managers::decode(&entries).unwrap(),
            &new,
            &old,
            &writer("applier"),
            false,
            &now(),
        )
        .unwrap_err();
        assert_eq!(
            conflicts[0].manager,
            "\"kubectl-edit\" using catalog.automotive.io/v1alpha1 at 2027-01-15T08:00:00Z"
        );
    }
}
