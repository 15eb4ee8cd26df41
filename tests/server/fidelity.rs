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
        let yaml = [("Content-Type", "application/yaml"), ("Accept", "application/yaml")];
        let (code, headers, body) = send(&http, "POST", &collection("yaml"), &yaml, &manifest).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(headers["content-type"], "application/yaml");
        let created: Value = serde_yaml_ng::from_str(&body).unwrap();
        assert_eq!(created["spec"]["metadata"]["distro"], "cs9");

        // The YAML of a get is the JSON of the same get, keys sorted.
        let path = format!("{}/one", collection("yaml"));
        let accept_yaml = [("Accept", "application/yaml")];
        let (code, _, body) = send(&http, "GET", &path, &accept_yaml, "").await;
        assert_eq!(code, 200);
        assert!(body.starts_with("apiVersion: catalog.automotive.io/v1alpha1\nkind: CatalogImage\nmetadata:\n"), "{body}");
        let (_, _, json) = send(&http, "GET", &path, &[], "").await;
        assert_eq!(serde_yaml_ng::from_str::<Value>(&body).unwrap(), serde_json::from_str::<Value>(&json).unwrap());

        let (code, _, body) = send(&http, "GET", &collection("yaml"), &accept_yaml, "").await;
        assert_eq!(code, 200);
        let list: Value = serde_yaml_ng::from_str(&body).unwrap();
        assert_eq!(list["kind"], "CatalogImageList");
        assert_eq!(list["items"][0]["metadata"]["name"], "one");

        // Errors come back as a Status in YAML too.
        let (code, headers, body) = send(&http, "GET", &format!("{}/none", collection("yaml")), &accept_yaml, "").await;
        assert_eq!((code, &headers["content-type"]), (404, &"application/yaml".parse().unwrap()));
        let status: Value = serde_yaml_ng::from_str(&body).unwrap();
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("NotFound")));

        // A watch has no YAML form (kube-apiserver has no YAML stream serializer): 406, unless JSON is also acceptable.
        let watch = format!("{}?watch=true&timeoutSeconds=1", collection("yaml"));
        let (code, _, _) = send(&http, "GET", &watch, &accept_yaml, "").await;
        assert_eq!(code, 406);
        let (code, _, body) = send(&http, "GET", &watch, &[("Accept", "application/yaml, application/json")], "").await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""type":"ADDED""#), "{body}");

        // Bad YAML is a 400 Status.
        let (code, _, body) = send(&http, "POST", &collection("yaml"), &[("Content-Type", "application/yaml")], "metadata: [unclosed").await;
        assert_eq!(code, 400, "{body}");
    });
}
