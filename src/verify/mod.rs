//! The verification loop: every entry checked against its registry, the result written into
//! its status through the registry's `/status` rules, like any other writer.
//!
//! One scheduler task follows the store (a watch that starts with every entry) and keeps, per
//! entry, when it is next due: now for a new generation, `verificationInterval` (spread by
//! jitter) after a success, exponential backoff with jitter after a failure. Due entries are
//! checked by at most `concurrency` workers; each registry host has a rate limit and a circuit
//! breaker, and entries that share a reference share one registry round trip.

pub mod credentials;
pub mod hosts;
pub mod inspect;
pub mod lease;
pub mod verdict;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore, mpsc, watch};
use tokio::time::Instant;

use self::credentials::{CredentialSources, registry_host};
use self::hosts::{Admission, HostOptions, Hosts};
use self::inspect::{Failure, Inspection, inspect};
use self::verdict::Outcome;
use crate::api::types::{CatalogImage, CatalogImageStatus, Phase};
use crate::api::validate::parse_go_duration;
use crate::observe::{CheckLabels, HostLabels, Metrics};
use crate::registry::{ListQuery, Registry, WatchEvent, decode_stored};

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

/// The interval for entries without one (the contract's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// Answers kept before the stale ones are swept.
const SHARED_SWEEP_AT: usize = 4096;

/// One registry answer, shared by the entries that asked the same question.
type Shared = Arc<OnceCell<(Instant, Result<Inspection, Failure>)>>;

pub struct Verifier {
    registry: Registry,
    metrics: Arc<Metrics>,
    hosts: Hosts,
    credentials: CredentialSources,
    options: VerifyOptions,
    shared: Mutex<HashMap<[u8; 32], Shared>>,
}

/// `base` spread by ±10%, so that entries written together do not fall due together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.9..1.1))
}

impl Verifier {
    pub fn new(
        registry: Registry,
        credentials: CredentialSources,
        options: VerifyOptions,
        metrics: Arc<Metrics>,
    ) -> Verifier {
        Verifier {
            registry,
            metrics,
            hosts: Hosts::new(options.hosts.clone()),
            credentials,
            options,
            shared: Mutex::new(HashMap::new()),
        }
    }

