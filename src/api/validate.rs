//! Defaulting and validation of a CatalogImage, as kube-apiserver does for a CRD's schema:
//! every problem is reported as a cause naming its field, all at once.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::types::{CatalogImage, CatalogImageSpec, CatalogImageStatus, ImageMetadata};

/// One thing wrong with an object, in the shape of a metav1.StatusCause.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {why}"),
        }
    }

    fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value:?}"),
        }
    }
}

pub const DEFAULT_VERIFICATION_INTERVAL: &str = "1h";
const MIN_VERIFICATION_INTERVAL: Duration = Duration::from_secs(60);

/// Fills in the defaults of the contract.
pub fn default(image: &mut CatalogImage) {
    let spec = &mut image.spec;
    unset_if_empty(&mut spec.builder_image);
    if let Some(secret) = &mut spec.auth_secret_ref {
        unset_if_empty(&mut secret.namespace);
    }
    spec.verification_interval
        .get_or_insert_with(|| DEFAULT_VERIFICATION_INTERVAL.into());
    if let Some(metadata) = &mut spec.metadata {
        for text in [
            &mut metadata.architecture,
            &mut metadata.os,
            &mut metadata.variant,
            &mut metadata.distro,
            &mut metadata.distro_version,
            &mut metadata.export_format,
        ] {
            unset_if_empty(text);
        }
        for target in &mut metadata.targets {
            unset_if_empty(&mut target.notes);
        }
        metadata.os.get_or_insert_with(|| "linux".into());
    }
}

/// An empty optional string means unset: the automotive-dev-operator's CRD accepted "" in
/// these fields (they have no pattern there), and generators write `variant: ""` for images
/// without a CPU variant.
fn unset_if_empty(value: &mut Option<String>) {
    if value.as_deref() == Some("") {
        *value = None;
    }
}

/// The causes that make `image` invalid; empty when it is valid.
pub fn validate(image: &CatalogImage) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_metadata(&image.metadata, &mut causes);
    validate_spec(&image.spec, &mut causes);
    if let Some(metadata) = &image.spec.metadata {
        validate_image_metadata(metadata, &mut causes);
    }
    if let Some(status) = &image.status {
        validate_status(status, &mut causes);
    }
    causes
}

fn validate_metadata(meta: &ObjectMeta, causes: &mut Vec<Cause>) {
    match meta.name.as_deref() {
        None | Some("") => causes.push(Cause::required("metadata.name")),
        Some(name) => check(
            causes,
            "metadata.name",
            name,
            is_dns_subdomain,
            DNS_SUBDOMAIN,
        ),
    }
    // The namespace comes from the request path: kube-apiserver's ValidateObjectMeta checks
    // it as a DNS-1123 label.
    match meta.namespace.as_deref() {
        Some(namespace) if namespace.len() > 63 => causes.push(Cause::invalid(
            "metadata.namespace",
            namespace,
            "must be no more than 63 characters",
        )),
        Some(namespace) => check(
            causes,
            "metadata.namespace",
            namespace,
            is_dns_label,
            DNS_LABEL,
        ),
        None => {}
    }
    for (key, value) in meta.labels.iter().flatten() {
        check(
            causes,
            "metadata.labels",
            key,
            is_qualified_name,
            QUALIFIED_NAME,
        );
        check(
            causes,
            "metadata.labels",
            value,
            is_label_value,
            LABEL_VALUE,
        );
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        check(
            causes,
            "metadata.annotations",
            key,
            is_qualified_name,
            QUALIFIED_NAME,
        );
    }
}

fn validate_spec(spec: &CatalogImageSpec, causes: &mut Vec<Cause>) {
    if spec.registry_url.is_empty() {
        causes.push(Cause::required("spec.registryUrl"));
    } else {
        check(
            causes,
            "spec.registryUrl",
            &spec.registry_url,
            is_image_reference,
            IMAGE_REFERENCE,
        );
    }
    if let Some(digest) = &spec.digest {
        check(causes, "spec.digest", digest, is_digest, DIGEST);
    }
    for (i, tag) in spec.tags.iter().enumerate() {
        check(causes, &format!("spec.tags[{i}]"), tag, is_tag, TAG);
    }
    if let Some(secret) = &spec.auth_secret_ref {
        check(
            causes,
            "spec.authSecretRef.name",
            &secret.name,
            is_dns_subdomain,
            DNS_SUBDOMAIN,
        );
        if let Some(namespace) = &secret.namespace {
            check(
                causes,
                "spec.authSecretRef.namespace",
                namespace,
                is_dns_label,
                DNS_LABEL,
            );
        }
    }
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        let field = format!("spec.imagePullSecrets[{i}].name");
        check(
            causes,
            &field,
            &secret.name,
            is_dns_subdomain,
            DNS_SUBDOMAIN,
        );
    }
    if let Some(interval) = &spec.verification_interval {
        match parse_go_duration(interval) {
            None => causes.push(Cause::invalid(
                "spec.verificationInterval",
                interval,
                GO_DURATION,
            )),
            Some(d) if d < MIN_VERIFICATION_INTERVAL => causes.push(Cause::invalid(
                "spec.verificationInterval",
                interval,
                "must be at least 1m",
            )),
            Some(_) => {}
        }
    }
}

