//! Per registry host: its oci-client (with the host's CA from a containers `certs.d` directory,
//! or plain HTTP for an opted-in insecure host), a request-rate limit, and a circuit breaker
//! (`breaker.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use tokio::time::Instant;

use super::breaker::{Admission, Breaker, Circuit, Thresholds};

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

impl Host {
    fn new(name: &str, options: &HostOptions) -> Host {
        Host {
            name: name.to_string(),
            clients: Mutex::new(HashMap::new()),
            breaker: Mutex::new(Breaker::default()),
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
        self.breaker
            .lock()
            .expect("breaker lock")
            .circuit(Instant::now())
    }

    /// Asks to contact the host.
    pub fn admit(&self) -> Admission {
        self.breaker
            .lock()
            .expect("breaker lock")
            .admit(Instant::now())
    }

    /// Records how a contact went.
    pub fn record(&self, reachable: bool) {
        let thresholds = Thresholds {
            failures: self.options.failure_threshold,
            cool_down: self.options.cool_down,
        };
        let mut breaker = self.breaker.lock().expect("breaker lock");
        if breaker.record(reachable, Instant::now(), thresholds) {
            tracing::warn!(host = %self.name, "registry circuit open");
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
