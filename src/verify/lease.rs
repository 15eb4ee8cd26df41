//! Which replica verifies: the holder of a `coordination.k8s.io` Lease, kept by renewing it and
//! taken over once its holder has stopped renewing for the lease's duration. The protocol of
//! client-go's `tools/leaderelection` (tryAcquireOrRenew) for one Lease, over kube-rs, with
//! optimistic concurrency on the Lease's resourceVersion.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::kube_errors::one_line;

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// Who we are in `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews, and others try to acquire.
    pub retry: Duration,
}

/// This process's Lease identity: `name` (else the host name) and a random suffix, as
/// client-go's users (kube-controller-manager, kube-scheduler) make theirs, so that two
/// processes on one host, or a restarted one, never both believe they hold the Lease.
pub fn unique_identity(name: Option<&str>) -> String {
    let name = match name {
        Some(name) => name.to_string(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "catalog-apiserver".into()),
    };
    format!("{name}_{}", uuid::Uuid::new_v4())
}

/// Tries to hold the lease for as long as the process runs, telling `leading` whether it does.
pub async fn hold(client: kube::Client, options: LeaseOptions, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &options.namespace);
    loop {
        let now_leading = match try_acquire_or_renew(&api, &options).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %one_line(&e), "verifier lease");
                false
            }
        };
        if *leading.borrow() != now_leading {
            tracing::info!(leading = now_leading, identity = %options.identity, "verifier leadership");
        }
        leading.send_replace(now_leading);
        tokio::time::sleep(options.retry).await;
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    options: &LeaseOptions,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = options.duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&options.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(options.name.clone()),
                namespace: Some(options.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(options.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(options.identity.as_str());
    if !ours {
        let held_for =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(0) as u64);
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            Timestamp::now().duration_since(renewed.0).unsigned_abs() > held_for
        });
        if !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(options.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds);
    // The resourceVersion read above makes this a compare-and-swap: of two replicas taking
    // over at once, one gets a 409.
    match api
        .replace(&options.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_are_unique_per_process_start() {
        let (a, b) = (super::unique_identity(None), super::unique_identity(None));
        assert_ne!(a, b);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert!(a.starts_with(&format!("{}_", host.trim())), "{a}");
        let named = super::unique_identity(Some("catalog-apiserver-0"));
        assert!(named.starts_with("catalog-apiserver-0_"), "{named}");
    }
}
