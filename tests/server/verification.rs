//! The verification loop against a real registry on loopback (oci.rs): phases, conditions and
//! registry metadata for single- and multi-arch images, pinned digests, missing tags and
//! digests, credentials from an auth file and from Secrets, and the circuit breaker with the
//! registry stopped and started again.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use super::auth::Cluster;
use super::common::*;
use super::oci::{Layout, PASSWORD, Registry, USER, auth_file};

/// What a replica logs when it takes the verifier Lease.
const LEADING: &str = "verifier leadership leading=true";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("catalog.automotive.io", "v1alpha1", "CatalogImage"),
        "catalogimages",
    )
}

/// The images every test pushes, and what is known about them before the push.
struct Images {
    registry: Registry,
    single: String,
    single_size: i64,
    index: String,
    arm64: String,
    arm64_size: i64,
}

/// Where images name their builder image (the automotive-dev-operator's OCI contract).
const BUILDER_KEY: &str = "automotive.sdv.cloud.redhat.com/builder-image";

fn push_images() -> Images {
    push_images_to(Registry::start())
}

fn push_images_to(registry: Registry) -> Images {
    let mut layout = Layout::new();
    let annotations = json!({"org.opencontainers.image.source": "https://gitlab.com/CentOS/automotive/sample-images",
        "com.redhat.automotive.distro": "autosd10-sig", "com.redhat.automotive.bootc-capable": "true",
        BUILDER_KEY: "quay.io/centos-sig-automotive/aib:1.0-amd64"});
    let (single, single_size) = layout.image("amd64", None, annotations, json!({}));
    layout.tag(&single, OCI_MANIFEST, "single");
    // The index's platforms name their builders the two ways the operator reads.
    let amd64_label = json!({BUILDER_KEY: "quay.io/centos-sig-automotive/aib:1.1-amd64"});
    let (amd64, _) = layout.image("amd64", None, json!({}), amd64_label);
    let arm64_annotation = json!({BUILDER_KEY: "quay.io/centos-sig-automotive/aib:1.1-arm64"});
    let (arm64, arm64_size) = layout.image("arm64", Some("v8"), arm64_annotation, json!({}));
    let index = layout.index(
        &[(&amd64, "amd64", None), (&arm64, "arm64", Some("v8"))],
        json!({"com.redhat.automotive.target": "qemu"}),
    );
    layout.tag(&index, OCI_INDEX, "multi");
    registry.push(&layout, "automotive/autosd", "single");
    registry.push(&layout, "automotive/autosd", "multi");
    Images {
        single: single.digest,
        single_size: single_size.as_i64().unwrap(),
        index: index.digest,
        arm64: arm64.digest,
        arm64_size: arm64_size.as_i64().unwrap(),
        registry,
    }
}

/// A standalone server that verifies, trusting the registry's CA and holding an auth file
/// with `password` for it; the directory of the auth file lives as long as the server.
fn verifying_server(
    images: &Images,
    password: &str,
    flags: &[&str],
) -> (Server, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let auth = auth_file(files.path(), &images.registry.host, USER, password);
    let certs = images.registry.certs_dir();
    let mut all = vec![
        "--verify=true",
        "--registry-ca",
        certs.to_str().unwrap(),
        "--registry-auth-file",
        auth.to_str().unwrap(),
    ];
    all.extend(flags);
    (Server::start_with(&all), files)
}

fn entry(name: &str, reference: &str, architecture: &str, spec: Value) -> DynamicObject {
    let mut object = json!({"apiVersion": "catalog.automotive.io/v1alpha1", "kind": "CatalogImage",
        "metadata": {"name": name},
        "spec": {"registryUrl": reference, "metadata": {"architecture": architecture, "distro": "autosd10-sig"}}});
    if let (Some(fields), Some(spec_object)) = (spec.as_object(), object["spec"].as_object_mut()) {
        spec_object.extend(fields.clone());
    }
    serde_json::from_value(object).unwrap()
}

fn status(object: &DynamicObject) -> &Value {
    &object.data["status"]
}

fn phase(object: &DynamicObject) -> &str {
    status(object)["phase"].as_str().unwrap_or("")
}

