//! Every error code of the core surface, as a metav1.Status with the right reason.

use serde_json::{Value, json};

use super::common::*;

fn collection(namespace: &str) -> String {
    format!("{BASE}/namespaces/{namespace}/catalogimages")
}

#[track_caller]
fn assert_status(got: &(u16, Value), code: u16, reason: &str) {
    assert_eq!(got.0, code, "{}", got.1);
    assert_eq!(got.1["kind"], "Status", "{}", got.1);
    assert_eq!(got.1["reason"], reason, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
}

#[test]
fn each_failure_is_a_status_with_its_code() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        let body = image_json("errs", "one", "cs9").to_string();
        let created = http.request("POST", &collection("errs"), "application/json", &body).await;
        assert_eq!(created.0, 201, "{}", created.1);
        let rv = created.1["metadata"]["resourceVersion"].as_str().unwrap().to_string();

        // 409 AlreadyExists
        assert_status(&http.request("POST", &collection("errs"), "application/json", &body).await, 409, "AlreadyExists");
        // 409 Conflict on a stale resourceVersion
        let mut stale = created.1.clone();
        stale["metadata"]["resourceVersion"] = json!("999");
        stale["spec"]["tags"] = json!(["x"]);
        let path = format!("{}/one", collection("errs"));
        assert_status(&http.request("PUT", &path, "application/json", &stale.to_string()).await, 409, "Conflict");
        // ... while the current resourceVersion is accepted and bumps the generation.
        stale["metadata"]["resourceVersion"] = json!(rv);
        let updated = http.request("PUT", &path, "application/json", &stale.to_string()).await;
        assert_eq!(updated.0, 200, "{}", updated.1);
        assert_eq!(updated.1["metadata"]["generation"], 2);
        // Replacing with the same spec minus its defaults changes nothing: same generation, same resourceVersion.
        let mut same = updated.1.clone();
        same["spec"].as_object_mut().unwrap().remove("verificationInterval");
        let replaced = http.request("PUT", &path, "application/json", &same.to_string()).await;
        assert_eq!(replaced.0, 200, "{}", replaced.1);
        assert_eq!(replaced.1["metadata"]["generation"], 2);
        assert_eq!(replaced.1["metadata"]["resourceVersion"], updated.1["metadata"]["resourceVersion"]);
        // 404
        assert_status(&http.request("GET", &format!("{}/missing", collection("errs")), "", "").await, 404, "NotFound");
        assert_status(&http.request("GET", "/apis/other.group/v1", "", "").await, 404, "NotFound");
        // 422 with a cause per bad field
        let bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {"registryUrl": "no-registry", "digest": "md5:1", "verificationInterval": "10s"}});
        let invalid = http.request("POST", &collection("errs"), "application/json", &bad.to_string()).await;
        assert_status(&invalid, 422, "Invalid");
        let fields: Vec<&str> = invalid.1["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["metadata.name", "spec.registryUrl", "spec.digest", "spec.verificationInterval"]);
        let wrong_type = json!({"metadata": {"name": "t"}, "spec": {"registryUrl": "quay.io/a/b:c", "tags": "latest"}});
        let invalid = http.request("POST", &collection("errs"), "application/json", &wrong_type.to_string()).await;
        assert_status(&invalid, 422, "Invalid");
        assert_eq!(invalid.1["details"]["causes"][0]["field"], "spec.tags");
        // 400: malformed JSON, unknown fields under Strict, a bad selector
        assert_status(&http.request("POST", &collection("errs"), "application/json", "{nope").await, 400, "BadRequest");
        let unknown = json!({"metadata": {"name": "u"}, "spec": {"registryUrl": "quay.io/a/b:c", "colour": "red"}});
        let strict = http.request("POST", &format!("{}?fieldValidation=Strict", collection("errs")), "application/json", &unknown.to_string()).await;
        assert_status(&strict, 400, "BadRequest");
        assert!(strict.1["message"].as_str().unwrap().contains("spec.colour"));
        let selector = http.request("GET", &format!("{}?fieldSelector=spec.colour%3Dred", collection("errs")), "", "").await;
        assert_status(&selector, 400, "BadRequest");
        // 415: strategic merge patch and apply are not taken on this path
        for content_type in ["application/strategic-merge-patch+json", "text/plain"] {
            assert_status(&http.request("PATCH", &path, content_type, "{}").await, 415, "UnsupportedMediaType");
        }
        // 406: protobuf only
        let request = http::Request::builder().uri(&path).header("Accept", "application/vnd.kubernetes.protobuf").body(Vec::new()).unwrap();
        let (code, _, body) = http.send(request).await;
        assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
        // 405
        assert_status(&http.request("POST", &path, "application/json", "{}").await, 405, "MethodNotAllowed");
    });
}

