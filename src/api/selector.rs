//! Label selectors (the whole Kubernetes grammar) and field selectors (`=`, `==`, `!=` on the
//! selectable fields), parsed once per request and matched against an object's index pairs.

use catalog_storage::IndexValues;

use crate::api::fields::{
    LABEL_PREFIX, SELECTABLE_FIELDS, index_answers, normalise_selector_value,
};
use crate::api::validate::{is_label_value, is_qualified_name};

use crate::api::status::ApiError;

/// Why a selector does not parse; a 400 when a request carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectorError(pub String);

impl From<SelectorError> for ApiError {
    fn from(error: SelectorError) -> ApiError {
        ApiError::bad_request(error.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A field selector term: `field=value` or `field!=value`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// The selection of a list or watch: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    labels: Vec<LabelRequirement>,
    pub fields: Vec<FieldTerm>,
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, SelectorError> {
        Ok(Selector {
            labels: labels.map(parse_labels).transpose()?.unwrap_or_default(),
            fields: fields.map(parse_fields).transpose()?.unwrap_or_default(),
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// The equality the store's index answers best: a field equality in preference order,
    /// else a label equality.
    pub fn index(&self) -> Option<(String, String)> {
        for field in SELECTABLE_FIELDS {
            if field == "metadata.namespace" {
                continue; // answered by the key prefix
            }
            let indexed =
                |t: &&FieldTerm| t.equal && t.field == field && index_answers(field, &t.value);
            if let Some(term) = self.fields.iter().find(indexed) {
                return Some((term.field.clone(), term.value.clone()));
            }
        }
        self.labels.iter().find_map(|r| match r {
            LabelRequirement::In(key, values) if values.len() == 1 => {
                Some((format!("{LABEL_PREFIX}{key}"), values[0].clone()))
            }
            _ => None,
        })
    }

    /// Whether an object with these index pairs is selected.
    pub fn matches(&self, pairs: &IndexValues) -> bool {
        let label = |key: &str| -> Option<&str> {
            pairs
                .iter()
                .find(|(n, _)| n.strip_prefix(LABEL_PREFIX) == Some(key))
                .map(|(_, v)| v)
        };
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|v| vs.iter().all(|x| x != v)),
            LabelRequirement::GreaterThan(k, n) => label(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelRequirement::LessThan(k, n) => label(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        });
        labels_ok
            && self.fields.iter().all(|t| {
                let any = pairs.contains(&t.field, &t.value);
                // A multi-valued field with no values compares like an empty one.
                let empty_match = t.value.is_empty() && pairs.values(&t.field).next().is_none();
                (any || empty_match) == t.equal
            })
    }
}

fn parse_fields(text: &str) -> Result<Vec<FieldTerm>, SelectorError> {
    let mut terms = Vec::new();
    for term in split_unescaped(text, ',') {
        if term.trim().is_empty() {
            continue;
        }
        let (field, value, equal) = if let Some(i) = find_unescaped(&term, "!=") {
            (&term[..i], &term[i + 2..], false)
        } else if let Some(i) = find_unescaped(&term, "==") {
            (&term[..i], &term[i + 2..], true)
        } else if let Some(i) = find_unescaped(&term, "=") {
            (&term[..i], &term[i + 1..], true)
        } else {
            return Err(SelectorError(format!(
                "invalid field selector {term:?}: expected an operator (=, ==, !=)"
            )));
        };
        let field = field.trim();
        if !SELECTABLE_FIELDS.contains(&field) {
            return Err(SelectorError(format!(
                "field label not supported: {field} (supported: {})",
                SELECTABLE_FIELDS.join(", ")
            )));
        }
        let value = unescape(value.trim());
        // Validation keeps every selectable field's values to printable ASCII, so any other
        // value could never match: say so rather than answer an empty list.
        if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(SelectorError(format!(
                "invalid field selector value for {field}: {value:?}: {c:?} never occurs in this field (values are printable ASCII)"
            )));
        }
        let value = normalise_selector_value(field, &value).to_string();
        terms.push(FieldTerm {
            field: field.to_string(),
            value,
            equal,
        });
    }
    Ok(terms)
}

/// Splits on `sep` where it is not escaped with a backslash (fields.ParseSelector's escaping).
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if c == sep && !escaped {
            parts.push(String::new());
            continue;
        }
        escaped = c == '\\' && !escaped;
        parts.last_mut().expect("never empty").push(c);
    }
    parts
}

/// The byte offset of the first `op` not preceded by a backslash. Offsets are taken at char
/// boundaries only: a selector may carry any UTF-8.
fn find_unescaped(text: &str, op: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    text.char_indices()
        .map(|(i, _)| i)
        .find(|&i| text[i..].starts_with(op) && (i == 0 || bytes[i - 1] != b'\\'))
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a label selector: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
/// `k>1`, `k<1`, joined by commas (outside parentheses).
fn parse_labels(text: &str) -> Result<Vec<LabelRequirement>, SelectorError> {
    split_terms(text)
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_requirement)
        .collect()
}

/// The comma-separated terms of a label selector; commas inside `( )` sets stay.
fn split_terms(text: &str) -> Vec<&str> {
    let mut depth = 0;
    let mut start = 0;
    let mut terms = Vec::new();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<LabelRequirement, SelectorError> {
    let bad = |why: &str| SelectorError(format!("unable to parse requirement {term:?}: {why}"));
    let key = |k: &str| {
        let k = k.trim();
        match is_qualified_name(k) {
            true => Ok(k.to_string()),
            false => Err(bad("invalid label key")),
        }
    };
    let value = |v: &str| {
        let v = v.trim();
        match is_label_value(v) {
            true => Ok(v.to_string()),
            false => Err(bad("invalid label value")),
        }
    };
    let set = |rest: &str| -> Result<Vec<String>, SelectorError> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| bad("expected a parenthesised set"))?;
        inner.split(',').map(value).collect()
    };
    let integer = |v: &str| v.trim().parse().map_err(|_| bad("expected an integer"));
    Ok(if let Some(k) = term.strip_prefix('!') {
        LabelRequirement::NotExists(key(k)?)
    } else if let Some((k, rest)) = split_word(term, " notin ") {
        LabelRequirement::NotIn(key(k)?, set(rest)?)
    } else if let Some((k, rest)) = split_word(term, " in ") {
        LabelRequirement::In(key(k)?, set(rest)?)
    } else if let Some((k, v)) = term.split_once("!=") {
        LabelRequirement::NotIn(key(k)?, vec![value(v)?])
    } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        LabelRequirement::In(key(k)?, vec![value(v)?])
    } else if let Some((k, v)) = term.split_once('>') {
        LabelRequirement::GreaterThan(key(k)?, integer(v)?)
    } else if let Some((k, v)) = term.split_once('<') {
        LabelRequirement::LessThan(key(k)?, integer(v)?)
    } else {
        LabelRequirement::Exists(key(term)?)
    })
}

