//! Starting the real server and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A running `catalog-apiserver standalone` (or `serve`) with its own data directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Option<Child>,
    log: Arc<Log>,
}

/// The server's log lines as they come, so that a test can wait for what the server says it
/// did (a configuration loaded, a certificate reloaded) instead of polling for its effect.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until more than `seen` lines contain `needle`.
    fn wait_for(&self, needle: &str, seen: usize) {
        let lines = self.lines.lock().unwrap();
        let (lines, timeout) = self
            .grew
            .wait_timeout_while(lines, Duration::from_secs(60), |lines| {
                lines.iter().filter(|l| l.contains(needle)).count() <= seen
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "the server never logged {needle:?}: {lines:#?}"
        );
    }
}

pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv_binary("kubectl"))
}

/// Runs a program to its end; its standard output, once it has exited 0.
#[track_caller]
pub fn succeed(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A program of the peers' virtualenv that scripts/install-peers fills.
pub fn venv_binary(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".peers/venv/bin")
        .join(name)
}

/// Starts the binary. Verification is off unless `extra` turns it on: entries of most tests
/// point at registries that do not exist here, and their status must stay as written.
/// `descriptors` sets the process's limit on open files (soft and hard), as a container's
/// `ulimit -n` would.
fn spawn(
    mode: &str,
    dir: &Path,
    bind: &str,
    extra: &[&str],
    descriptors: Option<u64>,
) -> (Child, String, Arc<Log>) {
    let verify = if extra.iter().any(|a| a.starts_with("--verify=")) {
        None
    } else {
        Some("--verify=false")
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_catalog-apiserver"));
    command
        .args([mode, "--data-dir", dir.to_str().unwrap(), "--bind", bind])
        .args(extra)
        .args(verify)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    if let Some(limit) = descriptors {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
        unsafe {
            command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
    let mut child = command.spawn().expect("start catalog-apiserver");
    // The server logs its address once it is serving: wait for that line, not for a time.
    let log = Arc::new(Log::default());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("the server exited before serving")
            .unwrap();
        log.push(line.clone());
        if let Some(at) = line.find("address=") {
            let rest = &line[at + "address=".len()..];
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep reading the log, so the server never blocks on a full pipe and tests can wait on it.
    let kept = log.clone();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| kept.push(line)));
    (child, address, log)
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Server::spawn_in(tempfile::tempdir().unwrap(), "standalone", extra)
    }

    /// `catalog-apiserver serve` with these flags, its data directory in `dir`.
    pub fn serve(dir: tempfile::TempDir, flags: &[&str]) -> Server {
        Server::spawn_in(dir, "serve", flags)
    }

    /// `standalone` allowed only `descriptors` open files.
    pub fn start_limited(descriptors: u64, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, address, log) = spawn(
            "standalone",
            dir.path(),
            "127.0.0.1:0",
            extra,
            Some(descriptors),
        );
        Server {
            dir,
            address,
            child: Some(child),
            log,
        }
    }

    fn spawn_in(dir: tempfile::TempDir, mode: &str, extra: &[&str]) -> Server {
        let (child, address, log) = spawn(mode, dir.path(), "127.0.0.1:0", extra, None);
        Server {
            dir,
            address,
            child: Some(child),
            log,
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
        }
    }

    /// Kills the server with SIGKILL: no shutdown of any kind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server again on the same address and data directory (stopping it first if
    /// it runs).
    pub fn restart(&mut self, extra: &[&str]) {
        self.stop();
        let (child, address, log) = spawn(
            "standalone",
            self.dir.path(),
            &self.address.clone(),
            extra,
            None,
        );
        assert_eq!(address, self.address);
        self.child = Some(child);
        self.log = log;
    }

    /// How many log lines so far contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// Waits for a log line containing `needle` beyond the `seen` there were.
    pub fn wait_for_log(&self, needle: &str, seen: usize) {
        self.log.wait_for(needle, seen)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.path().join("pki").join(file)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed by scripts/install-peers");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let output = child.wait_with_output().unwrap();
        Output {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// A reqwest-free HTTPS client: kubectl's own `get --raw` cannot send arbitrary methods,
    /// so plain requests go through curl-like code in `http`.
    pub fn http(&self) -> Http {
        Http::new(self)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn success(self) -> String {
        assert!(self.ok, "kubectl failed: {}\n{}", self.stderr, self.stdout);
        self.stdout
    }

    #[track_caller]
    pub fn failure(self) -> String {
        assert!(
            !self.ok,
            "kubectl succeeded but should not have: {}",
            self.stdout
        );
        self.stderr
    }
}

/// Raw HTTPS requests with the admin certificate (or none), through kube-rs' client.
#[derive(Clone)]
pub struct Http {
    client: kube::Client,
}

impl Http {
    fn new(server: &Server) -> Http {
        Http {
            client: kube_client(server),
        }
    }

    /// Sends a request; returns the status code, headers and body.
    pub async fn send(&self, request: http::Request<Vec<u8>>) -> (u16, http::HeaderMap, Vec<u8>) {
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .unwrap();
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        use http_body_util::BodyExt;
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (code, headers, body)
    }

    /// The status code of a JSON request, or None when there was no answer (the server gone).
    pub async fn try_request(&self, method: &str, path: &str, body: &str) -> Option<u16> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", "application/json")
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let response = self.client.send(request).await.ok()?;
        Some(response.status().as_u16())
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Content-Type", content_type)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let (code, _, body) = self.send(request).await;
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

pub fn kube_client(server: &Server) -> kube::Client {
    kube::Client::try_from(kube_config(server)).unwrap()
}

/// The client configuration of the server's kubeconfig.
pub fn kube_config(server: &Server) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).unwrap();
    futures::executor::block_on(kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &Default::default(),
    ))
    .unwrap()
}

/// A loopback port free a moment ago, for a peer or listener that must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const BASE: &str = "/apis/catalog.automotive.io/v1alpha1";

/// A CatalogImage manifest as a user would write it.
pub fn image_yaml(namespace: &str, name: &str, distro: &str, arch: &str, labels: &str) -> String {
    format!(
        "apiVersion: catalog.automotive.io/v1alpha1
kind: CatalogImage
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{labels}}}
spec:
  registryUrl: quay.io/automotive/{distro}:{name}
  tags: [\"10\", latest]
  verificationInterval: 30m
  metadata:
    architecture: {arch}
    distro: {distro}
    targets:
    - {{name: qemu, verified: true}}
    - {{name: rpi4, verified: false, notes: \"boots, no CAN\"}}
    bootc: true
    buildMode: bootc
    exportFormat: qcow2
"
    )
}

pub fn image_json(namespace: &str, name: &str, distro: &str) -> Value {
    serde_json::json!({
        "apiVersion": "catalog.automotive.io/v1alpha1",
        "kind": "CatalogImage",
        "metadata": {"name": name, "namespace": namespace, "labels": {"distro": distro}},
        "spec": {"registryUrl": format!("quay.io/automotive/{distro}:{name}"), "metadata": {"distro": distro, "architecture": "x86_64"}},
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS connection to the server as the admin, speaking HTTP/1.1 (for WebSocket upgrades).
pub async fn admin_tls(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls(server, b"http/1.1", true).await
}

/// A TLS connection to the server offering `alpn`, with the admin certificate or none.
pub async fn tls(
    server: &Server,
    alpn: &[u8],
    admin: bool,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(server.pki("ca.crt")).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = if admin {
        let chain = vec![CertificateDer::from_pem_file(server.pki("admin.crt")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(server.pki("admin.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}