fn reason(object: &DynamicObject) -> &str {
    status(object)["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Verified")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
}

/// The server's /metrics text.
async fn metrics(client: &kube::Client) -> String {
    use http_body_util::BodyExt;
    let request = http::Request::get("/metrics")
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Waits, on a watch, until `name` satisfies `condition`.
async fn until(
    api: &Api<DynamicObject>,
    name: &str,
    condition: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let wait = await_condition(api.clone(), name, move |o: Option<&DynamicObject>| {
        o.is_some_and(&condition)
    });
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(Some(object))) => object,
        other => panic!(
            "{name} never reached the condition: {other:?}; now {:?}",
            api.get(name).await.map(|o| o.data)
        ),
    }
}

#[test]
fn entries_are_verified_against_their_registry() {
    let images = push_images();
    let host = images.registry.host.clone();
    let (server, _files) = verifying_server(
        &images,
        PASSWORD,
        &["--verify-retry-base", "200ms", "--verify-max-failures", "3"],
    );
    runtime().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&server), "verify", &resource());
        let repository = format!("{host}/automotive/autosd");
        let digest_ref = format!("{repository}@{}", images.single);
        let unknown = format!("{repository}@sha256:{}", "0".repeat(64));
        let mut created = std::collections::HashMap::new();
        for object in [
            entry(
                "single",
                &format!("{repository}:single"),
                "x86_64",
                json!({}),
            ),
            entry(
                "multi-arm",
                &format!("{repository}:multi"),
                "aarch64",
                json!({}),
            ),
            entry(
                "multi-s390x",
                &format!("{repository}:multi"),
                "s390x",
                json!({}),
            ),
            entry(
                "pinned",
                &digest_ref,
                "amd64",
                json!({"digest": images.single}),
            ),
            entry(
                "pinned-wrong",
                &format!("{repository}:single"),
                "amd64",
                json!({"digest": images.index}),
            ),
            entry(
                "missing-tag",
                &format!("{repository}:not-pushed"),
                "amd64",
                json!({}),
            ),
            entry("unknown-digest", &unknown, "amd64", json!({})),
        ] {
            let object = api.create(&PostParams::default(), &object).await.unwrap();
            created.insert(
                object.metadata.name.unwrap(),
                object.metadata.resource_version.unwrap(),
            );
        }

        let single = until(&api, "single", |o| phase(o) == "Available").await;
        assert_ne!(
            single.metadata.resource_version,
            Some(created["single"].clone()),
            "status writes are new revisions"
        );
        let found = &status(&single)["registryMetadata"];
        assert_eq!(found["resolvedDigest"], images.single);
        assert_eq!(found["mediaType"], OCI_MANIFEST);
        assert_eq!(
            (found["layerCount"].as_i64(), found["sizeBytes"].as_i64()),
            (Some(1), Some(images.single_size))
        );
        assert_eq!(
            found["platform"],
            json!({"architecture": "amd64", "os": "linux"})
        );
        assert_eq!(
            (found["isMultiArch"].as_bool(), found["createdAt"].as_str()),
            (Some(false), Some("2026-01-02T03:04:05Z"))
        );
        assert_eq!(
            found["annotations"]["com.redhat.automotive.distro"],
            "autosd10-sig"
        );
        assert_eq!(
            (&found["builderImages"], &found["builderImageResolved"]),
            (
                &json!(["quay.io/centos-sig-automotive/aib:1.0-amd64"]),
                &json!(true)
            )
        );
        assert_eq!(status(&single)["observedGeneration"], 1);
        assert_eq!(status(&single)["verificationFailures"], 0);
        let conditions: Vec<(String, String)> = status(&single)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            conditions,
            [
                ("Verified".into(), "True".into()),
                ("Available".into(), "True".into()),
                ("Ready".into(), "True".into())
            ]
        );

        let multi = until(&api, "multi-arm", |o| phase(o) == "Available").await;
        let found = &status(&multi)["registryMetadata"];
        assert_eq!(
            (
                found["resolvedDigest"].as_str(),
                found["isMultiArch"].as_bool()
            ),
            (Some(images.index.as_str()), Some(true))
        );
        assert_eq!(
            found["platform"],
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        assert_eq!(found["sizeBytes"].as_i64(), Some(images.arm64_size));
        assert_eq!(found["annotations"]["com.redhat.automotive.target"], "qemu");
        assert_eq!(
            (&found["builderImages"], &found["builderImageResolved"]),
            (
                &json!([
                    "quay.io/centos-sig-automotive/aib:1.1-amd64",
                    "quay.io/centos-sig-automotive/aib:1.1-arm64"
                ]),
                &json!(true)
            )
        );
        let variants = found["platformVariants"].as_array().unwrap();
        assert_eq!(variants.len(), 2);
        assert_eq!(
            (
                variants[1]["architecture"].as_str(),
                variants[1]["digest"].as_str()
            ),
            (Some("arm64"), Some(images.arm64.as_str()))
        );

        let s390x = until(&api, "multi-s390x", |o| phase(o) == "Failed").await;
        assert_eq!(reason(&s390x), "ArchitectureMissing");
        until(&api, "pinned", |o| phase(o) == "Available").await;
        let wrong = until(&api, "pinned-wrong", |o| phase(o) == "Failed").await;
        assert_eq!(reason(&wrong), "DigestMismatch");
        let unknown = until(&api, "unknown-digest", |o| phase(o) == "Failed").await;
        assert_eq!(
            (
                reason(&unknown),
                status(&unknown)["verificationFailures"].as_i64()
            ),
            ("ManifestUnknown", Some(1))
        );
        // A tag that is not there is retried: Unavailable, then Failed after three failures in a row.
        let missing = until(&api, "missing-tag", |o| phase(o) == "Failed").await;
        assert_eq!(
            (
                reason(&missing),
                status(&missing)["verificationFailures"].as_i64()
            ),
            ("ManifestUnknown", Some(3))
        );

        // A spec change is verified again, at its new generation.
        let patch = json!({"spec": {"registryUrl": format!("{repository}:single")}});
        api.patch(
            "missing-tag",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
        let fixed = until(&api, "missing-tag", |o| phase(o) == "Available").await;
        let text = metrics(&kube_client(&server)).await;
        for expected in [
            format!("catalog_verification_checks_total{{host=\"{host}\",outcome=\"Available\"}}"),
            format!(
                "catalog_verification_checks_total{{host=\"{host}\",outcome=\"DigestMismatch\"}} 1"
            ),
            format!("catalog_verification_circuit_state{{host=\"{host}\"}} 0"),
            "catalog_verification_check_duration_seconds_count".to_string(),
            "catalog_verification_queue_depth ".to_string(),
        ] {
            assert!(text.contains(&expected), "{expected} in {text}");
        }
        assert_eq!(
            (
                status(&fixed)["observedGeneration"].as_i64(),
                status(&fixed)["verificationFailures"].as_i64()
            ),
            (Some(2), Some(0))
        );
    });
}

