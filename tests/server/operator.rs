//! Moving from the automotive-dev-operator: our schema has every field of its CatalogImage CRD
//! (vendored in tests/data), objects as its generators write them are accepted, and import
//! carries every entry over with nothing lost, naming what it cannot carry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::common::*;
use super::kube_apiserver::KubeApiserver;

const OLD_API_VERSION: &str = "automotive.sdv.cloud.redhat.com/v1alpha1";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn upstream_crd() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/automotive-dev-operator-catalogimages-crd.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Fields whose CRD default or enum the server applies itself rather than publishing it in the
/// schema: defaults set in `api/validate.rs`, and condition statuses checked there (the schema
/// is apimachinery's shared Condition, which has no enum).
const SERVER_SIDE_RULES: [&str; 3] = [
    "spec.metadata.os",
    "spec.verificationInterval",
    "status.conditions[].status",
];

/// Follows `$ref` and `allOf: [$ref]` to the schema they name.
fn resolve<'a>(schema: &'a Value, components: &'a Value) -> &'a Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(&components[name], components)
        }
        None => schema,
    }
}

/// What of `upstream`'s schema (at `path`) ours lacks or types differently.
fn compare(path: &str, upstream: &Value, ours: &Value, components: &Value, gaps: &mut Vec<String>) {
    let ours = resolve(ours, components);
    if ours.is_null() {
        gaps.push(format!("{path}: missing"));
        return;
    }
    let our_type = ours["type"].as_str().unwrap_or("object");
    if upstream["type"].as_str() != Some(our_type) {
        gaps.push(format!("{path}: type {} here {our_type}", upstream["type"]));
    }
    let enforced_by_server = SERVER_SIDE_RULES.contains(&path);
    if let Some(values) = upstream["enum"].as_array()
        && Some(values) != ours["enum"].as_array()
        && !enforced_by_server
    {
        gaps.push(format!("{path}: enum {values:?} here {}", ours["enum"]));
    }
    if let Some(default) = upstream.get("default")
        && ours.get("default") != Some(default)
        && !enforced_by_server
    {
        gaps.push(format!(
            "{path}: default {default} here {}",
            ours["default"]
        ));
    }
    for (field, schema) in upstream["properties"].as_object().into_iter().flatten() {
        let here = &ours["properties"][field];
        compare(&format!("{path}.{field}"), schema, here, components, gaps);
    }
    if upstream.get("items").is_some() {
        compare(
            &format!("{path}[]"),
            &upstream["items"],
            &ours["items"],
            components,
            gaps,
        );
    }
}

#[test]
fn our_schema_has_every_field_of_the_operators_crd() {
    let server = Server::start();
    let served: Value = serde_json::from_str(
        &server
            .kubectl(&[
                "get",
                "--raw",
                "/openapi/v3/apis/catalog.automotive.io/v1alpha1",
            ])
            .success(),
    )
    .unwrap();
    let components = &served["components"]["schemas"];
    let ours = &components["io.automotive.catalog.v1alpha1.CatalogImage"];
    let crd = upstream_crd();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let upstream = &version["schema"]["openAPIV3Schema"];
    let mut gaps = Vec::new();
    for field in ["spec", "status"] {
        let (upstream, ours) = (&upstream["properties"][field], &ours["properties"][field]);
        compare(field, upstream, ours, components, &mut gaps);
    }
    assert_eq!(
        gaps,
        Vec::<String>::new(),
        "fields of the operator's CRD we lack"
    );
    let explained = server
        .kubectl(&["explain", "catalogimages.status.artifactRefs"])
        .success();
    assert!(
        explained.contains("url\t<string> -required-"),
        "{explained}"
    );
    for path in [
        "spec.builderImage",
        "status.registryMetadata.builderImageResolved",
    ] {
        let explained = server.kubectl(&["explain", &format!("catalogimages.{path}")]);
        assert!(explained.success().contains("FIELD:"));
    }
    // The comparison can fail: a field the CRD does not have is found missing.
    let mut extended = upstream["properties"]["spec"].clone();
    extended["properties"]["retention"] = json!({"type": "string"});
    let mut found = Vec::new();
    compare(
        "spec",
        &extended,
        &ours["properties"]["spec"],
        components,
        &mut found,
    );
    assert_eq!(found, ["spec.retention: missing"]);
}

