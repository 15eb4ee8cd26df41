//! Who is asking, and may they, as a server built on k8s.io/apiserver decides it: a front
//! proxy's headers (trusted only behind a request-header CA certificate with an allowed CN), a
//! client certificate of the client CA, or a bearer token (TokenReview); then a
//! SubjectAccessReview per request. Standalone mode trusts its own CA and allows everything.

mod cache;
pub mod config;
pub mod identity;
pub mod review;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode, header};
use rustls::pki_types::CertificateDer;

use self::config::{AuthConfig, RequestHeader};
use self::identity::{Identity, chain_verifies, from_certificate, from_headers};
use self::review::Reviewer;
use crate::api::status::ApiError;
use crate::api::types::{GROUP, PLURAL};
use crate::api::verb::Verb;
use crate::registry::SecretAccess;

/// What a request does, as authorization sees it (k8s.io/apiserver's authorizer.Attributes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: Verb,
        group: &'static str,
        version: &'static str,
        resource: &'static str,
        subresource: &'static str,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: Verb,
        path: String,
    },
}

impl Attributes {
    pub fn verb(&self) -> Verb {
        match self {
            Attributes::Resource { verb, .. } | Attributes::NonResource { verb, .. } => *verb,
        }
    }
}

pub struct Auth {
    /// None until the configuration is known (serve mode waits for the ConfigMap); numbered,
    /// so that what was verified against one configuration is not reused with the next.
    config: RwLock<Option<(u64, Arc<AuthConfig>)>>,
    /// kube-apiserver's reviews; None in standalone mode, which allows every authenticated user.
    reviewer: Option<Reviewer>,
    anonymous: bool,
}

impl Auth {
    /// Standalone: client certificates of `config`'s client CA, every request allowed.
    pub fn standalone(config: AuthConfig) -> Auth {
        Auth {
            config: RwLock::new(Some((1, Arc::new(config)))),
            reviewer: None,
            anonymous: false,
        }
    }

    /// In a cluster: configuration to come (see `config::follow_config_map`), reviews by
    /// kube-apiserver.
    pub fn delegated(reviewer: Reviewer, anonymous: bool) -> Auth {
        Auth {
            config: RwLock::new(None),
            reviewer: Some(reviewer),
            anonymous,
        }
    }

    pub fn set_config(&self, config: AuthConfig) {
        let mut current = self.config.write().expect("auth config lock");
        let generation = current.as_ref().map_or(1, |(generation, _)| generation + 1);
        *current = Some((generation, Arc::new(config)));
    }

    pub fn is_ready(&self) -> bool {
        self.config.read().expect("auth config lock").is_some()
    }

    fn current(&self) -> Option<(u64, Arc<AuthConfig>)> {
        self.config.read().expect("auth config lock").clone()
    }

    /// The identity of a request: its connection's TLS client certificate chain (unverified
    /// so far, what it verified against remembered in `verdicts`) and its headers. 401 when
    /// nothing authenticates it and anonymous requests are off.
    pub async fn authenticate(
        &self,
        chain: &[CertificateDer<'static>],
        verdicts: &ChainVerdicts,
        headers: &HeaderMap,
    ) -> Result<Identity, ApiError> {
        let (generation, config) = self.current().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the authentication configuration is not loaded yet",
            )
        })?;
        let verdict = verdicts.verdict(generation, &config, chain);
        if verdict.front_proxy
            && let Some(request_header) = &config.request_header
            && let Some(identity) = from_headers(headers, &request_header.names)
        {
            return Ok(identity.authenticated());
        }
        if let Some(identity) = verdict.client {
            return Ok(identity.authenticated());
        }
        if let (Some(reviewer), Some(token)) = (&self.reviewer, bearer_token(headers)) {
            match reviewer.token(token).await {
                Ok(Some(identity)) => return Ok(identity.authenticated()),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "token review failed"),
            }
        }
        if self.anonymous {
            return Ok(Identity {
                user: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
                ..Identity::default()
            });
        }
        Err(ApiError::unauthorized())
    }

    /// Whether `identity` may do what `attributes` describe.
    pub async fn allowed(
        &self,
        identity: &Identity,
        attributes: &Attributes,
    ) -> Result<bool, ApiError> {
        Ok(self.decide(identity, attributes).await?.0)
    }

    /// Allows the request or answers 403 in kube-apiserver's words.
    pub async fn authorize(
        &self,
        identity: &Identity,
        attributes: &Attributes,
        name_for_status: &str,
    ) -> Result<(), ApiError> {
        match self.decide(identity, attributes).await? {
            (true, _) => Ok(()),
            (false, reason) => Err(forbidden(identity, attributes, name_for_status, &reason)),
        }
    }

    async fn decide(
        &self,
        identity: &Identity,
        attributes: &Attributes,
    ) -> Result<(bool, String), ApiError> {
        let Some(reviewer) = &self.reviewer else {
            return Ok((true, String::new()));
        };
        let decision = reviewer
            .access(identity, attributes)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((decision.allowed, decision.reason))
    }
}

