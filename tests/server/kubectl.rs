//! The kubectl binary against the real server: what a person types.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::common::*;

#[test]
fn create_get_wide_yaml_patch_delete_explain() {
    let server = Server::start();
    let manifest = image_yaml(
        "automotive",
        "autosd10-qemu-arm64",
        "autosd10-sig",
        "aarch64",
        "tier: gold",
    );
    let out = server
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest))
        .success();
    assert!(
        out.contains("catalogimage.catalog.automotive.io/autosd10-qemu-arm64 created"),
        "{out}"
    );
    // Applying the same manifest again changes nothing.
    let out = server
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest))
        .success();
    assert!(out.contains("unchanged"), "{out}");

    let table = server.kubectl(&["get", "catalogimages", "-A"]).success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "REGISTRY",
            "ARCHITECTURE",
            "DISTRO",
            "PHASE",
            "AGE"
        ]
    );
    assert!(
        table.contains("autosd10-qemu-arm64")
            && table.contains("autosd10-sig")
            && table.contains("Pending"),
        "{table}"
    );

    let wide = server
        .kubectl(&["get", "cimg", "-n", "automotive", "-o", "wide"])
        .success();
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[header.len() - 3..], ["TARGETS", "FORMAT", "DIGEST"]);
    assert!(
        wide.contains("qemu*,rpi4") && wide.contains("qcow2"),
        "{wide}"
    );

    let yaml = server
        .kubectl(&[
            "get",
            "catalogimage",
            "autosd10-qemu-arm64",
            "-n",
            "automotive",
            "-o",
            "yaml",
        ])
        .success();
    for expected in [
        "generation: 1",
        "uid:",
        "creationTimestamp:",
        "os: linux",
        "registryUrl: quay.io/automotive/autosd10-sig",
    ] {
        assert!(yaml.contains(expected), "{expected} in {yaml}");
    }

    // Label and field selectors; the architecture selector compares normalised.
    let names = |args: &[&str]| -> String {
        let mut all = vec!["get", "cimg", "-A", "-o", "name"];
        all.extend_from_slice(args);
        server.kubectl(&all).success()
    };
    assert!(names(&["-l", "tier=gold"]).contains("autosd10-qemu-arm64"));
    assert!(names(&["-l", "tier in (silver)"]).trim().is_empty());
    assert!(
        names(&["--field-selector", "spec.metadata.architecture=arm64"])
            .contains("autosd10-qemu-arm64")
    );
    assert!(
        names(&[
            "--field-selector",
            "spec.tags=latest,spec.metadata.targets=rpi4"
        ])
        .contains("autosd10-qemu-arm64")
    );
    assert!(
        names(&["--field-selector", "spec.metadata.distro=cs9"])
            .trim()
            .is_empty()
    );
    let error = server
        .kubectl(&["get", "cimg", "-A", "--field-selector", "spec.nope=x"])
        .failure();
    assert!(
        error.contains("field label not supported: spec.nope"),
        "{error}"
    );

    let patch = |kind: &str, body: &str| {
        server
            .kubectl(&[
                "patch",
                "cimg",
                "autosd10-qemu-arm64",
                "-n",
                "automotive",
                "--type",
                kind,
                "-p",
                body,
            ])
            .success()
    };
    let jsonpath = |path: &str| {
        let output = format!("jsonpath={path}");
        server
            .kubectl(&[
                "get",
                "cimg",
                "autosd10-qemu-arm64",
                "-n",
                "automotive",
                "-o",
                &output,
            ])
            .success()
    };
    // A spec change through a merge patch bumps the generation.
    patch("merge", r#"{"spec":{"tags":["10","stable"]}}"#);
    assert_eq!(
        jsonpath("{.metadata.generation} {.spec.tags}"),
        r#"2 ["10","stable"]"#
    );
    // A label change through a JSON patch does not.
    patch(
        "json",
        r#"[{"op":"add","path":"/metadata/labels/extra","value":"yes"}]"#,
    );
    assert_eq!(
        jsonpath("{.metadata.generation} {.metadata.labels.extra}"),
        "2 yes"
    );

    let explain = server
        .kubectl(&["explain", "catalogimages.spec.metadata"])
        .success();
    for expected in [
        "KIND:       CatalogImage",
        "architecture",
        "Hardware targets the image is built for",
        "exportFormat",
    ] {
        assert!(explain.contains(expected), "{expected} in {explain}");
    }

    let out = server
        .kubectl(&["delete", "cimg", "autosd10-qemu-arm64", "-n", "automotive"])
        .success();
    assert!(out.contains("deleted"), "{out}");
    let error = server
        .kubectl(&["get", "cimg", "autosd10-qemu-arm64", "-n", "automotive"])
        .failure();
    assert!(
        error.contains("NotFound") || error.contains("not found"),
        "{error}"
    );
}

#[test]
fn chunked_listing_returns_everything_once() {
    let server = Server::start();
    let manifests: String = (0..25)
        .map(|i| {
            image_yaml(
                &format!("ns{}", i % 3),
                &format!("image-{i:02}"),
                "cs9",
                "x86_64",
                "",
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    server
        .kubectl_with_stdin(&["create", "-f", "-"], Some(&manifests))
        .success();
    let out = server
        .kubectl(&["get", "cimg", "-A", "--chunk-size=2", "-o", "name"])
        .success();
    let mut names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 25, "{out}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25, "no duplicates across chunks");
    let table = server
        .kubectl(&["get", "cimg", "-n", "ns1", "--chunk-size=3"])
        .success();
    assert_eq!(table.lines().count(), 1 + 8, "{table}");
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let server = Server::start();
    server
        .kubectl_with_stdin(
            &["create", "-f", "-"],
            Some(&image_yaml("w", "first", "cs9", "x86_64", "")),
        )
        .success();
    let mut watch = Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["get", "cimg", "-n", "w", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    assert!(next().starts_with("EVENT"));
    assert!(next().contains("first"), "the initial state comes first");
    server
        .kubectl_with_stdin(
            &["create", "-f", "-"],
            Some(&image_yaml("w", "second", "cs9", "x86_64", "")),
        )
        .success();
    let line = next();
    assert!(
        line.starts_with("ADDED") && line.contains("second"),
        "{line}"
    );
    server
        .kubectl(&["delete", "cimg", "first", "-n", "w"])
        .success();
    let line = next();
    assert!(
        line.starts_with("DELETED") && line.contains("first"),
        "{line}"
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
}
