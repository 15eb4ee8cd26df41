//! catalog-apiserver: a Kubernetes aggregated API server for the catalog of automotive OS images.

mod api;
mod auth;
mod certs;
mod cli;
mod import;
mod kube_errors;
mod observe;
mod registry;
mod server;
mod verify;

use std::path::Path;
use std::sync::Arc;

use catalog_storage::{Options, Postgres, PostgresConfig, SharedLog, StorageError, Store};
use clap::Parser;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::cli::{Cli, Command, Import, Serve, Serving, Standalone};
use crate::server::tls::ServingCertificate;

/// mimalloc gives freed memory back to the system where glibc's malloc keeps it in its
/// arenas: after a round of whole-collection reads, resident memory returns within the minute
/// (measured in BENCHMARKS.md, "Memory of whole-collection readers").
/// Why a command stopped: any module's error, printed as one line.
type Failure = Box<dyn std::error::Error>;

/// How often the console plugin listener's own certificate files are checked for a new one.
const PLUGIN_CERTIFICATE_RELOAD: std::time::Duration = std::time::Duration::from_secs(60);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
                .map_err(Failure::from)
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

async fn standalone(args: Standalone) -> Result<(), Failure> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let hosts = vec![
        args.bind.ip().to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let files = certs::ensure_standalone(dir, &hosts)?;
    let certificate = ServingCertificate::load(&files.serving_cert, &files.serving_key)?;
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
        certificate,
        Arc::new(auth),
        None,
        leading,
        &dir.join("store"),
        args.serving,
    )
    .await?;
    Ok(())
}

fn read_text(path: &Path) -> Result<String, Failure> {
    Ok(std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?)
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, Failure> {
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
    Ok(kube::Client::try_from(config).map_err(|e| format!("kube-apiserver client: {e}"))?)
}

async fn import_entries(args: Import) -> Result<(), Failure> {
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
        return Err(format!("{} objects could not be imported", summary.failed).into());
    }
    Ok(())
}

async fn serve(args: Serve) -> Result<(), Failure> {
    let certificate = ServingCertificate::load(&args.tls_cert_file, &args.tls_private_key_file)?;
    certificate.clone().watch(args.tls_reload_interval);
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
    let identity = verify::lease::unique_identity(args.lease_identity.as_deref());
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
        certificate,
        auth,
        Some(client),
        leading,
        &args.data_dir.join("store"),
        args.serving,
    )
    .await
}

/// Opens the store and serves until SIGTERM or SIGINT, then shuts down gracefully.
fn open_store(dir: &Path, options: &Options) -> Result<Store, Failure> {
    Ok(Store::open(dir, options.clone())
        .map_err(|e| format!("opening the store in {}: {e}", dir.display()))?)
}

/// Makes the local store a copy that follows the shared one. A copy the log cannot continue
/// (older than its history: a replica away longer than --history-retention; or ahead of it:
/// the database restored from a backup) is removed and rebuilt from PostgreSQL's latest state.
async fn follow_shared(
    store: Store,
    dir: &Path,
    options: Options,
    postgres: Postgres,
) -> Result<Store, Failure> {
    let log = SharedLog::connect(postgres)
        .await
        .map_err(|e| format!("connecting to the shared store: {e}"))?;
    let store = match store.follow(log.clone()).await {
        Err(e @ StorageError::Stale { .. }) => {
            tracing::warn!(error = %e, "rebuilding the local copy");
            drop(store);
            std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
            let store = open_store(dir, &options)?;
            store.follow(log).await.map(|()| store)
        }
        followed => followed.map(|()| store),
    }
    .map_err(|e| format!("following the shared store: {e}"))?;
    tracing::info!(revision = store.revision(), "following the shared store");
    Ok(store)
}

/// The PostgreSQL store this replica shares, from `--store` or `--store-file`, and
/// `--store-ca`.
fn shared_store(serving: &Serving) -> Result<Option<Postgres>, Failure> {
    let text = match (&serving.store, &serving.store_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => read_text(path)?.trim().to_string(),
        (None, None) => return Ok(None),
    };
    // The connection string may hold a password: the error names neither.
    let config = text
        .parse::<PostgresConfig>()
        .map_err(|_| "--store is not a PostgreSQL connection string".to_string())?;
    let ca_pem = serving.store_ca.as_deref().map(read_text).transpose()?;
    Ok(Some(Postgres {
        config,
        ca_pem: ca_pem.map(String::into_bytes),
    }))
}

async fn run(
    listener: tokio::net::TcpListener,
    certificate: Arc<ServingCertificate>,
    auth: Arc<Auth>,
    cluster: Option<kube::Client>,
    leading: watch::Receiver<bool>,
    store_dir: &Path,
    serving: Serving,
) -> Result<(), Failure> {
    let options = Options {
        retention: serving.history_retention,
        cache_bytes: serving.store_cache_mib << 20,
        ..Options::default()
    };
    let store = open_store(store_dir, &options)?;
    let store = match shared_store(&serving)? {
        Some(config) => follow_shared(store, store_dir, options, config).await?,
        None => store,
    };
    let (stop, stopped) = watch::channel(false);
    let descriptors = server::connections::raise_descriptor_limit();
    let max_connections = serving
        .max_connections
        .unwrap_or_else(|| server::connections::default_max_connections(descriptors));
    tracing::info!(descriptors, max_connections, "connection limits");
    let limits = server::ConnectionLimits {
        max_connections,
        header_read_timeout: serving.request_header_timeout,
        idle_timeout: serving.idle_connection_timeout,
    };
    let config = server::Config {
        bookmark_interval: serving.watch_bookmark_interval,
        max_body_bytes: registry::MAX_OBJECT_BYTES,
        body_read_timeout: serving.request_body_timeout,
        connections: limits.clone(),
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
    if let Some(bind) = serving.console_plugin.bind {
        let grace = serving.shutdown_grace;
        let plugin = (bind, &serving.console_plugin);
        serve_console_plugin(plugin, &certificate, limits, stopped.clone(), grace).await?;
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let tls = server::tls::server_config(certificate)?;
    server::serve(listener, tls, app, stopped, serving.shutdown_grace).await;
    // The store closes when the last handle drops: every acknowledged write is already durable.
    tracing::info!("stopped");
    Ok(())
}

/// Serves the console plugin's files on `bind`, with their own certificate or the API's,
/// until `stopped`.
async fn serve_console_plugin(
    (bind, plugin): (std::net::SocketAddr, &cli::ConsolePlugin),
    api_certificate: &Arc<ServingCertificate>,
    limits: server::ConnectionLimits,
    stopped: watch::Receiver<bool>,
    grace: std::time::Duration,
) -> Result<(), Failure> {
    let assets = server::Assets::load(&plugin.dir, limits)?;
    let certificate = match (&plugin.cert_file, &plugin.key_file) {
        (Some(cert), Some(key)) => {
            let own = ServingCertificate::load(cert, key)?;
            // OpenShift's service CA renews it in place, well before it expires.
            own.clone().watch(PLUGIN_CERTIFICATE_RELOAD);
            own
        }
        _ => api_certificate.clone(),
    };
    let tls = server::tls::server_config_without_client_certificates(certificate)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("binding {bind}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, "serving the console plugin");
    tokio::spawn(server::serve(
        listener,
        tls,
        Arc::new(assets),
        stopped,
        grace,
    ));
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
