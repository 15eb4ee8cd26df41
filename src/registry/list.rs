//! Lists: which snapshot a list reads (resourceVersion, resourceVersionMatch, continue), and
//! reading it page by page. Items stay the stored bytes; nothing is decoded here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catalog_storage::{Item, ListOptions, ReadError};
use serde::{Deserialize, Serialize};

use super::{Registry, key, read_error};
use crate::api::selector::Selector;
use crate::api::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionMatch {
    NotOlderThan,
    Exact,
}

#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub namespace: Option<String>,
    pub selector: Selector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<u64>,
    pub resource_version_match: Option<RevisionMatch>,
}

/// Where a list is: the revision it reads at, the last key it returned, and how many objects
/// remain past it when that is known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    #[serde(rename = "rv")]
    pub revision: u64,
    #[serde(rename = "start")]
    pub after: Option<String>,
    #[serde(rename = "left", default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

pub struct ListResult {
    pub items: Vec<Item>,
    /// Where the next page starts, if anything remains.
    pub next: Option<ListCursor>,
}

impl ListResult {
    /// kube-apiserver's `remainingItemCount`: how many items the rest of the list holds, when
    /// known.
    pub fn remaining(&self) -> Option<u64> {
        self.next.as_ref().and_then(|next| next.remaining)
    }
}

const TOKEN_VERSION: &str = "catalog.automotive.io/continue/v1";

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    #[serde(flatten)]
    cursor: ListCursor,
}

impl ListCursor {
    pub fn token(&self) -> String {
        let token = Token {
            v: TOKEN_VERSION.into(),
            cursor: self.clone(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("a token serialises"))
    }

    fn parse(token: &str) -> Result<ListCursor, ApiError> {
        let invalid = || {
            ApiError::bad_request("continue key is not valid: it was not returned by this server")
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| invalid())?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if token.v != TOKEN_VERSION {
            return Err(invalid());
        }
        Ok(token.cursor)
    }
}

impl ListQuery {
    fn prefix(&self) -> String {
        self.namespace
            .as_deref()
            .map(|ns| key(ns, ""))
            .unwrap_or_default()
    }
}

impl Registry {
    /// Resolves where a list starts, as kube-apiserver defines resourceVersion semantics.
    pub fn start(&self, query: &ListQuery) -> Result<ListCursor, ApiError> {
        let current = self.store.revision();
        let requested = query.resource_version;
        if let Some(token) = &query.continue_token {
            if requested.is_some_and(|r| r != 0) || query.resource_version_match.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let mut cursor = ListCursor::parse(token)?;
            if cursor.revision == 0 {
                // An inconsistent continuation: the rest of the list as it is now.
                cursor.revision = current;
            }
            return Ok(cursor);
        }
        let revision = match (requested, query.resource_version_match) {
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            (None | Some(0), None) => current,
            (Some(0), Some(RevisionMatch::NotOlderThan)) => current,
            (Some(0), Some(RevisionMatch::Exact)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
            // Legacy semantics: a resourceVersion with a limit and no match reads exactly there.
            (Some(r), None) if query.limit.is_some() => r,
            (Some(r), Some(RevisionMatch::Exact)) => r,
            (Some(r), _) => {
                if r > current {
                    return Err(read_error(ReadError::Future {
                        requested: r,
                        current,
                    }));
                }
                current
            }
        };
        Ok(ListCursor {
            revision,
            ..ListCursor::default()
        })
    }

    /// One page of at most `limit` selected items from `cursor`.
    pub fn page(
        &self,
        query: &ListQuery,
        cursor: &ListCursor,
        limit: usize,
    ) -> Result<ListResult, ApiError> {
        let prefix = query.prefix();
        let index = query.selector.index();
        let options = ListOptions {
            prefix: &prefix,
            index: index.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
            after: cursor.after.as_deref(),
            limit: Some(limit),
            revision: Some(cursor.revision),
        };
        let selector = &query.selector;
        let page = self
            .store
            .list(&options, &mut |item| selector.matches(&item.indexes))
            .map_err(|e| match e {
                ReadError::Expired { .. } if query.continue_token.is_some() => {
                    expired_continue(cursor)
                }
                other => read_error(other),
            })?;
        let next = match page.more {
            false => None,
            true => Some(ListCursor {
                revision: page.revision,
                after: page
                    .items
                    .last()
                    .map(|i| i.key.clone())
                    .or(cursor.after.clone()),
                remaining: self.remaining(query, cursor, page.items.len())?,
            }),
        };
        Ok(ListResult {
            items: page.items,
            next,
        })
    }

    /// How many objects remain after a page of `served` from `cursor`. Known as kube-apiserver
    /// knows it, for lists without selectors: counted at the first page (from the live counts
    /// the store keeps), then carried in the continue token.
    fn remaining(
        &self,
        query: &ListQuery,
        cursor: &ListCursor,
        served: usize,
    ) -> Result<Option<u64>, ApiError> {
        if !query.selector.is_empty() {
            return Ok(None);
        }
        let before = match cursor.after {
            None => self
                .store
                .count(query.namespace.as_deref(), cursor.revision)
                .map_err(read_error)?,
            Some(_) => cursor.remaining,
        };
        Ok(before.map(|before| before.saturating_sub(served as u64)))
    }
}

/// 410 for a continue token whose snapshot is gone, carrying a token that continues
/// inconsistently from the same key, as kube-apiserver does.
fn expired_continue(cursor: &ListCursor) -> ApiError {
    let mut error = ApiError::gone(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list \
         without the continue parameter, or use the continue token in this response to retrieve the remainder of the \
         results. Continuing with the provided token results in an inconsistent list - objects that were created, \
         modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    );
    error.continue_token = Some(
        ListCursor {
            revision: 0,
            after: cursor.after.clone(),
            remaining: None,
        }
        .token(),
    );
    error
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    use super::ListCursor;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Fuzzing: a token this server wrote reads back as the same cursor.
        #[test]
        fn tokens_round_trip(
            revision in any::<u64>(),
            after in proptest::option::of(".{0,60}"),
            remaining in proptest::option::of(any::<u64>()),
        ) {
            let cursor = ListCursor { revision, after, remaining };
            prop_assert_eq!(ListCursor::parse(&cursor.token()).unwrap(), cursor);
        }

        /// Fuzzing: any other text, or any bytes in the token's encoding, is a 400.
        #[test]
        fn other_tokens_are_refused(
            text in ".{0,80}",
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            for token in [text, URL_SAFE_NO_PAD.encode(&bytes)] {
                if let Err(error) = ListCursor::parse(&token) {
                    prop_assert_eq!(error.code, http::StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}
