//! Client fidelity beyond the core surface: YAML, server-side apply, WebSocket watches.

use serde_json::Value;

use super::common::*;

fn collection(namespace: &str) -> String {
    format!("{BASE}/namespaces/{namespace}/catalogimages")
}

async fn send(
    http: &Http,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (code, headers, body) = http
        .send(request.body(body.as_bytes().to_vec()).unwrap())
        .await;
    (code, headers, String::from_utf8(body).unwrap())
}

#[test]
fn yaml_in_and_out() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        let manifest = image_yaml("yaml", "one", "cs9", "x86_64", "tier: gold");
        let yaml = [
            ("Content-Type", "application/yaml"),
            ("Accept", "application/yaml"),
        ];
        let (code, headers, body) =
            send(&http, "POST", &collection("yaml"), &yaml, &manifest).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(headers["content-type"], "application/yaml");
        let created: Value = serde_saphyr::from_str(&body).unwrap();
        assert_eq!(created["spec"]["metadata"]["distro"], "cs9");

        // The YAML of a get is the JSON of the same get, keys sorted.
        let path = format!("{}/one", collection("yaml"));
        let accept_yaml = [("Accept", "application/yaml")];
        let (code, _, body) = send(&http, "GET", &path, &accept_yaml, "").await;
        assert_eq!(code, 200);
        assert!(
            body.starts_with(
                "apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata:\n"
            ),
            "{body}"
        );
        let (_, _, json) = send(&http, "GET", &path, &[], "").await;
        assert_eq!(
            serde_saphyr::from_str::<Value>(&body).unwrap(),
            serde_json::from_str::<Value>(&json).unwrap()
        );

        let (code, _, body) = send(&http, "GET", &collection("yaml"), &accept_yaml, "").await;
        assert_eq!(code, 200);
        let list: Value = serde_saphyr::from_str(&body).unwrap();
        assert_eq!(list["kind"], "CatalogImageList");
        assert_eq!(list["items"][0]["metadata"]["name"], "one");

        // Errors come back as a Status in YAML too.
        let (code, headers, body) = send(
            &http,
            "GET",
            &format!("{}/none", collection("yaml")),
            &accept_yaml,
            "",
        )
        .await;
        assert_eq!(
            (code, &headers["content-type"]),
            (404, &"application/yaml".parse().unwrap())
        );
        let status: Value = serde_saphyr::from_str(&body).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str()),
            (Some("Status"), Some("NotFound"))
        );

        // A watch has no YAML form (kube-apiserver has no YAML stream serializer): 406, unless JSON is also acceptable.
        let watch = format!("{}?watch=true&timeoutSeconds=1", collection("yaml"));
        let (code, _, _) = send(&http, "GET", &watch, &accept_yaml, "").await;
        assert_eq!(code, 406);
        let (code, _, body) = send(
            &http,
            "GET",
            &watch,
            &[("Accept", "application/yaml, application/json")],
            "",
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""type":"ADDED""#), "{body}");

        // Bad YAML is a 400 Status.
        let (code, _, body) = send(
            &http,
            "POST",
            &collection("yaml"),
            &[("Content-Type", "application/yaml")],
            "metadata: [unclosed",
        )
        .await;
        assert_eq!(code, 400, "{body}");
    });
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_string(),
                m["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `kubectl get` of an entry as JSON, managedFields included.
fn get_with_managed_fields(server: &Server, namespace: &str, name: &str) -> Value {
    let out = server
        .kubectl(&[
            "get",
            "cimg",
            name,
            "-n",
            namespace,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .success();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn server_side_apply_with_kubectl_owns_fields_and_reports_conflicts() {
    let server = Server::start();
    let get = |name: &str| get_with_managed_fields(&server, "ssa", name);
    let alice = image_yaml("ssa", "one", "cs9", "x86_64", "tier: gold");
    let out = server
        .kubectl_with_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            Some(&alice),
        )
        .success();
    assert!(out.contains("serverside-applied"), "{out}");
    let object = get("one");
    assert_eq!(
        managers(&object),
        [("alice".to_string(), "Apply".to_string())]
    );
    let fields = &object["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:registryUrl"], serde_json::json!({}));
    assert_eq!(
        fields["f:spec"]["f:metadata"]["f:targets"]["k:{\"name\":\"qemu\"}"]["."],
        serde_json::json!({})
    );
    assert_eq!(
        fields["f:metadata"]["f:labels"]["f:tier"],
        serde_json::json!({})
    );

    // Bob applies another registryUrl: a conflict naming alice and the field.
    let bob = "apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata: {name: one, namespace: ssa}\nspec:\n  registryUrl: quay.io/automotive/cs9:bob\n  tags: [bob]\n";
    let err = server
        .kubectl_with_stdin(
            &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
            Some(bob),
        )
        .failure();
    assert!(
        err.contains("conflict with \"alice\"") && err.contains(".spec.registryUrl"),
        "{err}"
    );
    assert_eq!(
        get("one")["spec"]["registryUrl"],
        "quay.io/automotive/cs9:one"
    );

    // Forced, bob takes the field; the tag set is shared item by item.
    server
        .kubectl_with_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=bob",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(bob),
        )
        .success();
    let object = get("one");
    assert_eq!(object["spec"]["registryUrl"], "quay.io/automotive/cs9:bob");
    assert_eq!(
        object["spec"]["tags"],
        serde_json::json!(["10", "latest", "bob"])
    );
    let owners = object["metadata"]["managedFields"].as_array().unwrap();
    let owner_of_url: Vec<&str> = owners
        .iter()
        .filter(|m| m["fieldsV1"]["f:spec"].get("f:registryUrl").is_some())
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owner_of_url, ["bob"]);

    // Alice drops a target from her configuration: it is removed, since nobody else owns it.
    let alice_fewer = alice
        .replace(
            "    - {name: rpi4, verified: false, notes: \"boots, no CAN\"}\n",
            "",
        )
        .replace("quay.io/automotive/cs9:one", "quay.io/automotive/cs9:bob");
    server
        .kubectl_with_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            Some(&alice_fewer),
        )
        .success();
    let targets = get("one")["spec"]["metadata"]["targets"].clone();
    assert_eq!(
        targets,
        serde_json::json!([{"name": "qemu", "verified": true}])
    );

    // A plain edit is recorded as an Update by its writer and takes the field it changed.
    server
        .kubectl(&[
            "label",
            "cimg",
            "one",
            "-n",
            "ssa",
            "tier=silver",
            "--overwrite",
        ])
        .success();
    let object = get("one");
    assert!(
        managers(&object).contains(&("kubectl-label".to_string(), "Update".to_string())),
        "{:?}",
        managers(&object)
    );
    let err = server
        .kubectl_with_stdin(
            &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
            Some(&alice_fewer),
        )
        .failure();
    assert!(
        err.contains("conflict with \"kubectl-label\" using catalog.automotive.io/v1alpha1")
            && err.contains(".metadata.labels.tier"),
        "{err}"
    );
}

