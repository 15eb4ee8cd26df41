//! What a commit's notification on the log's channel carries, and where a replica's listener
//! leaves it for the follower.
//!
//! The payload is the group's changes themselves when they fit in PostgreSQL's limit, so that
//! each follower applies them without reading them back from the log: at moderate write rates
//! (groups of one write) that read was one query per replica for every write, about as much of
//! PostgreSQL's CPU as the write itself (BENCHMARKS.md, sessions 14–16). A group that does not
//! fit, or is not all ASCII, notifies with an empty payload, and the followers read the log as
//! before; so does a payload a follower cannot decode, such as a bare revision from an earlier
//! version of this server during a rolling upgrade. (ASCII because the payload is text in the
//! database's encoding: in a LATIN1 database a character it lacks would fail the write itself,
//! where the objects' bytes, stored as `bytea`, never are converted.)
//!
//! Payload: the changes one after another, each its revision, commit time, key, value (`-` for
//! a deletion), number of index pairs and the pairs, every field written as `LENGTH:TEXT` with
//! LENGTH its byte length, so that any text (separators included) comes back as it went.

use std::fmt::Write;
use std::str::FromStr;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::committer::Replicated;

/// PostgreSQL refuses a payload of 8000 bytes or more (the documentation of `NOTIFY`).
const PAYLOAD_LIMIT: usize = 7_999;

/// The most changes a listener keeps for its follower; past them, the follower reads the log.
const PENDING_LIMIT: usize = 1_000;

/// The payload announcing `changes`: them, or an empty one when they do not fit or are not
/// ASCII text without NUL (which PostgreSQL's text cannot hold).
pub(crate) fn encode(changes: &[Replicated]) -> String {
    let mut payload = String::new();
    for change in changes {
        put(&mut payload, &change.revision.to_string());
        put(&mut payload, &change.committed_at_ms.to_string());
        put(&mut payload, &change.key);
        match change.value.as_deref().map(std::str::from_utf8) {
            None => payload.push('-'),
            Some(Ok(value)) => put(&mut payload, value),
            Some(Err(_)) => return String::new(),
        }
        put(&mut payload, &change.indexes.len().to_string());
        for (name, value) in &change.indexes {
            put(&mut payload, name);
            put(&mut payload, value);
        }
        if payload.len() > PAYLOAD_LIMIT {
            return String::new();
        }
    }
    if !payload.is_ascii() || payload.contains('\0') {
        return String::new();
    }
    payload
}

fn put(payload: &mut String, field: &str) {
    let _ = write!(payload, "{}:{field}", field.len());
}

/// The changes a payload announces; None for an empty payload or one that does not decode.
pub(crate) fn decode(payload: &str) -> Option<Vec<Replicated>> {
    let mut fields = Fields(payload);
    let mut changes = Vec::new();
    while !fields.0.is_empty() {
        let revision = fields.number()?;
        let committed_at_ms = fields.number()?;
        let key = fields.text()?.to_owned();
        let value = match fields.0.strip_prefix('-') {
            Some(rest) => {
                fields.0 = rest;
                None
            }
            None => Some(Bytes::copy_from_slice(fields.text()?.as_bytes())),
        };
        let pairs: usize = fields.number()?;
        let mut indexes = Vec::with_capacity(pairs.min(payload.len()));
        for _ in 0..pairs {
            indexes.push((fields.text()?.to_owned(), fields.text()?.to_owned()));
        }
        changes.push(Replicated {
            revision,
            committed_at_ms,
            key,
            value,
            indexes,
        });
    }
    (!changes.is_empty()).then_some(changes)
}

/// The rest of a payload, read a field at a time.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn text(&mut self) -> Option<&'a str> {
        let (length, rest) = self.0.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let text = rest.get(..length)?;
        self.0 = &rest[length..];
        Some(text)
    }

    fn number<T: FromStr>(&mut self) -> Option<T> {
        self.text()?.parse().ok()
    }
}