fn validate_image_metadata(metadata: &ImageMetadata, causes: &mut Vec<Cause>) {
    let tokens = [
        ("spec.metadata.architecture", &metadata.architecture),
        ("spec.metadata.os", &metadata.os),
        ("spec.metadata.variant", &metadata.variant),
        ("spec.metadata.distro", &metadata.distro),
        ("spec.metadata.distroVersion", &metadata.distro_version),
        ("spec.metadata.exportFormat", &metadata.export_format),
    ];
    for (field, value) in tokens {
        if let Some(value) = value {
            check(causes, field, value, is_token, TOKEN);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, target) in metadata.targets.iter().enumerate() {
        let field = format!("spec.metadata.targets[{i}].name");
        if target.name.is_empty() {
            causes.push(Cause::required(field));
        } else if !seen.insert(&target.name) {
            causes.push(Cause::duplicate(field, &target.name));
        } else {
            check(causes, &field, &target.name, is_token, TOKEN);
        }
    }
}

fn validate_status(status: &CatalogImageStatus, causes: &mut Vec<Cause>) {
    for (i, condition) in status.conditions.iter().enumerate() {
        if condition.type_.is_empty() {
            causes.push(Cause::required(format!("status.conditions[{i}].type")));
        }
        if !["True", "False", "Unknown"].contains(&condition.status.as_str()) {
            let why = "supported values: \"True\", \"False\", \"Unknown\"";
            causes.push(Cause::invalid(
                format!("status.conditions[{i}].status"),
                &condition.status,
                why,
            ));
        }
    }
    if let Some(failures) = status.verification_failures.filter(|f| *f < 0) {
        let why = "must be greater than or equal to 0";
        causes.push(Cause::invalid(
            "status.verificationFailures",
            &failures.to_string(),
            why,
        ));
    }
}

fn check(causes: &mut Vec<Cause>, field: &str, value: &str, valid: fn(&str) -> bool, rule: &str) {
    if !valid(value) {
        causes.push(Cause::invalid(field, value, rule));
    }
}

const DNS_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const QUALIFIED_NAME: &str = "must be an optional DNS subdomain prefix and '/', then a name of up to 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of up to 63 alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const IMAGE_REFERENCE: &str =
    "must be an image reference host[:port]/path with a :tag or an @sha256:<64 hex> digest";
const DIGEST: &str = "must be sha256: followed by 64 lowercase hexadecimal characters";
const TAG: &str = "a tag must be up to 128 characters: letters, digits, '_', '.' or '-', not starting with '.' or '-'";
const TOKEN: &str = "must consist of alphanumeric characters, '-', '_' or '.', up to 63, starting with an alphanumeric character";
const GO_DURATION: &str = "must be a duration such as 90s, 30m or 1h30m";

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum_lower(c) || c == '-')
        && s.starts_with(alnum_lower)
        && s.ends_with(alnum_lower)
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_name_part(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

fn is_token(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn is_tag(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    !s.is_empty() && s.len() <= 128 && s.chars().all(ok) && !s.starts_with(['.', '-'])
}

/// `host[:port]/path(:tag|@sha256:<hex>)`, following the distribution reference grammar.
fn is_image_reference(s: &str) -> bool {
    let (name, tag_ok) = match s.split_once('@') {
        Some((name, digest)) => (name, is_digest(digest)),
        None => match s.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, is_tag(tag)),
            _ => return false,
        },
    };
    // A name may also carry a tag before the digest (name:tag@sha256:...).
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') && s.contains('@') && is_tag(tag) => n,
        _ => name,
    };
    let Some((host, path)) = name.split_once('/') else {
        return false;
    };
    let host_ok = match host.rsplit_once(':') {
        Some((h, port)) => {
            !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && is_host(h)
        }
        None => is_host(host),
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(alnum_lower)
            && c.ends_with(alnum_lower)
            && c.chars()
                .all(|ch| alnum_lower(ch) || matches!(ch, '.' | '_' | '-'))
    };
    tag_ok && host_ok && path.split('/').all(component_ok)
}

fn is_host(h: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !h.is_empty() && h.split('.').all(label)
}

/// Go's time.ParseDuration grammar: a sequence of decimal numbers with units, e.g. 1h30m, 1.5s.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for good in [
            "quay.io/automotive/autosd:10-qemu",
            "127.0.0.1:5000/repo:latest",
            "localhost:5000/a/b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "image-registry.openshift-image-registry.svc:5000/ns/img:v1.2",
            "quay.io/a/b:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "autosd",
            "quay.io/autosd",
            "quay.io/Upper:tag",
            "quay.io/a:",
            "quay.io/a@sha256:12",
            ":x/y:z",
            "quay.io//a:b",
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }

    #[test]
    fn go_durations() {
        let cases = [
            ("90s", Some(90)),
            ("1h30m", Some(5400)),
            ("30m", Some(1800)),
            ("1.5h", Some(5400)),
            ("0", Some(0)),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_secs()),
                seconds,
                "{text}"
            );
        }
        for bad in ["", "1", "1d", "-1m", "m", "1h30", "abc"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns_subdomain("autosd10-qemu-arm64"));
        assert!(!is_dns_subdomain("Upper"));
        assert!(!is_dns_subdomain("-x"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }
}