#[test]
fn empty_optional_strings_mean_unset() {
    let server = Server::start();
    let manifest = json!({"apiVersion": "catalog.automotive.io/v1alpha1", "kind": "CatalogImage",
        "metadata": {"name": "amd64", "namespace": "default"},
        "spec": {"registryUrl": "quay.io/automotive/autosd:10", "builderImage": "",
            "authSecretRef": {"name": "regcred", "namespace": ""},
            "metadata": {"architecture": "amd64", "variant": "", "os": "", "distro": "", "distroVersion": "",
                "exportFormat": "", "targets": [{"name": "qemu", "notes": ""}]}}});
    server
        .kubectl_with_stdin(&["create", "-f", "-"], Some(&manifest.to_string()))
        .success();
    let stored: Value = serde_json::from_str(
        &server
            .kubectl(&["get", "cimg", "amd64", "-o", "json"])
            .success(),
    )
    .unwrap();
    assert_eq!(
        stored["spec"]["metadata"],
        json!({"architecture": "amd64", "os": "linux", "targets": [{"name": "qemu", "verified": false}]})
    );
    assert_eq!(stored["spec"]["authSecretRef"], json!({"name": "regcred"}));
    assert!(stored["spec"].get("builderImage").is_none());
    // An empty value of a field indexed only where set is answered by scanning.
    let unset = server
        .kubectl(&[
            "get",
            "cimg",
            "--field-selector",
            "spec.builderImage=",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(unset.trim(), "catalogimage.catalog.automotive.io/amd64");
}

/// An entry as the operator's publisher leaves it (its CRD's current shape).
fn old_entry(namespace: &str, name: &str, tag: &str) -> Value {
    let spec = json!({"registryUrl": format!("quay.io/automotive/autosd:{tag}"), "tags": [tag],
        "builderImage": format!("quay.io/centos-sig-automotive/automotive-image-builder:1.{}", tag.len()),
        "verificationInterval": "30m",
        "metadata": {"architecture": "x86_64", "variant": "", "os": "linux", "distro": "autosd10-sig",
            "distroVersion": "10", "bootc": true, "buildMode": "bootc", "exportFormat": "qcow2",
            "targets": [{"name": "qemu", "verified": true, "notes": "boots"}, {"name": "rpi4", "verified": false}]}});
    let applied = json!({"apiVersion": OLD_API_VERSION, "kind": "CatalogImage",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec});
    json!({"apiVersion": OLD_API_VERSION, "kind": "CatalogImage",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("old-{name}"), "resourceVersion": "7",
            "labels": {"team": "platform"},
            "annotations": {"automotive.sdv.cloud.redhat.com/source": "aib", LAST_APPLIED: applied.to_string()}},
        "spec": spec,
        "status": {"phase": "Available", "observedGeneration": 1, "verificationFailures": 0,
            "publishedAt": "2026-10-01T12:00:00Z", "sourceImageBuild": format!("build-{name}"), "accessCount": 42,
            "artifactRefs": [{"type": "qcow2", "url": format!("https://artifacts.example.com/{name}.qcow2"),
                "digest": format!("sha256:{}", "ab".repeat(32)), "format": "qcow2", "sizeBytes": 2147483648_i64}],
            "registryMetadata": {"resolvedDigest": format!("sha256:{}", "cd".repeat(32)), "builderImageResolved": true}}})
}

/// The old CRD's entries: enough for two list pages.
fn old_catalog() -> Vec<Value> {
    (0..700)
        .map(|i| {
            old_entry(
                if i % 2 == 0 { "team-a" } else { "team-b" },
                &format!("image-{i:04}"),
                &format!("10.{i}"),
            )
        })
        .collect()
}

/// Every leaf of `value` that sets something (not null, not ""), by path.
fn leaves(path: String, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| leaves(format!("{path}.{k}"), v, out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(format!("{path}[{i}]"), v, out)),
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        leaf => {
            out.insert(path, leaf.clone());
        }
    }
}

/// The leaves of `old` that `new` does not hold the same.
fn lost(old: &Value, new: &Value) -> Vec<String> {
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    leaves(String::new(), old, &mut before);
    leaves(String::new(), new, &mut after);
    before
        .into_iter()
        .filter(|(path, value)| after.get(path) != Some(value))
        .map(|(path, _)| path)
        .collect()
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: Vec<String>,
}

fn import(server: &Server, source: &Path, apply: bool) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_catalog-apiserver"));
    command.args([
        "import",
        "--from-kubeconfig",
        source.to_str().unwrap(),
        "--kubeconfig",
        server.kubeconfig().to_str().unwrap(),
    ]);
    if apply {
        command.arg("--apply");
    }
    command.env("RUST_LOG", "warn");
    let output = command.output().unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr)
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

fn old_cluster(catalog: Vec<Value>, dir: &Path) -> (KubeApiserver, PathBuf) {
    let kube = KubeApiserver::start(
        Default::default(),
        Default::default(),
        Box::new(|_| (true, String::new())),
    );
    kube.set_old_catalog(catalog);
    let source = kube.kubeconfig(dir);
    (kube, source)
}

