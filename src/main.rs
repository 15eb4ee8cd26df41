//! catalog-apiserver: a Kubernetes aggregated API server for the catalog of automotive OS images.

mod api;
mod certs;
mod registry;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use catalog_storage::{Options, Store};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

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
    /// Run on this machine with no cluster: own CA, own certificates, a kubeconfig for kubectl.
    Standalone(Standalone),
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
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = match cli.command {
        Command::Standalone(args) => runtime.block_on(standalone(args)),
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
    let tls = server::tls::server_config(&files.serving_cert, &files.serving_key, &files.ca)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("binding {}: {e}", args.bind))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    certs::write_kubeconfig(
        &kubeconfig,
        &certs::kubeconfig(&files, &format!("https://{address}"))?,
    )?;
    run(listener, tls, &dir.join("store"), args.serving).await?;
    Ok(())
}

/// Opens the store and serves until SIGTERM or SIGINT, then shuts down gracefully.
async fn run(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store_dir: &std::path::Path,
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
    let config = server::Config {
        bookmark_interval: serving.watch_bookmark_interval,
        max_body_bytes: 3 << 20,
    };
    let app = Arc::new(server::App::new(
        registry::Registry::new(store),
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