/// kubectl's migration from client-side to server-side apply (`kubectl apply` then
/// `kubectl apply --server-side`): an apply, an apply of the last-applied annotation alone, a
/// JSON patch rewriting managedFields with field sets of kubectl's own making (objects named
/// with `.`), then the apply again. Every step must be accepted, silently.
#[test]
fn client_side_apply_migrates_to_server_side_apply() {
    let server = Server::start();
    let manifest = image_yaml("migrate", "one", "cs9", "x86_64", "tier: gold");
    server
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest))
        .success();
    let output = server.kubectl_with_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&manifest),
    );
    assert!(output.ok && output.stderr.is_empty(), "{}", output.stderr);
    let object = get_with_managed_fields(&server, "migrate", "one");
    // As kube-apiserver leaves them: kubectl owns what it applies, kubectl-last-applied the
    // annotation; the client-side manager is gone.
    assert_eq!(
        managers(&object),
        [
            ("kubectl".to_string(), "Apply".to_string()),
            ("kubectl-last-applied".to_string(), "Apply".to_string())
        ]
    );
    let fields = &object["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:registryUrl"], serde_json::json!({}));
    assert!(fields["f:spec"].get(".").is_none(), "{fields}");
    assert_eq!(object["spec"]["registryUrl"], "quay.io/automotive/cs9:one");
    assert_eq!(object["spec"]["verificationInterval"], "30m");

    // An apply of part of an object (its labels) leaves the rest alone.
    let labels = "apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata:\n  name: one\n  namespace: migrate\n  labels: {team: os}\n";
    server
        .kubectl_with_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=labeler",
                "-f",
                "-",
            ],
            Some(labels),
        )
        .success();
    let out = server
        .kubectl(&["get", "cimg", "one", "-n", "migrate", "-o", "json"])
        .success();
    let object: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        object["metadata"]["labels"],
        serde_json::json!({"team": "os", "tier": "gold"})
    );
    assert_eq!(object["spec"]["registryUrl"], "quay.io/automotive/cs9:one");
}

