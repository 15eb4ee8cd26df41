//! The Table kubectl prints: NAME, REGISTRY, ARCHITECTURE, DISTRO, PHASE, AGE, and with
//! `-o wide` (priority 1) TARGETS, FORMAT, DIGEST. Cells are computed by the server, AGE as
//! kube-apiserver's HumanDuration.

use std::borrow::Cow;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `columnDefinitions` of every Table we serve.
pub fn column_definitions() -> Value {
    let column = |name: &str, kind: &str, format: &str, description: &str, priority: u8| json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority});
    json!([
        column(
            "Name",
            "string",
            "name",
            "Name must be unique within a namespace.",
            0
        ),
        column(
            "Registry",
            "string",
            "",
            "Image reference in its OCI registry.",
            0
        ),
        column(
            "Architecture",
            "string",
            "",
            "CPU architecture the image is built for.",
            0
        ),
        column(
            "Distro",
            "string",
            "",
            "Distribution the image is built from.",
            0
        ),
        column(
            "Phase",
            "string",
            "",
            "Result of the last verification against the registry.",
            0
        ),
        column("Age", "date", "", "Time since the entry was created.", 0),
        column(
            "Targets",
            "string",
            "",
            "Hardware targets; a * marks the verified ones.",
            1
        ),
        column("Format", "string", "", "Export format.", 1),
        column(
            "Digest",
            "string",
            "",
            "Resolved digest, or the pinned one.",
            1
        ),
    ])
}

/// What a row shows of an object, read from its stored JSON without building the object:
/// a page of 500 rows is what `kubectl get` asks for, page after page.
#[derive(Deserialize)]
pub struct RowFields<'a> {
    #[serde(borrow)]
    metadata: RowMetadata<'a>,
    #[serde(borrow)]
    spec: RowSpec<'a>,
    #[serde(borrow, default)]
    status: Option<RowStatus<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowMetadata<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    creation_timestamp: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowSpec<'a> {
    #[serde(borrow)]
    registry_url: Cow<'a, str>,
    #[serde(borrow, default)]
    digest: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<RowImage<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowImage<'a> {
    #[serde(borrow, default)]
    architecture: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    distro: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    export_format: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    targets: Vec<RowTarget<'a>>,
}

#[derive(Deserialize)]
struct RowTarget<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowStatus<'a> {
    #[serde(borrow, default)]
    phase: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    registry_metadata: Option<RowRegistry<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RowRegistry<'a> {
    #[serde(borrow, default)]
    resolved_digest: Option<Cow<'a, str>>,
}

/// The cells of one row, in the order of [`column_definitions`].
pub fn cells(row: &RowFields, now: Timestamp) -> [String; 9] {
    let text = |v: &Option<Cow<str>>| v.as_deref().unwrap_or("").to_string();
    let image = row.spec.metadata.as_ref();
    let status = row.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let age = match row
        .metadata
        .creation_timestamp
        .as_deref()
        .map(str::parse::<Timestamp>)
    {
        Some(Ok(created)) => human_duration(now.duration_since(created)),
        _ => "<unknown>".to_string(),
    };
    let targets = image.map_or(String::new(), |m| {
        m.targets
            .iter()
            .map(|t| match t.verified {
                true => format!("{}*", t.name),
                false => t.name.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let digest = status
        .and_then(|s| s.registry_metadata.as_ref())
        .and_then(|r| r.resolved_digest.as_ref())
        .or(row.spec.digest.as_ref());
    [
        text(&row.metadata.name),
        row.spec.registry_url.to_string(),
        image.map_or(String::new(), |m| text(&m.architecture)),
        image.map_or(String::new(), |m| text(&m.distro)),
        phase.to_string(),
        age,
        targets,
        image.map_or(String::new(), |m| text(&m.export_format)),
        digest.map_or(String::new(), |d| d.to_string()),
    ]
}

pub fn human_duration(elapsed: jiff::SignedDuration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let (days, years) = (hours / 24, hours / (24 * 365));
    let pair = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 => pair(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => pair(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => pair(days, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 => pair(years, "y", days % 365, "d"),
        _ => format!("{years}y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kube_apiserver() {
        let cases = [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (7200, "120m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(jiff::SignedDuration::from_secs(seconds)),
                want,
                "{seconds}s"
            );
        }
    }
}