#[test]
fn status_and_main_writes_ignore_each_other() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        let mut body = image_json("st", "one", "cs9");
        body["status"] = json!({"phase": "Available"});
        let created = http.request("POST", &collection("st"), "application/json", &body.to_string()).await;
        assert_eq!(created.1.get("status"), None, "status is not written on create");
        let path = format!("{}/one", collection("st"));
        let patch = json!({"spec": {"tags": ["new"]}, "status": {"phase": "Failed", "verificationFailures": 5}});
        let status = http.request("PATCH", &format!("{path}/status"), "application/merge-patch+json", &patch.to_string()).await;
        assert_eq!(status.0, 200, "{}", status.1);
        assert_eq!(status.1["status"]["phase"], "Failed");
        assert_eq!(status.1["spec"].get("tags"), None, "spec is not written through /status");
        assert_eq!(status.1["metadata"]["generation"], 1, "a status write does not bump the generation");
        let main = http.request("PATCH", &path, "application/merge-patch+json", &json!({"status": {"phase": "Pending"}}).to_string()).await;
        assert_eq!(main.1["status"]["phase"], "Failed", "status is not written through the main resource");
        let got = http.request("GET", &format!("{path}/status"), "", "").await;
        assert_eq!(got.1["status"]["verificationFailures"], 5);
        // dryRun leaves nothing behind.
        let dry = http.request("POST", &format!("{}?dryRun=All", collection("st")), "application/json", &image_json("st", "dry", "cs9").to_string()).await;
        assert_eq!(dry.0, 201);
        assert_eq!(http.request("GET", &format!("{}/dry", collection("st")), "", "").await.0, 404);
        // generateName
        let generated = http.request("POST", &collection("st"), "application/json", &json!({"metadata": {"generateName": "img-"}, "spec": {"registryUrl": "quay.io/a/b:c"}}).to_string()).await;
        let name = generated.1["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("img-") && name.len() == 9, "{name}");
    });
}

#[test]
fn anonymous_requests_get_401_but_health_checks_answer() {
    let server = Server::start();
    let ca = std::fs::read(server.pki("ca.crt")).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut config = kube::Config::new(format!("https://{}", server.address).parse().unwrap());
        config.root_cert = Some(vec![rustls_pemfile_der(&ca)]);
        let client = kube::Client::try_from(config).unwrap();
        for (path, code) in [
            ("/healthz", 200),
            ("/livez", 200),
            ("/readyz", 200),
            ("/apis", 401),
            (BASE, 401),
        ] {
            let request = http::Request::builder()
                .uri(path)
                .body(kube::client::Body::empty())
                .unwrap();
            let response = client.send(request).await.unwrap();
            assert_eq!(response.status().as_u16(), code, "{path}");
        }
    });
}

/// The DER bytes of the first PEM certificate in `pem`.
fn rustls_pemfile_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn finalizers_hold_an_object_and_deletecollection_selects() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        let mut held = image_json("fin", "held", "cs9");
        held["metadata"]["finalizers"] = json!(["catalog.automotive.io/keep"]);
        assert_eq!(
            http.request(
                "POST",
                &collection("fin"),
                "application/json",
                &held.to_string()
            )
            .await
            .0,
            201
        );
        for (name, distro) in [("a", "cs9"), ("b", "cs9"), ("c", "autosd10")] {
            let body = image_json("fin", name, distro).to_string();
            assert_eq!(
                http.request("POST", &collection("fin"), "application/json", &body)
                    .await
                    .0,
                201
            );
        }
        let path = format!("{}/held", collection("fin"));
        // A stale precondition is refused.
        let stale = json!({"preconditions": {"resourceVersion": "1000"}}).to_string();
        assert_status(
            &http
                .request("DELETE", &path, "application/json", &stale)
                .await,
            409,
            "Conflict",
        );

        // Delete with a finalizer: the object stays, marked.
        let (code, deleting) = http.request("DELETE", &path, "", "").await;
        assert_eq!(code, 200, "{deleting}");
        let (code, got) = http.request("GET", &path, "", "").await;
        assert_eq!(code, 200);
        assert!(got["metadata"]["deletionTimestamp"].is_string(), "{got}");
        // Removing the last finalizer deletes it.
        let patch = json!({"metadata": {"finalizers": null}}).to_string();
        assert_eq!(
            http.request("PATCH", &path, "application/merge-patch+json", &patch)
                .await
                .0,
            200
        );
        assert_status(&http.request("GET", &path, "", "").await, 404, "NotFound");

        // deletecollection takes exactly what the selector selects.
        let (code, deleted) = http
            .request(
                "DELETE",
                &format!("{}?labelSelector=distro%3Dcs9", collection("fin")),
                "",
                "",
            )
            .await;
        assert_eq!(code, 200, "{deleted}");
        let names: Vec<&str> = deleted["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let (_, left) = http.request("GET", &collection("fin"), "", "").await;
        let names: Vec<&str> = left["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c"]);
    });
}

#[test]
fn metrics_count_requests_watches_and_the_store() {
    let server = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let http = server.http();
        let body = image_json("metrics", "one", "cs9").to_string();
        assert_eq!(
            http.request("POST", &collection("metrics"), "application/json", &body)
                .await
                .0,
            201
        );
        assert_eq!(
            http.request("GET", &collection("metrics"), "", "").await.0,
            200
        );
        assert_eq!(
            http.request("GET", &format!("{}/none", collection("metrics")), "", "")
                .await
                .0,
            404
        );
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let (code, headers, body) = http.send(request).await;
        assert_eq!(code, 200);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = String::from_utf8(body).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert_eq!(
            value(r#"catalog_requests_total{verb="create",code="201"}"#),
            1.0
        );
        assert_eq!(
            value(r#"catalog_requests_total{verb="list",code="200"}"#),
            1.0
        );
        assert_eq!(
            value(r#"catalog_requests_total{verb="get",code="404"}"#),
            1.0
        );
        assert_eq!(
            value(r#"catalog_request_duration_seconds_count{verb="list"}"#),
            1.0
        );
        assert_eq!(value("catalog_watches "), 0.0);
        assert_eq!(value("catalog_store_revision "), 1.0);
        assert!(value("catalog_store_size_bytes ") > 0.0);
        assert!(value("catalog_process_resident_memory_bytes ") > 1e6);
    });
}