    /// When `image` is next due.
    fn due(&self, image: &CatalogImage) -> Instant {
        let now = Instant::now();
        let generation = image.metadata.generation.unwrap_or(1);
        let Some(status) = image
            .status
            .as_ref()
            .filter(|s| s.observed_generation == Some(generation))
        else {
            return now;
        };
        let interval = image
            .spec
            .verification_interval
            .as_deref()
            .and_then(parse_go_duration)
            .unwrap_or(DEFAULT_INTERVAL);
        let since_last = status
            .last_verification_time
            .as_ref()
            .map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs())
            .unwrap_or_default();
        let wait = match status.phase {
            Some(Phase::Unavailable) => {
                let failures = status.verification_failures.unwrap_or(1).clamp(1, 30) as u32;
                let backoff = self
                    .options
                    .retry_base
                    .saturating_mul(1 << (failures - 1).min(20));
                jittered(backoff.min(self.options.retry_cap))
            }
            Some(Phase::Available | Phase::Failed) => jittered(interval),
            // Pending or Verifying at this generation: a check was cut short; do it again.
            _ => Duration::ZERO,
        };
        now + wait.saturating_sub(since_last)
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
        let mut schedule = Schedule::default();
        'watching: loop {
            let mut events = match self.registry.watch(ListQuery::default(), None, true) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e.message, "verifier cannot watch the store");
                    return;
                }
            };
            loop {
                self.metrics.queue_depth.set(schedule.current.len() as i64);
                let next_due = schedule.next_due();
                let due_now = next_due.is_some_and(|at| at <= Instant::now());
                tokio::select! {
                    event = events.next() => match event {
                        Ok(WatchEvent::Added(bytes) | WatchEvent::Modified(bytes)) => {
                            if let Ok(image) = decode_stored(&bytes) {
                                let key = key_of(&image);
                                if !schedule.in_flight.contains(&key) {
                                    schedule.at(key, self.due(&image));
                                }
                            }
                        }
                        Ok(WatchEvent::Deleted(bytes)) => {
                            if let Ok(image) = decode_stored(&bytes) {
                                schedule.forget(&key_of(&image));
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
                        schedule.in_flight.remove(&key);
                        if let Some((namespace, name)) = key.split_once('/')
                            && let Ok(item) = self.registry.get(namespace, name)
                            && let Ok(image) = decode_stored(&item.value)
                        {
                            schedule.at(key, self.due(&image));
                        }
                    }
                    permit = workers.clone().acquire_owned(), if due_now => {
                        let Ok(permit) = permit else { return };
                        let Some(key) = schedule.pop_due() else { continue };
                        schedule.in_flight.insert(key.clone());
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
        let Ok(item) = self.registry.get(namespace, name) else {
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
        let host = registry_host(&image.spec.registry_url).to_string();
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
            Err(message) => {
                return Outcome::Failed(
                    Failure::Transient {
                        reason: "CredentialsUnavailable",
                        message,
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
        let host_name = registry_host(reference);
        let host = self.hosts.get(host_name);
        let credentials = credentials_key(&auth);
        let cell = self.shared_cell(share_key(reference, architecture.as_deref(), &credentials));
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

    /// The shared answer for a question, fresh for `share_window`.
    fn shared_cell(&self, key: [u8; 32]) -> Shared {
        let mut shared = self.shared.lock().expect("shared lock");
        let window = self.options.share_window;
        // Successes serve later askers for the window; a failure only those who asked while
        // it was in flight, so a recovered registry is seen at once.
        let fresh = |cell: &Shared| {
            cell.get()
                .is_none_or(|(at, result)| result.is_ok() && at.elapsed() < window)
        };
        // Stale answers of other questions are swept only once they pile up, not per check.
        if shared.len() >= SHARED_SWEEP_AT {
            shared.retain(|_, cell| fresh(cell));
        }
        let cell = shared.entry(key).or_default();
        if !fresh(cell) {
            *cell = Shared::default();
        }
        cell.clone()
    }

    /// Writes the status `next` computes from the current one.
    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        next: impl Fn(Option<&CatalogImageStatus>) -> CatalogImageStatus,
    ) {
        let written = self
            .registry
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

/// Identifies credentials without keeping them in clear.
fn credentials_key(auth: &RegistryAuth) -> [u8; 32] {
    let text = match auth {
        RegistryAuth::Anonymous => "anonymous".to_string(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    Sha256::digest(text.as_bytes()).into()
}

/// Entries with the same reference, architecture and credentials ask the registry the same.
fn share_key(reference: &str, architecture: Option<&str>, credentials: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(reference.as_bytes());
    hasher.update([0]);
    hasher.update(architecture.unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(credentials);
    hasher.finalize().into()
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

/// When each entry is due: a heap of (due, sequence, key), stale heap entries skipped by
/// their sequence number.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, u64, String)>>,
    current: HashMap<String, u64>,
    sequence: u64,
    in_flight: HashSet<String>,
}

impl Schedule {
    fn at(&mut self, key: String, due: Instant) {
        self.sequence += 1;
        self.current.insert(key.clone(), self.sequence);
        self.heap.push(Reverse((due, self.sequence, key)));
    }

    fn forget(&mut self, key: &str) {
        self.current.remove(key);
    }

    fn discard_stale(&mut self) {
        while let Some(Reverse((_, sequence, key))) = self.heap.peek() {
            if self.current.get(key) == Some(sequence) {
                break;
            }
            self.heap.pop();
        }
    }

    fn next_due(&mut self) -> Option<Instant> {
        self.discard_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self) -> Option<String> {
        self.discard_stale();
        let Reverse((_, _, key)) = self.heap.pop()?;
        self.current.remove(&key);
        Some(key)
    }
}
