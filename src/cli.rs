//! The command line: the subcommands and every flag, with their defaults and help (what the
//! README's Flags section lists).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{api, verify};

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes aggregated API server for catalogimages.catalog.automotive.io"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run in a cluster, behind kube-apiserver's aggregator: authentication and authorization
    /// delegated to kube-apiserver, configured by ConfigMap
    /// kube-system/extension-apiserver-authentication.
    Serve(Box<Serve>),
    /// Run on this machine with no cluster: own CA, own certificates, a kubeconfig for kubectl.
    Standalone(Box<Standalone>),
    /// Write a CA and a serving certificate for the in-cluster Service, and the APIService
    /// patch that trusts the CA (for clusters with neither cert-manager nor service-ca).
    Certs(Certs),
    /// Copy the CatalogImages of the automotive-dev-operator CRD
    /// (automotive.sdv.cloud.redhat.com/v1alpha1) into catalog.automotive.io. A dry run unless
    /// --apply.
    Import(Import),
}

#[derive(clap::Args)]
pub struct Certs {
    /// Where to write ca.crt, tls.crt, tls.key and apiservice-cabundle.yaml.
    #[arg(long, default_value = "certs/generated")]
    pub out: PathBuf,
    /// The Service the APIService points at.
    #[arg(long, default_value = "catalog-apiserver")]
    pub service: String,
    /// Its namespace.
    #[arg(long, default_value = "catalog-system")]
    pub namespace: String,
    /// Validity of the CA and the certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(clap::Args)]
pub struct Import {
    /// kubeconfig of the cluster holding the old CatalogImages (default: $KUBECONFIG, else
    /// in-cluster).
    #[arg(long)]
    pub from_kubeconfig: Option<PathBuf>,
    /// kubeconfig reaching catalog.automotive.io (default: the same cluster, through the
    /// aggregator).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Write; without it, every object is only validated by the server (dryRun=All).
    #[arg(long)]
    pub apply: bool,
}

#[derive(clap::Args)]
pub struct Serve {
    /// Where the store lives (a persistent volume in a cluster).
    #[arg(long, default_value = "/var/lib/catalog", env = "CATALOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "CATALOG_BIND")]
    pub bind: SocketAddr,
    /// Serving certificate (PEM chain); reloaded when the file changes.
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// Serving key (PEM); reloaded when the file changes.
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// How often the serving certificate files are checked for a change.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// kubeconfig for reaching kube-apiserver (default: $KUBECONFIG, else the in-cluster
    /// service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// CA bundle for client certificates, instead of the ConfigMap's client-ca-file.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// CA bundle for front-proxy certificates, instead of the ConfigMap's
    /// requestheader-client-ca-file.
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names a front-proxy certificate may carry (comma-separated; empty list: any).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Option<Vec<String>>,
    /// Headers naming the user (comma-separated), e.g. X-Remote-User.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_username_headers: Option<Vec<String>>,
    /// Headers naming the user's UID, e.g. X-Remote-Uid.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_uid_headers: Option<Vec<String>>,
    /// Headers naming the user's groups, e.g. X-Remote-Group.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_group_headers: Option<Vec<String>>,
    /// Prefixes of headers carrying extra user attributes, e.g. X-Remote-Extra-.
    #[arg(long, value_delimiter = ',')]
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,
    /// How long TokenReview answers are cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// Audiences bearer tokens must be meant for (comma-separated; default: kube-apiserver's).
    #[arg(long, value_delimiter = ',')]
    pub authentication_audiences: Vec<String>,
    /// How long an allowing SubjectAccessReview answer is cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview answer is cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Serve requests nothing authenticates as system:anonymous (authorization still applies).
    #[arg(long)]
    pub anonymous_auth: bool,
    /// Namespace of the Lease that picks the one replica that verifies.
    #[arg(long, env = "POD_NAMESPACE", default_value = "catalog-system")]
    pub lease_namespace: String,
    /// Name of that Lease.
    #[arg(long, default_value = "catalog-apiserver-verifier")]
    pub lease_name: String,
    /// This replica's name in the Lease, to which each process adds `_` and a random suffix so
    /// that no two processes share an identity (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long the Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the holder renews and the others try to take over.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lease_retry: Duration,
    #[command(flatten)]
    pub serving: Serving,
}

#[derive(clap::Args)]
pub struct Standalone {
    /// Where the store, the certificates and the kubeconfig live.
    #[arg(long, default_value = "./catalog-data", env = "CATALOG_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:8443", env = "CATALOG_BIND")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub serving: Serving,
}

/// The listener that serves the OpenShift console plugin's files.
#[derive(clap::Args)]
pub struct ConsolePlugin {
    /// Address to serve the console plugin's files on (HTTPS, no client certificate asked);
    /// off without it.
    #[arg(id = "console_plugin_bind", long = "console-plugin-bind")]
    pub bind: Option<SocketAddr>,
    /// The plugin's built files (`console-plugin/dist`; the image has them here).
    #[arg(
        id = "console_plugin_dir",
        long = "console-plugin-dir",
        default_value = "/usr/share/catalog-apiserver/console-plugin"
    )]
    pub dir: PathBuf,
    /// Its serving certificate (PEM chain), for a Service of its own (OpenShift's service CA
    /// issues one per Service); default: the API's.
    #[arg(
        id = "console_plugin_cert",
        long = "console-plugin-tls-cert-file",
        requires = "console_plugin_key"
    )]
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key.
    #[arg(
        id = "console_plugin_key",
        long = "console-plugin-tls-private-key-file",
        requires = "console_plugin_cert"
    )]
    pub key_file: Option<PathBuf>,
}