#[test]
fn refused_credentials_fail_the_entry() {
    let images = push_images();
    let (server, _files) = verifying_server(&images, "not-the-password", &[]);
    runtime().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&server), "verify", &resource());
        let reference = format!("{}/automotive/autosd:single", images.registry.host);
        api.create(
            &PostParams::default(),
            &entry("locked", &reference, "amd64", json!({})),
        )
        .await
        .unwrap();
        let locked = until(&api, "locked", |o| phase(o) == "Failed").await;
        assert_eq!(reason(&locked), "Unauthorized");
    });
}

fn condition_message(object: &DynamicObject) -> String {
    status(object)["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn credentials_come_from_secrets_read_through_kube_apiserver() {
    let images = push_images();
    let host = images.registry.host.clone();
    let certs = images.registry.certs_dir();
    let cluster = Cluster::start_with(&["--verify=true", "--registry-ca", certs.to_str().unwrap()]);
    use base64::Engine as _;
    let auth = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
    };
    cluster.kube.put_pull_secret(
        "verify",
        "pull",
        &json!({"auths": {host.clone(): {"auth": auth(PASSWORD)}}}),
    );
    cluster.kube.put_pull_secret(
        "verify",
        "stale",
        &json!({"auths": {host.clone(): {"auth": auth("expired")}}}),
    );
    let admin = cluster.client_ca.client("admin", &["system:masters"]);
    runtime().block_on(async {
        let api: Api<DynamicObject> = Api::namespaced_with(
            cluster.client(Some(&admin), None, &[]),
            "verify",
            &resource(),
        );
        let reference = format!("{host}/automotive/autosd:single");
        for (name, credentials) in [
            ("by-secret", json!({"authSecretRef": {"name": "pull"}})),
            (
                "by-stale-secret",
                json!({"imagePullSecrets": [{"name": "stale"}]}),
            ),
            (
                "by-absent-secret",
                json!({"imagePullSecrets": [{"name": "absent"}]}),
            ),
        ] {
            let object = entry(name, &reference, "amd64", credentials);
            api.create(&PostParams::default(), &object).await.unwrap();
        }
        until(&api, "by-secret", |o| phase(o) == "Available").await;
        let stale = until(&api, "by-stale-secret", |o| phase(o) == "Failed").await;
        assert_eq!(reason(&stale), "Unauthorized");
        let absent = until(&api, "by-absent-secret", |o| phase(o) == "Unavailable").await;
        assert_eq!(reason(&absent), "CredentialsUnavailable");
        // What `kubectl describe` shows: one sentence, no debug dump of the kube-apiserver's Status.
        let message = condition_message(&absent);
        assert!(
            message.starts_with("Secret verify/absent not found"),
            "{message}"
        );
    });
}

