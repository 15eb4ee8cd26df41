//! The Table kubectl prints: NAME, REGISTRY, ARCHITECTURE, DISTRO, PHASE, AGE, and with
//! `-o wide` (priority 1) TARGETS, FORMAT, DIGEST. Cells are computed by the server, AGE as
//! kube-apiserver's HumanDuration.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::types::CatalogImage;

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

/// The cells of one row, in column order.
pub fn cells(image: &CatalogImage, now: Timestamp) -> Vec<Value> {
    let md = image.spec.metadata.as_ref();
    let text = |v: Option<&str>| Value::String(v.unwrap_or("").to_string());
    let status = image.status.as_ref();
    let phase = status
        .and_then(|s| s.phase)
        .map_or("Pending", |p| p.as_str());
    let age = image
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or("<unknown>".to_string(), |created| {
            human_duration(now.duration_since(created.0))
        });
    let targets = md.map_or(String::new(), |m| {
        m.targets
            .iter()
            .map(|t| {
                if t.verified {
                    format!("{}*", t.name)
                } else {
                    t.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let digest = status
        .and_then(|s| s.registry_metadata.as_ref())
        .and_then(|r| r.resolved_digest.as_deref())
        .or(image.spec.digest.as_deref());
    vec![
        text(image.metadata.name.as_deref()),
        Value::String(image.spec.registry_url.clone()),
        text(md.and_then(|m| m.architecture.as_deref())),
        text(md.and_then(|m| m.distro.as_deref())),
        Value::String(phase.to_string()),
        Value::String(age),
        Value::String(targets),
        text(md.and_then(|m| m.export_format.as_deref())),
        text(digest),
    ]
}

/// kube-apiserver's `duration.HumanDuration`: two significant units at most.
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
