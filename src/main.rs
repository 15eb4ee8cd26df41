//! catalog-apiserver: a Kubernetes aggregated API server for the catalog of automotive OS images.

mod api;
mod auth;
mod certs;
mod import;
mod kube_errors;
mod observe;
mod registry;
mod server;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use catalog_storage::{Options, Store};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::server::tls::ServingCertificate;

/// mimalloc gives freed memory back to the system where glibc's malloc keeps it in its
/// arenas: after a round of whole-collection reads, resident memory returns within the minute
/// (measured in BENCHMARKS.md, "Memory of whole-collection readers").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes aggregated API server for catalogimages.catalog.automotive.io"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct Certs {
    /// Where to write ca.crt, tls.crt, tls.key and apiservice-cabundle.yaml.
    #[arg(long, default_value = "certs/generated")]
    out: PathBuf,
    /// The Service the APIService points at.
    #[arg(long, default_value = "catalog-apiserver")]
    service: String,
    /// Its namespace.
    #[arg(long, default_value = "catalog-system")]
    namespace: String,
    /// Validity of the CA and the certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

#[derive(clap::Args)]
struct Import {
    /// kubeconfig of the cluster holding the old CatalogImages (default: $KUBECONFIG, else
    /// in-cluster).
    #[arg(long)]
    from_kubeconfig: Option<PathBuf>,
    /// kubeconfig reaching catalog.automotive.io (default: the same cluster, through the
    /// aggregator).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write; without it, every object is only validated by the server (dryRun=All).
    #[arg(long)]
    apply: bool,
}

#[derive(clap::Args)]
struct Serve {
    /// Where the store lives (a persistent volume in a cluster).
    #[arg(long, default_value = "/var/lib/catalog", env = "CATALOG_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "CATALOG_BIND")]
    bind: SocketAddr,
    /// Serving certificate (PEM chain); reloaded when the file changes.
    #[arg(long)]
    tls_cert_file: PathBuf,
    /// Serving key (PEM); reloaded when the file changes.
    #[arg(long)]
    tls_private_key_file: PathBuf,
    /// How often the serving certificate files are checked for a change.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// kubeconfig for reaching kube-apiserver (default: $KUBECONFIG, else the in-cluster
    /// service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// CA bundle for client certificates, instead of the ConfigMap's client-ca-file.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// CA bundle for front-proxy certificates, instead of the ConfigMap's
    /// requestheader-client-ca-file.
    #[arg(long)]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Common names a front-proxy certificate may carry (comma-separated; empty list: any).
    #[arg(long, value_delimiter = ',')]
    requestheader_allowed_names: Option<Vec<String>>,
    /// Headers naming the user (comma-separated), e.g. X-Remote-User.
    #[arg(long, value_delimiter = ',')]
    requestheader_username_headers: Option<Vec<String>>,
    /// Headers naming the user's UID, e.g. X-Remote-Uid.
    #[arg(long, value_delimiter = ',')]
    requestheader_uid_headers: Option<Vec<String>>,
    /// Headers naming the user's groups, e.g. X-Remote-Group.
    #[arg(long, value_delimiter = ',')]
    requestheader_group_headers: Option<Vec<String>>,
    /// Prefixes of headers carrying extra user attributes, e.g. X-Remote-Extra-.
    #[arg(long, value_delimiter = ',')]
    requestheader_extra_headers_prefix: Option<Vec<String>>,
    /// How long TokenReview answers are cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    authentication_token_webhook_cache_ttl: Duration,
    /// Audiences bearer tokens must be meant for (comma-separated; default: kube-apiserver's).
    #[arg(long, value_delimiter = ',')]
    authentication_audiences: Vec<String>,
    /// How long an allowing SubjectAccessReview answer is cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview answer is cached.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Serve requests nothing authenticates as system:anonymous (authorization still applies).
    #[arg(long)]
    anonymous_auth: bool,
    /// Namespace of the Lease that picks the one replica that verifies.
    #[arg(long, env = "POD_NAMESPACE", default_value = "catalog-system")]
    lease_namespace: String,
    /// Name of that Lease.
    #[arg(long, default_value = "catalog-apiserver-verifier")]
    lease_name: String,
    /// This replica's name in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    lease_identity: Option<String>,
    /// How long the Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How often the holder renews and the others try to take over.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    lease_retry: Duration,
    #[command(flatten)]
    serving: Serving,
}

#[derive(clap::Args)]
struct Standalone {
    /// Where the store, the certificates and the kubeconfig live.
    #[arg(long, default_value = "./catalog-data", env = "CATALOG_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:8443", env = "CATALOG_BIND")]
    bind: SocketAddr,
    #[command(flatten)]
    serving: Serving,
}