#[test]
fn a_stopped_registry_opens_the_circuit_and_entries_recover_when_it_returns() {
    let mut images = push_images();
    let host = images.registry.host.clone();
    let (server, _files) = verifying_server(
        &images,
        PASSWORD,
        &[
            "--verify-retry-base",
            "200ms",
            "--verify-retry-cap",
            "1s",
            "--verify-max-failures",
            "1000",
            "--registry-failure-threshold",
            "2",
            "--registry-cool-down",
            "2s",
        ],
    );
    runtime().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&server), "verify", &resource());
        let reference = format!("{host}/automotive/autosd:single");
        let names: Vec<String> = (0..5).map(|i| format!("shared-{i}")).collect();
        let before = images.registry.manifest_requests();
        for name in &names {
            api.create(
                &PostParams::default(),
                &entry(name, &reference, "amd64", json!({})),
            )
            .await
            .unwrap();
        }
        for name in &names {
            until(&api, name, |o| phase(o) == "Available").await;
        }
        // Five entries with the same reference: one registry round trip.
        assert_eq!(images.registry.manifest_requests() - before, 1);

        images.registry.stop();
        // A spec change (to another reference, so no earlier answer serves it) makes every
        // entry due at once, while the registry is gone.
        let moved = format!("{host}/automotive/autosd:multi");
        for name in &names {
            let patch = json!({"spec": {"registryUrl": moved}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        let open = until(&api, &names[0], |o| reason(o) == "RegistryCircuitOpen").await;
        assert_eq!(phase(&open), "Unavailable");
        let text = metrics(&kube_client(&server)).await;
        let state = format!("catalog_verification_circuit_state{{host=\"{host}\"}} 2");
        assert!(text.contains(&state), "{state} in {text}");
        let message = status(&open)["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains(&host) && message.contains("not contacted"),
            "{message}"
        );

        let before = images.registry.manifest_requests();
        images.registry.resume();
        for name in &names {
            let back = until(&api, name, |o| phase(o) == "Available").await;
            assert_eq!(status(&back)["observedGeneration"], 2);
        }
        // Back through a single probe whose answer the others share: one inspection of the
        // index (the index and its two platform manifests), no flood of retries.
        let after = images.registry.manifest_requests() - before;
        assert_eq!(after, 3, "manifest requests after the registry came back");
    });
}

