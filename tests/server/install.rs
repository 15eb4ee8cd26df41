//! What a platform team applies: every kustomize overlay (the three certificate paths, and the
//! several-replica one) renders and validates against the Kubernetes 1.37 schemas, and the
//! certs command's certificate verifies for the Service name with the CA it puts in the
//! APIService.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::common::*;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn certs_command(out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_catalog-apiserver"))
        .args(["certs", "--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `kubectl kustomize DIR`, validated with kubernetes-validate; the objects.
fn render(dir: &Path) -> Vec<Value> {
    let rendered = Command::new(kubectl_binary())
        .args(["kustomize", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let validated = {
        use std::io::Write;
        let mut child = Command::new(venv_binary("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.37.0", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&rendered.stdout)
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    assert!(
        validated.status.success() && !report.contains("ERROR"),
        "{}: {report}",
        dir.display()
    );
    serde_saphyr::from_multiple::<Value>(std::str::from_utf8(&rendered.stdout).unwrap()).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

/// The checks every installation passes, whichever certificate path it takes.
fn check_installation(objects: &[Value]) {
    let apiservice = find(objects, "APIService", "v1alpha1.catalog.automotive.io");
    assert!(apiservice["spec"].get("insecureSkipTLSVerify").is_none());
    assert_eq!(
        apiservice["spec"]["service"],
        json!({"name": "catalog-apiserver", "namespace": "catalog-system", "port": 443})
    );
    let reader = find(
        objects,
        "RoleBinding",
        "catalog-apiserver:extension-apiserver-authentication-reader",
    );
    assert_eq!(reader["metadata"]["namespace"], "kube-system");
    let delegator = find(
        objects,
        "ClusterRoleBinding",
        "catalog-apiserver:system:auth-delegator",
    );
    assert_eq!(delegator["roleRef"]["name"], "system:auth-delegator");
    for (role, aggregate) in [
        ("catalogimages-view", "aggregate-to-view"),
        ("catalogimages-edit", "aggregate-to-edit"),
        ("catalogimages-admin", "aggregate-to-admin"),
    ] {
        assert_eq!(
            find(objects, "ClusterRole", role)["metadata"]["labels"]
                [format!("rbac.authorization.k8s.io/{aggregate}")],
            "true"
        );
    }
    let statefulset = find(objects, "StatefulSet", "catalog-apiserver");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(
        statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
            .is_string()
    );
    let service = find(objects, "Service", "catalog-apiserver");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    find(objects, "NetworkPolicy", "catalog-apiserver");
    find(objects, "PodDisruptionBudget", "catalog-apiserver");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_overlay_renders_validates_and_installs_completely() {
    let cert_manager = render(&repository().join("certs/cert-manager"));
    check_installation(&cert_manager);
    let apiservice = find(
        &cert_manager,
        "APIService",
        "v1alpha1.catalog.automotive.io",
    );
    assert_eq!(
        apiservice["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "catalog-system/catalog-apiserver-serving"
    );
    let serving = find(&cert_manager, "Certificate", "catalog-apiserver-serving");
    assert_eq!(serving["spec"]["secretName"], "catalog-apiserver-tls");

    let openshift = render(&repository().join("certs/openshift"));
    check_installation(&openshift);
    assert_eq!(
        find(&openshift, "APIService", "v1alpha1.catalog.automotive.io")["metadata"]["annotations"]
            ["service.beta.openshift.io/inject-cabundle"],
        "true"
    );
    assert_eq!(
        find(&openshift, "Service", "catalog-apiserver")["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"],
        "catalog-apiserver-tls"
    );

    // The generated path, on a copy of the tree, as an operator would run it.
    let copy = tempfile::tempdir().unwrap();
    for dir in ["deploy", "apiservice", "certs"] {
        copy_tree(&repository().join(dir), &copy.path().join(dir));
    }
    certs_command(&copy.path().join("certs/generated"));
    let generated = render(&copy.path().join("certs/generated"));
    check_installation(&generated);
    let ca_bundle =
        find(&generated, "APIService", "v1alpha1.catalog.automotive.io")["spec"]["caBundle"]
            .as_str()
            .unwrap()
            .to_string();
    let secret = find(&generated, "Secret", "catalog-apiserver-tls");
    assert_eq!(
        (
            secret["type"].as_str(),
            secret["metadata"]["namespace"].as_str()
        ),
        (Some("kubernetes.io/tls"), Some("catalog-system"))
    );
    assert!(secret["data"]["tls.crt"].is_string() && secret["data"]["tls.key"].is_string());
    assert!(!ca_bundle.is_empty());

    // Several replicas on the shared store: three, one per node, at most one away at a time.
    let ha = render(&repository().join("deploy/ha-cert-manager"));
    check_installation(&ha);
    let statefulset = find(&ha, "StatefulSet", "catalog-apiserver");
    assert_eq!(statefulset["spec"]["replicas"], 3);
    let pod = &statefulset["spec"]["template"]["spec"];
    let spread =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let store = env.iter().find(|e| e["name"] == "CATALOG_STORE").unwrap();
    assert_eq!(
        store["valueFrom"]["secretKeyRef"],
        json!({"name": "catalog-apiserver-store", "key": "url"})
    );
    let budget = &find(&ha, "PodDisruptionBudget", "catalog-apiserver")["spec"];
    assert_eq!(
        (
            budget["minAvailable"].as_i64(),
            budget.get("maxUnavailable")
        ),
        (Some(2), None)
    );

    // On OpenShift with the console plugin, and several replicas: the two Components compose.
    let overlay = copy.path().join("overlays/openshift-console");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../../certs/openshift]\n\
         components: [../../deploy/openshift-console, ../../deploy/ha]\n",
    )
    .unwrap();
    check_console_plugin(&render(&overlay));
}

/// The ConsolePlugin reaches the plugin listener through its Service, with the certificate the
/// service CA issues for that Service, under the plugin's own name.
fn check_console_plugin(objects: &[Value]) {
    check_installation(objects);
    let package: Value = serde_json::from_str(
        &std::fs::read_to_string(repository().join("console-plugin/package.json")).unwrap(),
    )
    .unwrap();
    let name = package["consolePlugin"]["name"].as_str().unwrap();
    let backend = &find(objects, "ConsolePlugin", name)["spec"]["backend"]["service"];
    let service = find(objects, "Service", backend["name"].as_str().unwrap());
    assert_eq!(service["spec"]["ports"][0]["port"], backend["port"]);
    let statefulset = find(objects, "StatefulSet", "catalog-apiserver");
    let pod = &statefulset["spec"]["template"]["spec"];
    assert_eq!(statefulset["spec"]["replicas"], 3);
    let container = &pod["containers"][0];
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == service["spec"]["ports"][0]["targetPort"])
        .expect("the Service's target port is the container's");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let bind = format!("--console-plugin-bind=0.0.0.0:{}", port["containerPort"]);
    assert!(args.contains(&bind.as_str()), "{args:?}");
    let secret =
        service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
            .as_str()
            .unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret)
        .expect("the service CA's Secret is mounted");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    let cert = format!(
        "--console-plugin-tls-cert-file={}/tls.crt",
        mount["mountPath"].as_str().unwrap()
    );
    assert!(args.contains(&cert.as_str()), "{args:?}");
}

#[test]
fn the_certs_command_certificate_verifies_for_the_service_with_the_apiservice_ca() {
    use base64::Engine as _;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let out = tempfile::tempdir().unwrap();
    certs_command(out.path());
    let patch: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(out.path().join("apiservice-cabundle.yaml")).unwrap(),
    )
    .unwrap();
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(patch["spec"]["caBundle"].as_str().unwrap())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .unwrap();
    let leaf = CertificateDer::from_pem_file(out.path().join("tls.crt")).unwrap();
    for name in [
        "catalog-apiserver.catalog-system.svc",
        "catalog-apiserver.catalog-system.svc.cluster.local",
    ] {
        let server = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &server, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("catalog-apiserver.other.svc").unwrap();
    assert!(
        verifier
            .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
            .is_err()
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.path().join("tls.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the key is private");
}
