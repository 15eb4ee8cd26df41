//! Asking kube-apiserver: TokenReview for bearer tokens and SubjectAccessReview for every
//! request, answers cached for a TTL (k8s.io/apiserver's delegating token authenticator and
//! webhook authorizer, `authenticatorfactory` and `authorizerfactory`).

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use super::Attributes;
use super::cache::TtlCache;
use super::identity::Identity;
use crate::kube_errors::one_line;

/// Why a TokenReview or SubjectAccessReview got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(String);

impl From<String> for ReviewError {
    fn from(message: String) -> Self {
        ReviewError(message)
    }
}

#[derive(Clone, Debug)]
pub struct ReviewOptions {
    pub token_ttl: Duration,
    pub allow_ttl: Duration,
    pub deny_ttl: Duration,
    /// Audiences a token must be meant for; empty leaves it to kube-apiserver's default.
    pub audiences: Vec<String>,
}

/// kube-apiserver's answer to a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

pub struct Reviewer {
    client: kube::Client,
    options: ReviewOptions,
    tokens: TtlCache<[u8; 32], Option<Identity>>,
    decisions: TtlCache<String, Decision>,
}

impl Reviewer {
    pub fn new(client: kube::Client, options: ReviewOptions) -> Reviewer {
        Reviewer {
            client,
            options,
            tokens: TtlCache::new(),
            decisions: TtlCache::new(),
        }
    }

    /// Who a bearer token belongs to; None when kube-apiserver says it is not valid.
    pub async fn token(&self, token: &str) -> Result<Option<Identity>, ReviewError> {
        // Keyed by a hash, so no token is kept in memory longer than its request.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.tokens.get(&key) {
            return Ok(cached);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.options.audiences.is_empty())
                    .then(|| self.options.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview: {}", one_line(&e)))?;
        let status = answer.status.unwrap_or_default();
        let audience_ok = self.options.audiences.is_empty()
            || status
                .audiences
                .as_ref()
                .is_none_or(|granted| granted.iter().any(|a| self.options.audiences.contains(a)));
        let identity = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if audience_ok => Some(Identity {
                user: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }),
            _ => None,
        };
        self.tokens
            .insert(key, identity.clone(), self.options.token_ttl);
        Ok(identity)
    }

    /// Whether `identity` may do what `attributes` describe.
    pub async fn access(
        &self,
        identity: &Identity,
        attributes: &Attributes,
    ) -> Result<Decision, ReviewError> {
        let spec = spec(identity, attributes);
        let key = serde_json::to_string(&spec).expect("a review spec serialises");
        if let Some(cached) = self.decisions.get(&key) {
            return Ok(cached);
        }
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview: {}", one_line(&e)))?;
        let status = answer.status.unwrap_or_default();
        let decision = Decision {
            allowed: status.allowed && !status.denied.unwrap_or(false),
            reason: status.reason.unwrap_or_default(),
        };
        let ttl = if decision.allowed {
            self.options.allow_ttl
        } else {
            self.options.deny_ttl
        };
        self.decisions.insert(key, decision.clone(), ttl);
        Ok(decision)
    }
}

fn spec(identity: &Identity, attributes: &Attributes) -> SubjectAccessReviewSpec {
    let (resource_attributes, non_resource_attributes) = match attributes {
        Attributes::Resource {
            verb,
            group,
            version,
            resource,
            subresource,
            namespace,
            name,
        } => (
            Some(ResourceAttributes {
                verb: Some(verb.as_str().to_string()),
                group: Some(group.to_string()),
                version: Some(version.to_string()),
                resource: Some(resource.to_string()),
                subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
                namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                name: (!name.is_empty()).then(|| name.clone()),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Attributes::NonResource { verb, path } => (
            None,
            Some(NonResourceAttributes {
                verb: Some(verb.as_str().to_string()),
                path: Some(path.clone()),
            }),
        ),
    };
    SubjectAccessReviewSpec {
        user: Some(identity.user.clone()),
        uid: (!identity.uid.is_empty()).then(|| identity.uid.clone()),
        groups: Some(identity.groups.clone()),
        extra: (!identity.extra.is_empty()).then(|| identity.extra.clone()),
        resource_attributes,
        non_resource_attributes,
    }
}
