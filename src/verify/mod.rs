//! The verification loop: every entry checked against its registry, the result written into
//! its status through the registry's `/status` rules, like any other writer.
//!
//! One scheduler task follows the store (a watch that starts with every entry) and keeps, per
//! entry, when it is next due: now for a new generation, `verificationInterval` (spread by
//! jitter) after a success, exponential backoff with jitter after a failure. Due entries are
//! checked by at most `concurrency` workers; each registry host has a rate limit and a circuit
//! breaker, and entries that share a reference share one registry round trip.

mod breaker;
pub mod credentials;
pub mod hosts;
pub mod inspect;
pub mod lease;
mod schedule;
mod shared;
pub mod verdict;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use self::breaker::Admission;
use self::credentials::{CredentialSources, image_host};
use self::hosts::{HostOptions, Hosts};
use self::inspect::{Failure, inspect};
use self::schedule::{Backoff, Clock, Queue, draw_jitter};
use self::shared::{SharedAnswers, credentials_key, question};
use self::verdict::Outcome;
use crate::api::types::{CatalogImage, CatalogImageStatus, Phase};
use crate::observe::{CheckLabels, HostLabels, Metrics};
use crate::registry::{ListQuery, Registry, WatchEvent, WatchFrom, decode_stored};

/// The field manager of status writes.
pub const MANAGER: &str = "catalog-apiserver-verifier";

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub concurrency: usize,
    /// Failures in a row after which an entry is Failed.
    pub max_failures: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long one registry answer serves every entry with the same reference.
    pub share_window: Duration,
    pub hosts: HostOptions,
}

pub struct Verifier {
    /// The catalog entries, through the resource registry.
    catalog: Registry,
    metrics: Arc<Metrics>,
    hosts: Hosts,
    credentials: CredentialSources,
    options: VerifyOptions,
    shared: SharedAnswers,
}

impl Verifier {
    pub fn new(
        catalog: Registry,
        credentials: CredentialSources,
        options: VerifyOptions,
        metrics: Arc<Metrics>,
    ) -> Verifier {
        Verifier {
            catalog,
            metrics,
            hosts: Hosts::new(options.hosts.clone()),
            credentials,
            shared: SharedAnswers::new(options.share_window),
            options,
        }
    }

    /// When `image` is next due, from now.
    fn due(&self, image: &CatalogImage) -> Instant {
        let backoff = Backoff {
            base: self.options.retry_base,
            cap: self.options.retry_cap,
        };
        let clock = Clock {
            now: Instant::now(),
            wall: jiff::Timestamp::now(),
        };
        schedule::due(image, backoff, clock, draw_jitter())
    }