fn split_word<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    term.find(word)
        .map(|i| (term[..i].trim(), &term[i + word.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> IndexValues {
        IndexValues::new(
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzzing: any text, and any text made of the grammar's own characters, is parsed or
        /// refused with a 400, never a panic; whatever parses can be matched.
        #[test]
        fn any_selector_is_parsed_or_refused(
            labels in proptest::prop_oneof![".{0,40}", "[a-z0-9=!,()<> \\\\./\u{e4}-]{0,40}"],
            fields in proptest::prop_oneof![".{0,40}", "(metadata\\.name|spec\\.tags|x)?[=!,\\\\a-z\u{e4}\u{1f600} ]{0,30}"],
        ) {
            match Selector::parse(Some(&labels), Some(&fields)) {
                Ok(selector) => {
                    let _ = selector.matches(&pairs(&[("label:env", "prod"), ("metadata.name", "a")]));
                    let _ = selector.index();
                }
                Err(error) => proptest::prop_assert!(!error.0.is_empty()),
            }
        }
    }

    #[test]
    fn field_selectors_refuse_what_never_matches() {
        for text in [
            "metadata.name=\u{e4}",
            "metadata.name==a\u{e4}b",
            "\u{e4}=x",
            "spec.tags!=a b",
        ] {
            Selector::parse(None, Some(text)).expect_err(text);
        }
        assert!(Selector::parse(None, Some("metadata.name=a")).is_ok());
    }

    #[test]
    fn label_selectors() {
        let object = pairs(&[
            ("label:env", "prod"),
            ("label:tier", "3"),
            ("metadata.name", "a"),
        ]);
        let cases = [
            ("env", true),
            ("!env", false),
            ("!missing", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env!=prod", false),
            ("env in (dev, prod)", true),
            ("env notin (prod)", false),
            ("missing notin (x)", true),
            ("tier>2", true),
            ("tier<3", false),
            ("env=prod,tier>5", false),
        ];
        for (text, want) in cases {
            let selector = Selector::parse(Some(text), None).unwrap();
            assert_eq!(selector.matches(&object), want, "{text}");
        }
        for bad in ["env in prod", "-bad=x", "env=-x", "tier>x"] {
            assert!(Selector::parse(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let object = pairs(&[
            ("metadata.name", "a"),
            ("spec.tags", "10"),
            ("spec.tags", "latest"),
            ("spec.metadata.architecture", "arm64"),
            ("spec.digest", ""),
        ]);
        let cases = [
            ("metadata.name=a", true),
            ("metadata.name!=a", false),
            ("spec.tags=latest", true),
            ("spec.tags==10", true),
            ("spec.tags!=latest", false),
            ("spec.metadata.architecture=aarch64", true),
            ("spec.digest=", true),
            ("spec.metadata.targets=", true),
            ("metadata.name=a,spec.tags=x", false),
        ];
        for (text, want) in cases {
            let selector = Selector::parse(None, Some(text)).unwrap();
            assert_eq!(selector.matches(&object), want, "{text}");
        }
        let error = Selector::parse(None, Some("spec.foo=x")).unwrap_err();
        assert!(
            error.0.contains("spec.metadata.distro"),
            "lists the supported fields: {}",
            error.0
        );
    }

    #[test]
    fn the_index_is_the_most_selective_equality() {
        let selector = Selector::parse(
            Some("app=x"),
            Some("status.phase=Failed,spec.metadata.distro=cs9"),
        )
        .unwrap();
        assert_eq!(
            selector.index(),
            Some(("spec.metadata.distro".into(), "cs9".into()))
        );
        let selector = Selector::parse(Some("app=x"), Some("status.phase!=Failed")).unwrap();
        assert_eq!(selector.index(), Some(("label:app".into(), "x".into())));
        // Objects without tags are not in the spec.tags index, so "" cannot be looked up there.
        let selector = Selector::parse(None, Some("spec.tags=,status.phase=Failed")).unwrap();
        assert_eq!(
            selector.index(),
            Some(("status.phase".into(), "Failed".into()))
        );
    }
}