/// fieldmanager's capmanagers.go: at most ten Update managers; the oldest fold into
/// `ancient-changes`.
#[test]
fn the_eleventh_update_manager_folds_the_oldest_into_ancient_changes() {
    let server = Server::start();
    server
        .kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(&image_yaml("cap", "one", "cs9", "x86_64", "")),
        )
        .success();
    // With kubectl-client-side-apply, eleven more: twelve Update managers in all.
    for i in 0..11 {
        server
            .kubectl(&[
                "label",
                "cimg",
                "one",
                "-n",
                "cap",
                &format!("l{i:02}=x"),
                &format!("--field-manager=m{i:02}"),
            ])
            .success();
    }
    let object = get_with_managed_fields(&server, "cap", "one");
    let entries = object["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "{entries:#?}");
    let ancient: Vec<&Value> = entries
        .iter()
        .filter(|e| e["manager"] == "ancient-changes")
        .collect();
    assert_eq!(ancient.len(), 1, "{entries:#?}");
    assert_eq!(ancient[0]["operation"], "Update");
    // The tenth label folded the two oldest (the creator, m00) into the bucket, the eleventh
    // folded m01 into it; the newest nine are there by name.
    let mut names: Vec<&str> = entries
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = vec!["ancient-changes".to_string()];
    expected.extend((2..11).map(|i| format!("m{i:02}")));
    assert_eq!(names, expected);
    let fields = &ancient[0]["fieldsV1"];
    let labels = &fields["f:metadata"]["f:labels"];
    assert!(
        labels.get("f:l00").is_some() && labels.get("f:l01").is_some(),
        "{}",
        ancient[0]
    );
    assert!(
        fields["f:spec"].get("f:registryUrl").is_some(),
        "the creator's fields: {}",
        ancient[0]
    );
}

#[test]
fn apply_requests_are_checked() {
    let server = Server::start();
    runtime().block_on(async {
        let http = server.http();
        let path = format!("{}/one", collection("ssa"));
        let apply = [("Content-Type", "application/apply-patch+yaml")];
        let config = "apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nspec: {registryUrl: quay.io/a/b:1, extra: 1}\n";
        let (code, _, body) = send(&http, "PATCH", &path, &apply, config).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("fieldManager"), "{body}");
        let with_manager = format!("{path}?fieldManager=ci&fieldValidation=Strict");
        let (code, _, body) = send(&http, "PATCH", &with_manager, &apply, config).await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("unknown field \\\"spec.extra\\\""), "{body}");
        // Warn (the default) drops the field and says so; the apply creates the object.
        let (code, headers, body) = send(&http, "PATCH", &format!("{path}?fieldManager=ci"), &apply, config).await;
        assert_eq!(code, 200, "{body}");
        assert!(headers["warning"].to_str().unwrap().contains("spec.extra"));
        let created: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(managers(&created), [("ci".to_string(), "Apply".to_string())]);
        assert!(created["spec"].get("extra").is_none());
        // force is for apply only.
        let (code, _, body) = send(&http, "PATCH", &format!("{path}?force=true"), &[("Content-Type", "application/merge-patch+json")], "{}").await;
        assert_eq!(code, 422, "{body}");
        // managedFields may not be applied.
        let managed = "apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata: {managedFields: [{manager: x}]}\n";
        let (code, _, _) = send(&http, "PATCH", &format!("{path}?fieldManager=ci"), &apply, managed).await;
        assert_eq!(code, 400);
        // A write that sends a single empty managedFields entry clears them.
        let clear = r#"{"metadata": {"managedFields": [{}]}}"#;
        let (code, _, body) = send(&http, "PATCH", &path, &[("Content-Type", "application/merge-patch+json")], clear).await;
        assert_eq!(code, 200, "{body}");
        let cleared: Value = serde_json::from_str(&body).unwrap();
        assert!(cleared["metadata"].get("managedFields").is_none(), "{body}");
    });
}

