//! The status a verification writes: phase, conditions, failures counted, registry metadata,
//! as `catalogimage-api.md` defines them. Pure functions of the old status and the outcome.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::inspect::Failure;
use crate::api::types::{CatalogImageStatus, Phase, RegistryMetadata};

/// What one verification found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Available(RegistryMetadata),
    /// The registry answered with something that fails the entry; what it found, if anything.
    Failed(Failure, Option<RegistryMetadata>),
}

/// The status while a new generation is being verified for the first time.
pub fn verifying(
    old: Option<&CatalogImageStatus>,
    generation: i64,
    now: &Time,
) -> CatalogImageStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.phase = Some(Phase::Verifying);
    status.observed_generation = Some(generation);
    set(
        &mut status.conditions,
        "Verified",
        "Unknown",
        "Verifying",
        "checking the image in its registry",
        generation,
        now,
    );
    status
}

/// The status after `outcome`. `max_failures` failures in a row make any failure final.
pub fn after(
    old: Option<&CatalogImageStatus>,
    generation: i64,
    outcome: &Outcome,
    max_failures: u32,
    now: &Time,
) -> CatalogImageStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = Some(generation);
    status.last_verification_time = Some(now.clone());
    let conditions = &mut status.conditions;
    match outcome {
        Outcome::Available(metadata) => {
            status.phase = Some(Phase::Available);
            status.verification_failures = Some(0);
            let digest = metadata
                .resolved_digest
                .as_deref()
                .unwrap_or("the manifest");
            let message = format!("{digest} is in the registry");
            set(
                conditions, "Verified", "True", "Verified", &message, generation, now,
            );
            set(
                conditions,
                "Available",
                "True",
                "Available",
                "the image can be pulled",
                generation,
                now,
            );
            set(
                conditions,
                "Ready",
                "True",
                "Ready",
                "verified and available",
                generation,
                now,
            );
            status.registry_metadata = Some(metadata.clone());
        }
        Outcome::Failed(failure, found) => {
            let failures = status.verification_failures.unwrap_or(0).saturating_add(1);
            status.verification_failures = Some(failures);
            let permanent = matches!(failure, Failure::Permanent { .. });
            let final_ = permanent || failures >= max_failures as i32;
            status.phase = Some(if final_ {
                Phase::Failed
            } else {
                Phase::Unavailable
            });
            let mut message = failure.message().to_string();
            if final_ && !permanent {
                message = format!(
                    "{message} ({failures} failures in a row; giving up until the spec changes or the next interval)"
                );
            } else if !final_ {
                message = format!("{message} (failure {failures} of {max_failures}; retrying)");
            }
            for type_ in ["Verified", "Available", "Ready"] {
                set(
                    conditions,
                    type_,
                    "False",
                    failure.reason(),
                    &message,
                    generation,
                    now,
                );
            }
            if let Some(found) = found {
                status.registry_metadata = Some(found.clone());
            }
        }
    }
    status
}

/// Sets a condition; its lastTransitionTime moves only when its status changes.
fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: &Time,
) {
    let condition = match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(condition) => condition,
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: String::new(),
                last_transition_time: now.clone(),
                message: String::new(),
                reason: String::new(),
                observed_generation: None,
            });
            conditions.last_mut().expect("just pushed")
        }
    };
    if condition.status != status {
        condition.last_transition_time = now.clone();
    }
    condition.status = status.into();
    condition.reason = reason.into();
    condition.message = message.into();
    condition.observed_generation = Some(generation);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn transient_failures_become_final_after_the_limit() {
        let unreachable = Outcome::Failed(Failure::Unreachable("connection refused".into()), None);
        let mut status = None;
        for expected in [Phase::Unavailable, Phase::Unavailable, Phase::Failed] {
            let next = after(status.as_ref(), 1, &unreachable, 3, &now());
            assert_eq!(next.phase, Some(expected));
            status = Some(next);
        }
        let status = status.unwrap();
        assert_eq!(status.verification_failures, Some(3));
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RegistryUnreachable")
        );
        let available = after(
            Some(&status),
            1,
            &Outcome::Available(RegistryMetadata::default()),
            3,
            &now(),
        );
        assert_eq!(
            (available.phase, available.verification_failures),
            (Some(Phase::Available), Some(0))
        );
        let mismatch = Failure::Permanent {
            reason: "DigestMismatch",
            message: "other digest".into(),
        };
        let failed = after(
            Some(&available),
            2,
            &Outcome::Failed(mismatch, None),
            3,
            &now(),
        );
        assert_eq!(
            (failed.phase, failed.observed_generation),
            (Some(Phase::Failed), Some(2))
        );
    }
}
