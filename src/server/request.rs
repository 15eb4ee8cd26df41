//! What a request is about, from its path alone: which document or which CatalogImage(s).

use http::Method;

use crate::api::types::{GROUP, PLURAL, VERSION};
use crate::api::verb::Verb;
use crate::auth::Attributes;
use crate::registry::Subresource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Health(&'static str),
    Version,
    Metrics,
    GroupList,
    Group,
    ResourceList,
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3,
    /// `namespace` is `None` for the cluster-wide collection.
    Collection {
        namespace: Option<String>,
    },
    Object {
        namespace: String,
        name: String,
        subresource: Subresource,
    },
    Unknown,
}

/// The target of a request path. Each segment is percent-decoded once, after splitting, so an
/// escaped `/` stays inside its segment (and fails validation there) instead of moving the
/// request to another route; a segment that is not UTF-8 once decoded matches nothing.
pub fn target(path: &str) -> Target {
    let decoded: Option<Vec<String>> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect();
    let Some(decoded) = decoded else {
        return Target::Unknown;
    };
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["healthz"] => Target::Health("healthz"),
        ["livez"] => Target::Health("livez"),
        ["readyz"] => Target::Health("readyz"),
        ["version"] => Target::Version,
        ["metrics"] => Target::Metrics,
        ["apis"] => Target::GroupList,
        ["apis", g] if *g == GROUP => Target::Group,
        ["apis", g, v] if *g == GROUP && *v == VERSION => Target::ResourceList,
        ["openapi", "v2"] => Target::OpenApiV2,
        ["openapi", "v3"] => Target::OpenApiV3Root,
        ["openapi", "v3", "apis", g, v] if *g == GROUP && *v == VERSION => Target::OpenApiV3,
        ["apis", g, v, rest @ ..] if *g == GROUP && *v == VERSION => match rest {
            [r] if *r == PLURAL => Target::Collection { namespace: None },
            ["namespaces", ns, r] if *r == PLURAL && !ns.is_empty() => Target::Collection {
                namespace: Some(ns.to_string()),
            },
            ["namespaces", ns, r, name] if *r == PLURAL && !name.is_empty() => Target::Object {
                namespace: ns.to_string(),
                name: name.to_string(),
                subresource: Subresource::Main,
            },
            ["namespaces", ns, r, name, "status"] if *r == PLURAL => Target::Object {
                namespace: ns.to_string(),
                name: name.to_string(),
                subresource: Subresource::Status,
            },
            _ => Target::Unknown,
        },
        _ => Target::Unknown,
    }
}

/// The Kubernetes verb of a request on a collection or object, as authorization would see it.
fn verb(method: &Method, target: &Target, watch: bool) -> Verb {
    match (method, target) {
        (&Method::GET, Target::Collection { .. }) if watch => Verb::Watch,
        (&Method::GET, Target::Collection { .. }) => Verb::List,
        (&Method::GET, _) => Verb::Get,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => Verb::Patch,
        (&Method::DELETE, Target::Collection { .. }) => Verb::DeleteCollection,
        (&Method::DELETE, _) => Verb::Delete,
        _ => Verb::Unknown,
    }
}

/// What authorization is asked about a request, and the object name a 403 names.
pub fn attributes<'a>(
    method: &Method,
    path: &str,
    target: &'a Target,
    watch: bool,
) -> (Attributes, &'a str) {
    let resource = |namespace: &str, name: &str, subresource| Attributes::Resource {
        verb: verb(method, target, watch),
        group: GROUP,
        version: VERSION,
        resource: PLURAL,
        subresource,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match target {
        Target::Collection { namespace } => {
            (resource(namespace.as_deref().unwrap_or(""), "", ""), "")
        }
        Target::Object {
            namespace,
            name,
            subresource,
        } => {
            let subresource = match subresource {
                Subresource::Main => "",
                Subresource::Status => "status",
            };
            (resource(namespace, name, subresource), name)
        }
        _ => (
            Attributes::NonResource {
                verb: non_resource_verb(method),
                path: path.to_string(),
            },
            "",
        ),
    }
}

/// The verb of a request for a path that is not a resource: the lowercased HTTP method.
fn non_resource_verb(method: &Method) -> Verb {
    match *method {
        Method::GET => Verb::Get,
        Method::HEAD => Verb::Head,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::PATCH => Verb::Patch,
        Method::DELETE => Verb::Delete,
        Method::OPTIONS => Verb::Options,
        _ => Verb::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let base = "/apis/catalog.automotive.io/v1alpha1";
        assert_eq!(
            target(&format!("{base}/catalogimages")),
            Target::Collection { namespace: None }
        );
        assert_eq!(
            target(&format!("{base}/namespaces/a/catalogimages")),
            Target::Collection {
                namespace: Some("a".into())
            }
        );
        assert_eq!(
            target(&format!("{base}/namespaces/a/catalogimages/x/status")),
            Target::Object {
                namespace: "a".into(),
                name: "x".into(),
                subresource: Subresource::Status
            }
        );
        assert_eq!(
            target(&format!("{base}/namespaces/a/catalogimages/x/scale")),
            Target::Unknown
        );
        assert_eq!(
            target(&format!("{base}/namespaces/a/other")),
            Target::Unknown
        );
        assert_eq!(
            target(&format!("{base}/namespaces/a%2Fb/catalogimages/%2e%2e")),
            Target::Object {
                namespace: "a/b".into(),
                name: "..".into(),
                subresource: Subresource::Main
            }
        );
        assert_eq!(
            target(&format!("{base}/namespaces/%ff/catalogimages")),
            Target::Unknown
        );
        assert_eq!(target("/apis/catalog.automotive.io"), Target::Group);
        assert_eq!(target("/api"), Target::Unknown);
        assert_eq!(
            target("/openapi/v3/apis/catalog.automotive.io/v1alpha1"),
            Target::OpenApiV3
        );
        assert_eq!(
            verb(&Method::GET, &Target::Collection { namespace: None }, true),
            Verb::Watch
        );
    }
}