mod websocket {
    use futures::{SinkExt, StreamExt};
    use serde_json::Value;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::super::common::*;
    use super::collection;

    async fn next_json<S>(socket: &mut S) -> Value
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        loop {
            match socket.next().await.unwrap().unwrap() {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    #[test]
    fn a_websocket_watch_sees_events_answers_pings_and_closes_cleanly() {
        let server = Server::start();
        runtime().block_on(async {
            let http = server.http();
            let created = http
                .request(
                    "POST",
                    &collection("ws"),
                    "application/json",
                    &image_json("ws", "first", "cs9").to_string(),
                )
                .await;
            assert_eq!(created.0, 201);

            let url = format!("wss://{}{}?watch=true", server.address, collection("ws"));
            let mut request = url.as_str().into_client_request().unwrap();
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "base64.binary.k8s.io".parse().unwrap(),
            );
            let (mut socket, response) =
                tokio_tungstenite::client_async(request, admin_tls(&server).await)
                    .await
                    .unwrap();
            assert_eq!(response.status(), 101);
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                "base64.binary.k8s.io"
            );

            let event = next_json(&mut socket).await;
            assert_eq!(
                (
                    event["type"].as_str(),
                    event["object"]["metadata"]["name"].as_str()
                ),
                (Some("ADDED"), Some("first"))
            );
            let created = http
                .request(
                    "POST",
                    &collection("ws"),
                    "application/json",
                    &image_json("ws", "second", "cs9").to_string(),
                )
                .await;
            assert_eq!(created.0, 201);
            let event = next_json(&mut socket).await;
            assert_eq!(
                (
                    event["type"].as_str(),
                    event["object"]["metadata"]["name"].as_str()
                ),
                (Some("ADDED"), Some("second"))
            );

            socket
                .send(Message::Ping(b"are you there".to_vec().into()))
                .await
                .unwrap();
            match socket.next().await.unwrap().unwrap() {
                Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
                other => panic!("expected a pong, got {other:?}"),
            }
            socket.close(None).await.unwrap();

            // A watch that times out ends with a normal close frame.
            let url = format!(
                "wss://{}{}?watch=true&timeoutSeconds=1&resourceVersion={}",
                server.address,
                collection("ws"),
                created.1["metadata"]["resourceVersion"].as_str().unwrap()
            );
            let (mut socket, _) =
                tokio_tungstenite::client_async(url.as_str(), admin_tls(&server).await)
                    .await
                    .unwrap();
            match socket.next().await.unwrap().unwrap() {
                Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
                other => panic!("expected a close frame, got {other:?}"),
            }
        });
    }
}
