//! Identities, and the two ways a TLS client certificate yields one: directly (user = CN,
//! groups = O, k8s.io/apiserver `authentication/request/x509`), or as a front proxy vouching
//! for the user named in its request headers (`authentication/request/headerrequest`).

use std::collections::BTreeMap;

use http::HeaderMap;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Every authenticated identity is also in this group.
pub const AUTHENTICATED: &str = "system:authenticated";

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// Adds `system:authenticated`, as kube-apiserver's authenticated group adder does.
    pub fn authenticated(mut self) -> Identity {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }
}

/// Whether `chain` (leaf first) verifies against the CA bundle behind `verifier` now.
pub fn chain_verifies(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .is_ok()
}

/// The subject of a certificate: its common name and organizations.
pub fn subject(certificate: &CertificateDer) -> Option<(String, Vec<String>)> {
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    let subject = parsed.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((common_name, organizations))
}

/// The identity of a verified client certificate: user = CN, groups = O. None without a CN.
pub fn from_certificate(leaf: &CertificateDer) -> Option<Identity> {
    let (user, groups) = subject(leaf)?;
    (!user.is_empty()).then(|| Identity {
        user,
        groups,
        ..Identity::default()
    })
}

/// Which headers a front proxy names the user in (ConfigMap keys `requestheader-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderNames {
    pub username: Vec<String>,
    pub uid: Vec<String>,
    pub group: Vec<String>,
    pub extra_prefix: Vec<String>,
}

/// The identity a front proxy's headers name. None when no username header has a value.
pub fn from_headers(headers: &HeaderMap, names: &RequestHeaderNames) -> Option<Identity> {
    let first = |candidates: &[String]| {
        candidates.iter().find_map(|name| {
            headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
    };
    let user = first(&names.username)?;
    let groups = names
        .group
        .iter()
        .flat_map(|name| headers.get_all(name.as_str()).iter())
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = names
            .extra_prefix
            .iter()
            .find_map(|prefix| strip_prefix_ignore_case(name.as_str(), prefix))
        else {
            continue;
        };
        let key = percent_decode(key).to_lowercase();
        if let Ok(value) = value.to_str() {
            extra.entry(key).or_default().push(value.to_string());
        }
    }
    Some(Identity {
        user,
        uid: first(&names.uid).unwrap_or_default(),
        groups,
        extra,
    })
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// Extra keys travel %-escaped in header names (kube-aggregator escapes them so that keys such
/// as `scopes.authorization.openshift.io` survive as header names).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_proxy_headers_name_user_groups_uid_and_extra() {
        let names = RequestHeaderNames {
            username: vec!["X-Remote-User".into()],
            uid: vec!["X-Remote-Uid".into()],
            group: vec!["X-Remote-Group".into()],
            extra_prefix: vec!["X-Remote-Extra-".into()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "alice".parse().unwrap());
        headers.insert("x-remote-uid", "u-1".parse().unwrap());
        headers.append("x-remote-group", "dev".parse().unwrap());
        headers.append("x-remote-group", "ops".parse().unwrap());
        headers.append(
            "x-remote-extra-scopes.authorization.openshift.io",
            "user:full".parse().unwrap(),
        );
        headers.append("x-remote-extra-acme.com%2fproject", "p1".parse().unwrap());
        let identity = from_headers(&headers, &names).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.uid, "u-1");
        assert_eq!(identity.groups, ["dev", "ops"]);
        assert_eq!(identity.extra["acme.com/project"], ["p1"]);
        assert_eq!(
            identity.extra["scopes.authorization.openshift.io"],
            ["user:full"]
        );
        assert!(from_headers(&HeaderMap::new(), &names).is_none());
    }
}