fn get(server: &Server, namespace: &str, name: &str) -> Value {
    let text = server
        .kubectl(&["get", "cimg", name, "-n", namespace, "-o", "json"])
        .success();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn import_carries_every_entry_over_with_nothing_lost_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let (kube, source) = old_cluster(old_catalog(), dir.path());
    let server = Server::start();

    let dry = import(&server, &source, false);
    assert_eq!(
        (dry.ok, dry.stdout.as_str(), dry.stderr.len()),
        (
            true,
            "created 700, updated 0, unchanged 0, failed 0 (dry run: nothing written; --apply to write)",
            0
        ),
        "{:?}",
        dry.stderr
    );
    let listed = server
        .kubectl(&["get", "cimg", "-A", "-o", "name"])
        .success();
    assert_eq!(listed.trim(), "", "a dry run writes nothing");

    let applied = import(&server, &source, true);
    assert_eq!(
        (applied.stdout.as_str(), applied.stderr.len()),
        ("created 700, updated 0, unchanged 0, failed 0", 0),
        "{:?}",
        applied.stderr
    );
    for (namespace, name, i) in [("team-b", "image-0003", 3), ("team-a", "image-0698", 698)] {
        let old = &old_catalog()[i];
        let new = get(&server, namespace, name);
        assert_eq!(
            lost(&old["spec"], &new["spec"]),
            Vec::<String>::new(),
            "{name}"
        );
        let provenance: Value = [
            "publishedAt",
            "sourceImageBuild",
            "accessCount",
            "artifactRefs",
        ]
        .iter()
        .map(|f| (f.to_string(), old["status"][f].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into();
        assert_eq!(
            lost(&provenance, &new["status"]),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(new["metadata"]["labels"], old["metadata"]["labels"]);
        let annotations = &new["metadata"]["annotations"];
        assert_eq!(annotations["automotive.sdv.cloud.redhat.com/source"], "aib");
        let applied: Value =
            serde_json::from_str(annotations[LAST_APPLIED].as_str().unwrap()).unwrap();
        assert_eq!(applied["apiVersion"], "catalog.automotive.io/v1alpha1");
        assert_eq!(applied["spec"], old["spec"]);
        assert_ne!(
            new["status"]["phase"], "Available",
            "the verifier's part is not imported"
        );
    }
    let by_build = server
        .kubectl(&[
            "get",
            "cimg",
            "-A",
            "--field-selector",
            "status.sourceImageBuild=build-image-0003",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(
        by_build.trim(),
        "catalogimage.catalog.automotive.io/image-0003"
    );
    let by_builder = server
        .kubectl(&[
            "get",
            "cimg",
            "-A",
            "--field-selector",
            "spec.builderImage=quay.io/centos-sig-automotive/automotive-image-builder:1.5",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(
        by_builder.lines().count(),
        90,
        "tags 10.10 to 10.99 have five characters"
    );

    let again = import(&server, &source, true);
    assert_eq!(
        again.stdout,
        "created 0, updated 0, unchanged 700, failed 0"
    );
    let mut changed = old_catalog();
    changed[5]["spec"]["tags"] = json!(["10.5", "stable"]);
    changed[6]["status"]["accessCount"] = json!(43);
    kube.set_old_catalog(changed);
    let updated = import(&server, &source, true);
    assert_eq!(
        updated.stdout,
        "created 0, updated 2, unchanged 698, failed 0"
    );
    assert_eq!(
        get(&server, "team-a", "image-0006")["status"]["accessCount"],
        43
    );
}

#[test]
fn import_names_what_it_cannot_carry_and_each_failure_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = old_entry("team-a", "extra", "10");
    extra["spec"]["retention"] = json!("30d");
    extra["status"]["artifactRefs"][0]["checksumType"] = json!("sha256");
    extra["metadata"]["ownerReferences"] = json!([{"apiVersion": "automotive.sdv.cloud.redhat.com/v1alpha1", "kind": "ImageBuild", "name": "b", "uid": "u"}]);
    let mut bad = old_entry("team-a", "bad", "10");
    bad["spec"]["registryUrl"] = json!("not a reference");
    let fine = old_entry("team-b", "fine", "10");
    let (_kube, source) = old_cluster(vec![extra, bad, fine], dir.path());
    let server = Server::start();

    for apply in [false, true] {
        let run = import(&server, &source, apply);
        assert!(!run.ok, "a failed object fails the command");
        let summary =
            "created 2, updated 0, unchanged 0, failed 1, 3 fields not imported (named above)";
        assert!(run.stdout.starts_with(summary), "{}", run.stdout);
        let mut lines: Vec<&str> = run
            .stderr
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("team-"))
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "team-a/bad: spec.registryUrl: Invalid value: \"not a reference\": must be an image reference host[:port]/path with a :tag or an @sha256:<64 hex> digest",
                "team-a/extra: metadata.ownerReferences: not imported: the owners' uids are the source's",
                "team-a/extra: spec.retention: not imported: catalog.automotive.io has no such field",
                "team-a/extra: status.artifactRefs[0].checksumType: not imported: catalog.automotive.io has no such field",
            ],
            "apply: {apply}"
        );
    }
}