/// What a replica's listener has received and its follower not yet taken.
#[derive(Default)]
pub(crate) struct Inbox {
    woken: Notify,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    changes: Vec<Replicated>,
    /// A notification came that did not carry its changes (or too many waited): the follower
    /// must read the log.
    must_read: bool,
}

impl Inbox {
    /// Keeps what a notification announces, and wakes the follower.
    pub(crate) fn received(&self, payload: &str) {
        let announced = decode(payload);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match announced {
                Some(changes) if pending.changes.len() + changes.len() <= PENDING_LIMIT => {
                    pending.changes.extend(changes);
                }
                _ => {
                    pending.changes.clear();
                    pending.must_read = true;
                }
            }
        }
        self.woken.notify_one();
    }

    /// Waits for a notification not yet waited for (one that came meanwhile counts).
    pub(crate) async fn notified(&self) {
        self.woken.notified().await;
    }

    /// The changes announced since the last call, in the order of their commits, and whether
    /// the log must be read too (some were not announced).
    pub(crate) fn take(&self) -> (Vec<Replicated>, bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let must_read = std::mem::take(&mut pending.must_read);
        (std::mem::take(&mut pending.changes), must_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change(
        revision: u64,
        key: &str,
        value: Option<&str>,
        indexes: &[(&str, &str)],
    ) -> Replicated {
        Replicated {
            revision,
            committed_at_ms: 1_764_000_000_000 + revision,
            key: key.to_owned(),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            indexes: indexes
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_group_comes_back_as_it_went() {
        let group = vec![
            change(
                7,
                "ns/a",
                Some(r#"{"k":"v:1-"}"#),
                &[("spec.distro", "autosd"), ("x", "")],
            ),
            change(8, "ns/b:-2", None, &[]),
            change(9, "ns/c", Some(""), &[]),
        ];
        assert_eq!(decode(&encode(&group)), Some(group));
    }

    #[test]
    fn what_cannot_travel_as_text_is_not_announced() {
        let too_big = "x".repeat(PAYLOAD_LIMIT);
        assert_eq!(encode(&[change(1, "a", Some(&too_big), &[])]), "");
        let mut not_utf8 = change(1, "a", None, &[]);
        not_utf8.value = Some(Bytes::from_static(&[0xff, 0xfe]));
        assert_eq!(encode(&[not_utf8]), "");
        assert_eq!(encode(&[change(1, "a", Some("a\0b"), &[])]), "");
        assert_eq!(encode(&[change(1, "a", Some("é"), &[])]), "");
    }

    #[test]
    fn a_payload_that_does_not_decode_announces_nothing() {
        // An earlier server's payload, the last revision alone; an empty one; cut ones.
        for payload in ["1234", "", "1:7", "1:71:5", "1:71:51:a9:{", "1:71:51:a-1:3"] {
            assert_eq!(decode(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn an_inbox_asks_for_a_read_when_a_notification_did_not_carry_its_changes() {
        let inbox = Inbox::default();
        inbox.received(&encode(&[change(1, "a", Some("1"), &[])]));
        inbox.received(&encode(&[change(2, "b", Some("2"), &[])]));
        let (changes, must_read) = inbox.take();
        assert_eq!(
            changes.iter().map(|c| c.revision).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(!must_read);
        inbox.received("");
        inbox.received(&encode(&[change(4, "c", Some("4"), &[])]));
        let (changes, must_read) = inbox.take();
        assert_eq!(changes.len(), 1);
        assert!(must_read);
        assert_eq!(inbox.take(), (Vec::new(), false));
    }

    proptest! {
        #[test]
        fn any_text_comes_back(
            key in "[ -~]*",
            value in proptest::option::of("[ -~]*"),
            name in "[ -~]*",
            indexed in "[ -~]*",
            revision: u64,
        ) {
            let group = vec![change(revision, &key, value.as_deref(), &[(name.as_str(), indexed.as_str())])];
            let payload = encode(&group);
            prop_assume!(!payload.is_empty());
            prop_assert_eq!(decode(&payload), Some(group));
        }
    }
}