#[test]
fn only_the_lease_holder_verifies_and_another_replica_takes_over() {
    let images = push_images();
    let host = images.registry.host.clone();
    let certs = images.registry.certs_dir();
    let replica = |identity: &'static str| -> Vec<String> {
        [
            "--verify=true",
            "--registry-ca",
            certs.to_str().unwrap(),
            "--lease-duration",
            "5s",
            "--lease-retry",
            "200ms",
            "--lease-identity",
            identity,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let flags_a = replica("replica-a");
    let mut cluster = Cluster::start_with(&flags_a.iter().map(String::as_str).collect::<Vec<_>>());
    let holder = || {
        cluster
            .kube
            .lease_holder("catalog-system", "catalog-apiserver-verifier")
    };
    cluster.server.wait_for_log(LEADING, 0);
    // Each process's identity is its name and a random suffix.
    let held_by = |name: &str| holder().is_some_and(|h| h.starts_with(&format!("{name}_")));
    assert!(held_by("replica-a"), "{:?}", holder());
    let flags_b = replica("replica-b");
    let b = cluster.replica(&flags_b.iter().map(String::as_str).collect::<Vec<_>>());

    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    cluster.kube.put_pull_secret(
        "verify",
        "pull",
        &json!({"auths": {host.clone(): {"auth": auth}}}),
    );
    let admin = cluster.client_ca.client("admin", &["system:masters"]);
    let reference = format!("{host}/automotive/autosd:single");
    let object = entry(
        "led",
        &reference,
        "amd64",
        json!({"authSecretRef": {"name": "pull"}}),
    );
    runtime().block_on(async {
        let on_a: Api<DynamicObject> = Api::namespaced_with(
            cluster.client(Some(&admin), None, &[]),
            "verify",
            &resource(),
        );
        let b_client =
            super::auth::client_of(&b.address, &cluster.serving_ca.pem, Some(&admin), None, &[]);
        let on_b: Api<DynamicObject> = Api::namespaced_with(b_client, "verify", &resource());
        on_b.create(&PostParams::default(), &object).await.unwrap();
        on_a.create(&PostParams::default(), &object).await.unwrap();
        // The leader verifies its entry; by then the follower has left its own alone.
        until(&on_a, "led", |o| phase(o) == "Available").await;
        assert!(
            on_b.get("led").await.unwrap().data.get("status").is_none(),
            "the follower verified"
        );
    });
    // The leader goes; once its lease runs out (5 s: long enough that a leader starved of CPU
    // by a busy machine still renews in time), the other replica takes over and verifies.
    cluster.server.stop();
    b.wait_for_log(LEADING, 0);
    assert!(held_by("replica-b"), "{:?}", holder());
    runtime().block_on(async {
        let b_client =
            super::auth::client_of(&b.address, &cluster.serving_ca.pem, Some(&admin), None, &[]);
        let on_b: Api<DynamicObject> = Api::namespaced_with(b_client, "verify", &resource());
        until(&on_b, "led", |o| phase(o) == "Available").await;
    });
}

#[test]
fn an_insecure_registry_is_reached_over_http_only_when_opted_in() {
    let images = push_images_to(Registry::start_insecure());
    let host = images.registry.host.clone();
    let reference = format!("{host}/automotive/autosd:single");
    let opted_in = Server::start_with(&["--verify=true", "--insecure-registry", &host]);
    let not_opted_in = Server::start_with(&["--verify=true", "--verify-max-failures", "1"]);
    runtime().block_on(async {
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&opted_in), "verify", &resource());
        api.create(
            &PostParams::default(),
            &entry("plain", &reference, "amd64", json!({})),
        )
        .await
        .unwrap();
        let plain = until(&api, "plain", |o| phase(o) == "Available").await;
        assert_eq!(
            status(&plain)["registryMetadata"]["resolvedDigest"],
            images.single
        );
        // Without the opt-in, HTTPS to a plain HTTP registry fails: never silently downgraded.
        let api: Api<DynamicObject> =
            Api::namespaced_with(kube_client(&not_opted_in), "verify", &resource());
        api.create(
            &PostParams::default(),
            &entry("plain", &reference, "amd64", json!({})),
        )
        .await
        .unwrap();
        let refused = until(&api, "plain", |o| phase(o) == "Failed").await;
        assert_eq!(reason(&refused), "RegistryUnreachable");
    });
}
