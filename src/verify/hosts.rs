//! Per registry host: its oci-client (with the host's CA from a containers `certs.d` directory,
//! or plain HTTP for an opted-in insecure host), a request-rate limit, and a circuit breaker
//! that stops contacting a failing host until a cool-down has passed, then lets one probe
//! through (half-open).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct HostOptions {
    /// containers' certs.d layout: `<dir>/<host[:port]>/*.crt` are CAs for that host.
    pub ca_dir: Option<PathBuf>,
    /// Hosts reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Requests per second to one host.
    pub rate: f64,
    /// Consecutive failures that open a host's circuit.
    pub failure_threshold: u32,
    /// How long an open circuit stays open before one probe.
    pub cool_down: Duration,
    /// How long one request may take.
    pub timeout: Duration,
}

/// Distinct credentials for one host beyond which its clients start over.
const MAX_CLIENTS_PER_HOST: usize = 256;

/// A host's circuit; the numbers are what the circuit-state metric reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

struct Limiter {
    tokens: f64,
    at: Instant,
}

pub struct Host {
    name: String,
    /// One client per set of credentials: oci-client remembers the first credentials it used
    /// for a registry, so entries with different ones must not share a client.
    clients: Mutex<HashMap<[u8; 32], oci_client::Client>>,
    breaker: Mutex<Breaker>,
    limiter: tokio::sync::Mutex<Limiter>,
    options: HostOptions,
}

/// Whether a request may go to the host now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The circuit is open (or a probe is already out): do not contact the host.
    CircuitOpen,
}

impl Host {
    fn new(name: &str, options: &HostOptions) -> Host {
        Host {
            name: name.to_string(),
            clients: Mutex::new(HashMap::new()),
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
                probing: false,
            }),
            limiter: tokio::sync::Mutex::new(Limiter {
                tokens: options.rate.max(1.0),
                at: Instant::now(),
            }),
            options: options.clone(),
        }
    }

    /// The client for requests with the credentials `credentials_key` identifies.
    pub fn client(&self, credentials_key: [u8; 32]) -> oci_client::Client {
        let mut clients = self.clients.lock().expect("clients lock");
        if clients.len() >= MAX_CLIENTS_PER_HOST {
            clients.clear();
        }
        clients
            .entry(credentials_key)
            .or_insert_with(|| oci_client::Client::new(self.config()))
            .clone()
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig {
            read_timeout: Some(self.options.timeout),
            connect_timeout: Some(self.options.timeout),
            platform_resolver: None,
            user_agent: concat!("catalog-apiserver/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        if self.options.insecure.contains(&self.name) {
            config.protocol = ClientProtocol::Http;
        }
        if let Some(dir) = &self.options.ca_dir {
            for entry in std::fs::read_dir(dir.join(&self.name))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "crt")
                    && let Ok(data) = std::fs::read(&path)
                {
                    config.extra_root_certificates.push(Certificate {
                        encoding: CertificateEncoding::Pem,
                        data,
                    });
                }
            }
        }
        config
    }

    pub fn circuit(&self) -> Circuit {
        let breaker = self.breaker.lock().expect("breaker lock");
        match breaker.open_until {
            None => Circuit::Closed,
            Some(until) if Instant::now() < until => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
        }
    }

    /// Asks to contact the host: closed, go; open, no; half-open, one probe goes.
    pub fn admit(&self) -> Admission {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        match breaker.open_until {
            None => Admission::Go,
            Some(until) if Instant::now() < until => Admission::CircuitOpen,
            Some(_) if breaker.probing => Admission::CircuitOpen,
            Some(_) => {
                breaker.probing = true;
                Admission::Go
            }
        }
    }

    /// Records how a contact went: a success closes the circuit, enough failures open it.
    pub fn record(&self, reachable: bool) {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        let probe = std::mem::take(&mut breaker.probing);
        if reachable {
            breaker.failures = 0;
            breaker.open_until = None;
            return;
        }
        breaker.failures += 1;
        if probe || breaker.failures >= self.options.failure_threshold {
            breaker.open_until = Some(Instant::now() + self.options.cool_down);
            tracing::warn!(failures = breaker.failures, "registry circuit open");
        }
    }

    /// Waits for the host's rate limit to allow one more request.
    pub async fn pace(&self) {
        let rate = self.options.rate.max(0.001);
        let mut limiter = self.limiter.lock().await;
        let now = Instant::now();
        limiter.tokens = (limiter.tokens + now.duration_since(limiter.at).as_secs_f64() * rate)
            .min(rate.max(1.0));
        limiter.at = now;
        if limiter.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - limiter.tokens) / rate);
            tokio::time::sleep(wait).await;
            limiter.tokens = 1.0;
            limiter.at = Instant::now();
        }
        limiter.tokens -= 1.0;
    }
}

/// The hosts seen so far.
pub struct Hosts {
    options: HostOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

impl Hosts {
    pub fn new(options: HostOptions) -> Hosts {
        Hosts {
            options,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("hosts lock");
        hosts
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Host::new(name, &self.options)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> HostOptions {
        HostOptions {
            ca_dir: None,
            insecure: Vec::new(),
            rate: 100.0,
            failure_threshold: 3,
            cool_down: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_circuit_opens_after_failures_then_lets_one_probe_through() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = Host::new("registry.example", &options());
        for _ in 0..3 {
            assert_eq!(host.admit(), Admission::Go);
            host.record(false);
        }
        assert_eq!(host.circuit(), Circuit::Open);
        assert_eq!(host.admit(), Admission::CircuitOpen);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(host.circuit(), Circuit::HalfOpen);
        assert_eq!(host.admit(), Admission::Go);
        assert_eq!(host.admit(), Admission::CircuitOpen, "one probe at a time");
        host.record(false);
        assert_eq!(
            host.circuit(),
            Circuit::Open,
            "a failed probe opens it again"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(host.admit(), Admission::Go);
        host.record(true);
        assert_eq!(host.circuit(), Circuit::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_to_a_host_are_paced_at_its_rate() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = Host::new(
            "registry.example",
            &HostOptions {
                rate: 4.0,
                ..options()
            },
        );
        let started = Instant::now();
        for _ in 0..12 {
            host.pace().await;
        }
        // A burst of 4, then one every 250 ms: the 12th request goes at 2 s.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