/// Flags every serving mode shares.
#[derive(clap::Args)]
pub struct Serving {
    /// How long the store keeps history: the reach of continue tokens and of watch resumption.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub history_retention: Duration,
    /// Interval between watch BOOKMARK events for watchers that allow them.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub watch_bookmark_interval: Duration,
    /// How long a shutdown waits for in-flight requests.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// The store's page cache, in MiB.
    #[arg(long, default_value_t = 256)]
    pub store_cache_mib: usize,
    /// A PostgreSQL connection string (`postgres://user@host:port/db`, or `host=... user=...`)
    /// whose log this replica shares with the others: writes commit there, and the store under
    /// the data directory becomes a local copy that follows it. Without it the embedded store is
    /// the only one. Never logged.
    #[arg(long, env = "CATALOG_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// The same, read from a file (a mounted Secret).
    #[arg(long, conflicts_with = "store")]
    pub store_file: Option<PathBuf>,
    /// PEM file of the CAs that sign PostgreSQL's server certificate: connections then use
    /// TLS (as they do with `sslmode=require`, trusting the system's roots without this), and
    /// the certificate, host name included, must verify.
    #[arg(long, env = "CATALOG_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    #[command(flatten)]
    pub console_plugin: ConsolePlugin,
    /// Open connections at most; at the cap the longest-idle one is closed to make room
    /// (default: the descriptor limit less an eighth).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// How long an HTTP/1 request head may take to arrive (kube-apiserver's ReadHeaderTimeout).
    #[arg(long, default_value = "32s", value_parser = parse_duration)]
    pub request_header_timeout: Duration,
    /// How long a request body may take to arrive (kube-apiserver's request timeout).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub request_body_timeout: Duration,
    /// How long a connection with no request in flight is kept (kube-apiserver's IdleTimeout).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub idle_connection_timeout: Duration,
    /// Testing only: a request for this path panics.
    #[arg(long, hide = true)]
    pub fault_panic_path: Option<String>,
    #[command(flatten)]
    pub verification: Verification,
}

/// The verification loop's flags.
#[derive(clap::Args)]
pub struct Verification {
    /// Verify entries against their registries and write the result into their status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verify: bool,
    /// Checks running at once.
    #[arg(long, default_value_t = 16)]
    pub verify_concurrency: usize,
    /// Failures in a row after which an entry is Failed.
    #[arg(long, default_value_t = 5)]
    pub verify_max_failures: u32,
    /// First retry delay after a failure; doubled per failure, with jitter.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub verify_retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub verify_retry_cap: Duration,
    /// How long one registry answer serves every entry with the same reference.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub verify_share_window: Duration,
    /// Requests per second to one registry host.
    #[arg(long, default_value_t = 10.0)]
    pub registry_rate: f64,
    /// Consecutive failures that stop contacting a registry host for a cool-down.
    #[arg(long, default_value_t = 5)]
    pub registry_failure_threshold: u32,
    /// How long a failing registry host is left alone before one probe.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub registry_cool_down: Duration,
    /// How long one registry request may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub registry_timeout: Duration,
    /// CA certificates per registry host, in containers' certs.d layout (DIR/HOST[:PORT]/*.crt).
    #[arg(long)]
    pub registry_ca: Option<PathBuf>,
    /// A registry host reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// An auth file with registry credentials (repeatable; default
    /// $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json).
    #[arg(long = "registry-auth-file")]
    pub registry_auth_files: Vec<PathBuf>,
    /// The OpenShift internal registry, reached with the service account token.
    #[arg(
        long,
        default_value = "image-registry.openshift-image-registry.svc:5000"
    )]
    pub openshift_registry: String,
    /// The service account token presented to the OpenShift internal registry.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub service_account_token_file: PathBuf,
}

impl Verification {
    pub fn options(&self) -> verify::VerifyOptions {
        verify::VerifyOptions {
            concurrency: self.verify_concurrency,
            max_failures: self.verify_max_failures,
            retry_base: self.verify_retry_base,
            retry_cap: self.verify_retry_cap,
            share_window: self.verify_share_window,
            hosts: verify::hosts::HostOptions {
                ca_dir: self.registry_ca.clone(),
                insecure: self.insecure_registries.clone(),
                rate: self.registry_rate,
                failure_threshold: self.registry_failure_threshold,
                cool_down: self.registry_cool_down,
                timeout: self.registry_timeout,
            },
        }
    }

    pub fn credentials(
        &self,
        cluster: Option<kube::Client>,
    ) -> verify::credentials::CredentialSources {
        let auth_files = if self.registry_auth_files.is_empty() {
            verify::credentials::default_auth_files()
        } else {
            self.registry_auth_files.clone()
        };
        verify::credentials::CredentialSources {
            cluster,
            auth_files,
            internal_registry: Some((
                self.openshift_registry.clone(),
                self.service_account_token_file.clone(),
            )),
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    api::validate::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 90s, 5m or 1h"))
}