/// The capability a write needs to check a Secret reference: whether `identity` may `get` a
/// Secret, asked of the authorizer like any request.
pub fn secret_access(auth: Arc<Auth>, identity: Identity) -> SecretAccess {
    Arc::new(move |namespace: String, name: String| {
        let (auth, identity) = (auth.clone(), identity.clone());
        Box::pin(async move {
            let attributes = Attributes::Resource {
                verb: Verb::Get,
                group: "",
                version: "v1",
                resource: "secrets",
                subresource: "",
                namespace: namespace.clone(),
                name: name.clone(),
            };
            if auth.allowed(&identity, &attributes).await? {
                Ok(())
            } else {
                Err(secret_reference_forbidden(&identity, &namespace, &name))
            }
        })
    })
}

/// 403 for a write that references a Secret in another namespace its writer may not read.
fn secret_reference_forbidden(identity: &Identity, namespace: &str, name: &str) -> ApiError {
    let message = format!(
        "User {:?} cannot get resource \"secrets\" in API group \"\" in the namespace {namespace:?}",
        identity.user
    );
    let mut error = ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("{PLURAL}.{GROUP} is forbidden: spec.authSecretRef: {message}"),
    );
    error.details = Some(
        serde_json::json!({"group": GROUP, "kind": PLURAL, "causes": [
            {"reason": "FieldValueForbidden", "field": "spec.authSecretRef", "message": format!("{message} (secret {name:?})")}
        ]}),
    );
    error
}

/// What a connection's client certificate chain verified against, and who it names. Verifying
/// a chain means signature checks, which cost more than the rest of a GET, and parsing its
/// subject was 9% of a GET: both are done once per connection and configuration, and again
/// after a minute so that an expired certificate stops working.
#[derive(Default)]
pub struct ChainVerdicts(Mutex<Option<(u64, Instant, Verdict)>>);

#[derive(Clone, Debug, Default)]
struct Verdict {
    /// Verified against the request-header CA, with a CN allowed to vouch for users
    /// (k8s.io/apiserver `authentication/request/headerrequest`): the headers name the user.
    front_proxy: bool,
    /// The identity the certificate names, when it verified against the client CA.
    client: Option<Identity>,
}

const VERDICT_TTL: Duration = Duration::from_secs(60);

impl ChainVerdicts {
    fn verdict(
        &self,
        generation: u64,
        config: &AuthConfig,
        chain: &[CertificateDer<'static>],
    ) -> Verdict {
        let mut cached = self.0.lock().expect("verdict lock");
        match &*cached {
            Some((at_generation, at, verdict))
                if *at_generation == generation && at.elapsed() < VERDICT_TTL =>
            {
                verdict.clone()
            }
            _ => {
                let verifies = |verifier: &Arc<dyn rustls::server::danger::ClientCertVerifier>| {
                    chain_verifies(verifier.as_ref(), chain)
                };
                let verdict = Verdict {
                    front_proxy: config.request_header.as_ref().is_some_and(|rh| {
                        verifies(&rh.verifier) && front_proxy_allowed(rh, &chain[0])
                    }),
                    client: config
                        .client_ca
                        .as_ref()
                        .filter(|verifier| verifies(verifier))
                        .and_then(|_| from_certificate(&chain[0])),
                };
                *cached = Some((generation, Instant::now(), verdict.clone()));
                verdict
            }
        }
    }
}

/// Whether a front proxy's certificate (verified against the request-header CA) has a CN
/// allowed to vouch for users: any, when no names are configured.
fn front_proxy_allowed(request_header: &RequestHeader, leaf: &CertificateDer) -> bool {
    let Some((common_name, _)) = identity::subject(leaf) else {
        return false;
    };
    let allowed = request_header.allowed_names.is_empty()
        || request_header.allowed_names.contains(&common_name);
    if !allowed {
        tracing::debug!(%common_name, "front-proxy certificate with a CN that is not allowed");
    }
    allowed
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 403 as kube-apiserver words it (endpoints/handlers/responsewriters/errors.go).
fn forbidden(identity: &Identity, attributes: &Attributes, name: &str, reason: &str) -> ApiError {
    let user = &identity.user;
    let mut why = match attributes {
        Attributes::NonResource { verb, path } => {
            format!("User {user:?} cannot {verb} path {path:?}")
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let resource = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            if namespace.is_empty() {
                format!(
                    "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
                )
            } else {
                format!(
                    "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}"
                )
            }
        }
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    match attributes {
        Attributes::NonResource { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("forbidden: {why}"),
        ),
        Attributes::Resource { .. } => {
            let qualified = format!("{PLURAL}.{GROUP}");
            let subject = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} {name:?}")
            };
            let mut error = ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{subject} is forbidden: {why}"),
            );
            error.details = Some(serde_json::json!({"name": name, "group": GROUP, "kind": PLURAL}));
            error
        }
    }
}