/// Flags every serving mode shares.
#[derive(clap::Args)]
struct Serving {
    /// How long the store keeps history: the reach of continue tokens and of watch resumption.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    history_retention: Duration,
    /// Interval between watch BOOKMARK events for watchers that allow them.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    watch_bookmark_interval: Duration,
    /// How long a shutdown waits for in-flight requests.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// The store's page cache, in MiB.
    #[arg(long, default_value_t = 256)]
    store_cache_mib: usize,
    /// Open connections at most; at the cap the longest-idle one is closed to make room
    /// (default: the descriptor limit less an eighth).
    #[arg(long)]
    max_connections: Option<usize>,
    /// How long an HTTP/1 request head may take to arrive (kube-apiserver's ReadHeaderTimeout).
    #[arg(long, default_value = "32s", value_parser = parse_duration)]
    request_header_timeout: Duration,
    /// How long a request body may take to arrive (kube-apiserver's request timeout).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    request_body_timeout: Duration,
    /// How long a connection with no request in flight is kept (kube-apiserver's IdleTimeout).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    idle_connection_timeout: Duration,
    /// Testing only: a request for this path panics.
    #[arg(long, hide = true)]
    fault_panic_path: Option<String>,
    #[command(flatten)]
    verification: Verification,
}

/// The verification loop's flags.
#[derive(clap::Args)]
struct Verification {
    /// Verify entries against their registries and write the result into their status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    verify: bool,
    /// Checks running at once.
    #[arg(long, default_value_t = 16)]
    verify_concurrency: usize,
    /// Failures in a row after which an entry is Failed.
    #[arg(long, default_value_t = 5)]
    verify_max_failures: u32,
    /// First retry delay after a failure; doubled per failure, with jitter.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    verify_retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    verify_retry_cap: Duration,
    /// How long one registry answer serves every entry with the same reference.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    verify_share_window: Duration,
    /// Requests per second to one registry host.
    #[arg(long, default_value_t = 10.0)]
    registry_rate: f64,
    /// Consecutive failures that stop contacting a registry host for a cool-down.
    #[arg(long, default_value_t = 5)]
    registry_failure_threshold: u32,
    /// How long a failing registry host is left alone before one probe.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    registry_cool_down: Duration,
    /// How long one registry request may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    registry_timeout: Duration,
    /// CA certificates per registry host, in containers' certs.d layout (DIR/HOST[:PORT]/*.crt).
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// A registry host reached over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// An auth file with registry credentials (repeatable; default
    /// $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json).
    #[arg(long = "registry-auth-file")]
    registry_auth_files: Vec<PathBuf>,
    /// The OpenShift internal registry, reached with the service account token.
    #[arg(
        long,
        default_value = "image-registry.openshift-image-registry.svc:5000"
    )]
    openshift_registry: String,
    /// The service account token presented to the OpenShift internal registry.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    service_account_token_file: PathBuf,
}