    /// Verifies while `leading` is true (this replica holds the lease), until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        shutdown: watch::Receiver<bool>,
        mut leading: watch::Receiver<bool>,
    ) {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                _ = leading.wait_for(|leading| *leading) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            tokio::select! {
                _ = self.clone().verify(shutdown.clone()) => return,
                // Checks already running finish; no new ones start.
                _ = lost(&mut leading) => tracing::info!("verification paused: another replica leads"),
            }
        }
    }

    /// Runs until `shutdown` turns true.
    async fn verify(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let workers = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
        let mut queue = Queue::default();
        'watching: loop {
            let mut events = match self
                .catalog
                .watch(ListQuery::default(), WatchFrom::InitialEvents)
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e.message, "verifier cannot watch the store");
                    return;
                }
            };
            loop {
                self.metrics.queue_depth.set(queue.len() as i64);
                let next_due = queue.next_due();
                let due_now = next_due.is_some_and(|at| at <= Instant::now());
                tokio::select! {
                    event = events.next() => match event {
                        Ok(WatchEvent::Added(bytes) | WatchEvent::Modified(bytes)) => {
                            if let Ok(image) = decode_stored(&bytes) {
                                queue.at(key_of(&image), self.due(&image));
                            }
                        }
                        Ok(WatchEvent::Deleted(bytes)) => {
                            if let Ok(image) = decode_stored(&bytes) {
                                queue.forget(&key_of(&image));
                            }
                        }
                        Ok(WatchEvent::Bookmark { .. }) => {}
                        Err(e) => {
                            // Fell behind (a burst of writes): start over from the current state.
                            tracing::warn!(error = %e.message, "verifier watch ended; restarting");
                            continue 'watching;
                        }
                    },
                    Some(key) = done.recv() => {
                        queue.finished(&key);
                        if let Some((namespace, name)) = key.split_once('/')
                            && let Ok(item) = self.catalog.get(namespace, name)
                            && let Ok(image) = decode_stored(&item.value)
                        {
                            queue.at(key, self.due(&image));
                        }
                    }
                    permit = workers.clone().acquire_owned(), if due_now => {
                        let Ok(permit) = permit else { return };
                        let Some(key) = queue.start_next() else { continue };
                        let (verifier, done) = (self.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            verifier.check(&key).await;
                            drop(permit);
                            let _ = done.send(key);
                        });
                    }
                    _ = sleep_until_due(next_due), if !due_now => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    /// Verifies one entry and writes what it found.
    async fn check(&self, key: &str) {
        let Some((namespace, name)) = key.split_once('/') else {
            return;
        };
        let Ok(item) = self.catalog.get(namespace, name) else {
            return;
        };
        let Ok(image) = decode_stored(&item.value) else {
            return;
        };
        let generation = image.metadata.generation.unwrap_or(1);
        let first_look = image.status.as_ref().is_none_or(|s| {
            s.observed_generation != Some(generation) || s.phase == Some(Phase::Pending)
        });
        if first_look {
            self.write_status(namespace, name, |old| {
                verdict::verifying(old, generation, &crate::registry::now())
            })
            .await;
        }
        let started = Instant::now();
        let outcome = self.outcome(&image).await;
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        let label = match &outcome {
            Outcome::Available(_) => "Available",
            Outcome::Failed(failure, _) => failure.reason(),
        };
        let host = image_host(&image.spec.registry_url).to_string();
        self.metrics
            .checks
            .get_or_create(&CheckLabels {
                host: host.clone(),
                outcome: label.into(),
            })
            .inc();
        let circuit = self.hosts.get(&host).circuit() as i64;
        self.metrics
            .circuit
            .get_or_create(&HostLabels { host })
            .set(circuit);
        let max_failures = self.options.max_failures;
        self.write_status(namespace, name, |old| {
            verdict::after(
                old,
                generation,
                &outcome,
                max_failures,
                &crate::registry::now(),
            )
        })
        .await;
    }

    async fn outcome(&self, image: &CatalogImage) -> Outcome {
        let reference = image.spec.registry_url.as_str();
        let auth = match self.credentials.for_image(image).await {
            Ok(auth) => auth,
            Err(error) => {
                return Outcome::Failed(
                    Failure::Transient {
                        reason: "CredentialsUnavailable",
                        message: error.to_string(),
                    },
                    None,
                );
            }
        };
        let architecture = image
            .spec
            .metadata
            .as_ref()
            .and_then(|m| m.architecture.clone());
        let host_name = image_host(reference);
        let host = self.hosts.get(host_name);
        let credentials = credentials_key(&auth);
        let cell = self
            .shared
            .answer(question(reference, architecture.as_deref(), &credentials));
        let (_, result) = cell
            .get_or_init(|| async {
                let result = match host.admit() {
                    Admission::CircuitOpen => Err(Failure::Transient {
                        reason: "RegistryCircuitOpen",
                        message: format!("{host_name} failed repeatedly; not contacted until its cool-down has passed"),
                    }),
                    Admission::Go => {
                        host.pace().await;
                        let client = host.client(credentials);
                        let result = inspect(&client, reference, &auth, architecture.as_deref()).await;
                        host.record(!matches!(result, Err(Failure::Unreachable(_))));
                        result
                    }
                };
                (Instant::now(), result)
            })
            .await
            .clone();
        match (result, image.spec.digest.as_deref()) {
            (Ok(found), Some(pinned))
                if found.metadata.resolved_digest.as_deref() != Some(pinned) =>
            {
                let message = format!(
                    "{reference} resolves to {} but spec.digest pins {pinned}",
                    found
                        .metadata
                        .resolved_digest
                        .as_deref()
                        .unwrap_or("nothing")
                );
                Outcome::Failed(
                    Failure::Permanent {
                        reason: "DigestMismatch",
                        message,
                    },
                    Some(found.metadata),
                )
            }
            (Ok(found), _) => Outcome::Available(found.metadata),
            (Err(failure), _) => Outcome::Failed(failure, None),
        }
    }

    /// Writes the status `next` computes from the current one.
    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        next: impl Fn(Option<&CatalogImageStatus>) -> CatalogImageStatus,
    ) {
        let written = self
            .catalog
            .update_status((namespace, name), MANAGER, next)
            .await;
        match written {
            // Deleted while it was being verified: nothing to report.
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(%namespace, %name, error = %e.message, "status not written"),
            Ok(_) => {}
        }
    }
}

fn key_of(image: &CatalogImage) -> String {
    format!(
        "{}/{}",
        image.metadata.namespace.as_deref().unwrap_or_default(),
        image.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Resolves when leadership is lost (never, if nobody can take it away).
async fn lost(leading: &mut watch::Receiver<bool>) {
    if leading.wait_for(|leading| !*leading).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_due(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