impl Verification {
    fn options(&self) -> verify::VerifyOptions {
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

    fn credentials(&self, cluster: Option<kube::Client>) -> verify::credentials::CredentialSources {
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

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is one line in the log (where, and what); the request it happened in is
    // answered with a 500 and the server goes on.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(%location, "panicked: {message}");
    }));
    let cli = Cli::parse();
    // One TLS provider for every client and server in the process (oci-client's reqwest
    // brings none of its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Standalone(args) => runtime.block_on(standalone(*args)),
        Command::Certs(args) => {
            certs::write_service_certificates(&args.out, &args.service, &args.namespace, args.days)
                .map(|()| {
                    println!(
                        "wrote ca.crt, tls.crt, tls.key and apiservice-cabundle.yaml to {}",
                        args.out.display()
                    )
                })
        }
        Command::Import(args) => runtime.block_on(import_entries(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn standalone(args: Standalone) -> Result<(), String> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let hosts = vec![
        args.bind.ip().to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let files = certs::ensure_standalone(dir, &hosts)?;
    let serving = ServingCertificate::load(&files.serving_cert, &files.serving_key)?;
    let tls = server::tls::server_config(serving)?;
    let ca = read_text(&files.ca)?;
    let auth = Auth::standalone(
        auth::config::Sources {
            client_ca: Some(ca),
            ..Default::default()
        }
        .build()?,
    );
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("binding {}: {e}", args.bind))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    certs::write_kubeconfig(
        &kubeconfig,
        &certs::kubeconfig(&files, &format!("https://{address}"))?,
    )?;
    // Alone, this process always verifies.
    let (_always, leading) = watch::channel(true);
    run(
        listener,
        tls,
        Arc::new(auth),
        None,
        leading,
        &dir.join("store"),
        args.serving,
    )
    .await?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| e.to_string())
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("kube-apiserver client configuration: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("kube-apiserver client: {e}"))
}

async fn import_entries(args: Import) -> Result<(), String> {
    let source = kube_client(args.from_kubeconfig.as_deref()).await?;
    let target = match args.kubeconfig.as_deref() {
        Some(path) => kube_client(Some(path)).await?,
        None => source.clone(),
    };
    let summary = import::import(source, target, args.apply).await?;
    let mode = if args.apply {
        ""
    } else {
        " (dry run: nothing written; --apply to write)"
    };
    let not_imported = match summary.not_imported {
        0 => String::new(),
        n => format!(", {n} fields not imported (named above)"),
    };
    println!(
        "created {}, updated {}, unchanged {}, failed {}{not_imported}{mode}",
        summary.created, summary.updated, summary.unchanged, summary.failed
    );
    if summary.failed > 0 {
        return Err(format!("{} objects could not be imported", summary.failed));
    }
    Ok(())
}

async fn serve(args: Serve) -> Result<(), String> {
    let serving = ServingCertificate::load(&args.tls_cert_file, &args.tls_private_key_file)?;
    serving.clone().watch(args.tls_reload_interval);
    let tls = server::tls::server_config(serving)?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let flags = auth::config::Sources {
        client_ca: args.client_ca_file.as_deref().map(read_text).transpose()?,
        request_header_ca: args
            .requestheader_client_ca_file
            .as_deref()
            .map(read_text)
            .transpose()?,
        allowed_names: args.requestheader_allowed_names,
        username_headers: args.requestheader_username_headers,
        uid_headers: args.requestheader_uid_headers,
        group_headers: args.requestheader_group_headers,
        extra_headers_prefix: args.requestheader_extra_headers_prefix,
    };
    let reviewer = auth::review::Reviewer::new(
        client.clone(),
        auth::review::ReviewOptions {
            token_ttl: args.authentication_token_webhook_cache_ttl,
            allow_ttl: args.authorization_webhook_cache_authorized_ttl,
            deny_ttl: args.authorization_webhook_cache_unauthorized_ttl,
            audiences: args.authentication_audiences,
        },
    );
    let auth = Arc::new(Auth::delegated(reviewer, args.anonymous_auth));
    if flags.client_ca.is_some() || flags.request_header_ca.is_some() {
        // Flags alone are enough to start; the ConfigMap, if published, completes them.
        auth.set_config(flags.build()?);
    }
    tokio::spawn(auth::config::follow_config_map(
        client.clone(),
        flags,
        auth.clone(),
    ));
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("creating {}: {e}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("binding {}: {e}", args.bind))?;
    let identity = match args.lease_identity {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("catalog-apiserver-{}", std::process::id())),
    };
    let lease = verify::lease::LeaseOptions {
        namespace: args.lease_namespace,
        name: args.lease_name,
        identity,
        duration: args.lease_duration,
        retry: args.lease_retry,
    };
    let (leader, leading) = watch::channel(false);
    // The Lease only picks who verifies: with verification off there is nothing to hold.
    if args.serving.verification.verify {
        tokio::spawn(verify::lease::hold(client.clone(), lease, leader));
    }
    run(
        listener,
        tls,
        auth,
        Some(client),
        leading,
        &args.data_dir.join("store"),
        args.serving,
    )
    .await
}

/// Opens the store and serves until SIGTERM or SIGINT, then shuts down gracefully.
async fn run(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    auth: Arc<Auth>,
    cluster: Option<kube::Client>,
    leading: watch::Receiver<bool>,
    store_dir: &Path,
    serving: Serving,
) -> Result<(), String> {
    let options = Options {
        retention: serving.history_retention,
        cache_bytes: serving.store_cache_mib << 20,
        ..Options::default()
    };
    let store = Store::open(store_dir, options)
        .map_err(|e| format!("opening the store in {}: {e}", store_dir.display()))?;
    let (stop, stopped) = watch::channel(false);
    let descriptors = server::connections::raise_descriptor_limit();
    let max_connections = serving
        .max_connections
        .unwrap_or_else(|| server::connections::default_max_connections(descriptors));
    tracing::info!(descriptors, max_connections, "connection limits");
    let config = server::Config {
        bookmark_interval: serving.watch_bookmark_interval,
        max_body_bytes: registry::MAX_OBJECT_BYTES,
        body_read_timeout: serving.request_body_timeout,
        connections: server::ConnectionLimits {
            max_connections,
            header_read_timeout: serving.request_header_timeout,
            idle_timeout: serving.idle_connection_timeout,
        },
        panic_path: serving.fault_panic_path,
    };
    let registry = registry::Registry::new(store);
    let metrics = Arc::new(observe::Metrics::new(store_dir));
    if serving.verification.verify {
        let verification = &serving.verification;
        let verifier = verify::Verifier::new(
            registry.clone(),
            verification.credentials(cluster),
            verification.options(),
            metrics.clone(),
        );
        tokio::spawn(Arc::new(verifier).run(stopped.clone(), leading));
    }
    let app = Arc::new(server::App::new(
        registry,
        auth,
        metrics,
        config,
        stopped.clone(),
    ));
    tracing::info!(address = %listener.local_addr().map_err(|e| e.to_string())?, "serving");
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    server::serve(listener, tls, app, stopped, serving.shutdown_grace).await;
    // The store closes when the last handle drops: every acknowledged write is already durable.
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
