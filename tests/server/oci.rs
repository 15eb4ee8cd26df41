//! A real OCI registry on loopback for the verification tests: Debian's docker-registry
//! (CNCF distribution 2.8) with TLS from a test CA and htpasswd authentication, and images
//! pushed into it with skopeo from OCI layouts written here byte by byte, so their digests are
//! known before they are pushed.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::common::free_port;
use super::pki::Ca;

pub const USER: &str = "pipeline";
pub const PASSWORD: &str = "s3cret-pass";

pub struct Registry {
    pub host: String,
    pub dir: tempfile::TempDir,
    /// Over TLS with htpasswd; otherwise plain HTTP, open to anyone (an "insecure" registry).
    secure: bool,
    child: Option<Child>,
}

impl Registry {
    /// TLS from a test CA and htpasswd authentication.
    pub fn start() -> Registry {
        Registry::start_with(true)
    }

    /// Plain HTTP, no authentication: what `--insecure-registry` is for.
    pub fn start_insecure() -> Registry {
        Registry::start_with(false)
    }

    fn start_with(secure: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("registry-ca");
        let serving = ca.server("registry");
        fs::write(dir.path().join("server.crt"), &serving.cert).unwrap();
        fs::write(dir.path().join("server.key"), &serving.key).unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils)");
        fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let dir_text = dir.path().display();
        let (tls, auth) = if secure {
            (
                format!(
                    ", tls: {{certificate: {dir_text}/server.crt, key: {dir_text}/server.key}}"
                ),
                format!("auth: {{htpasswd: {{realm: test, path: {dir_text}/htpasswd}}}}\n"),
            )
        } else {
            (String::new(), String::new())
        };
        let config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {root}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: {host}{tls}}}\n{auth}",
            root = dir.path().join("data").display(),
        );
        fs::write(dir.path().join("config.yml"), config).unwrap();
        // The CA where skopeo and our server look for it (containers' certs.d layout).
        let certs = dir.path().join("certs.d").join(&host);
        fs::create_dir_all(&certs).unwrap();
        fs::write(certs.join("ca.crt"), &ca.pem).unwrap();
        let mut registry = Registry {
            host,
            dir,
            secure,
            child: None,
        };
        registry.resume();
        registry
    }

    /// The containers certs.d directory holding this registry's CA.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Requests for manifests the registry has logged so far.
    pub fn manifest_requests(&self) -> usize {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/manifests/") && l.contains("\"GET "))
            .count()
    }

    /// Starts (again) on the same address and storage; returns once it accepts connections.
    pub fn resume(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("docker-registry")
            .args([
                "serve",
                self.dir.path().join("config.yml").to_str().unwrap(),
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start; see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Pushes an OCI layout's `tag` to `repository:tag` with skopeo.
    pub fn push(&self, layout: &Layout, repository: &str, tag: &str) {
        let mut skopeo = Command::new("skopeo");
        skopeo.args(["copy", "--all", "--preserve-digests"]);
        if self.secure {
            skopeo
                .arg("--dest-cert-dir")
                .arg(self.certs_dir().join(&self.host));
            skopeo.args(["--dest-creds", &format!("{USER}:{PASSWORD}")]);
        } else {
            skopeo.arg("--dest-tls-verify=false");
        }
        let output = skopeo
            .arg(format!("oci:{}:{tag}", layout.dir.path().display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host))
            .output()
            .expect("skopeo");
        assert!(
            output.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: tempfile::TempDir,
    refs: Vec<Value>,
}

/// A blob as a descriptor names it.
pub struct Blob {
    pub digest: String,
    pub size: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new()
    }
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> Blob {
        let hex = format!("{:x}", Sha256::digest(bytes));
        let mut file = fs::File::create(self.dir.path().join("blobs/sha256").join(&hex)).unwrap();
        file.write_all(bytes).unwrap();
        Blob {
            digest: format!("sha256:{hex}"),
            size: bytes.len(),
        }
    }

    /// A single-platform image: a config with `labels`, one (empty tar) layer, a manifest with
    /// annotations.
    pub fn image(
        &self,
        architecture: &str,
        variant: Option<&str>,
        annotations: Value,
        labels: Value,
    ) -> (Blob, Value) {
        let layer_bytes = vec![0u8; 1024]; // an empty tar archive
        let layer = self.blob(&layer_bytes);
        let mut config = json!({"architecture": architecture, "os": "linux", "created": "2026-01-02T03:04:05Z",
            "config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": [layer.digest]}});
        if let Some(variant) = variant {
            config["variant"] = variant.into();
        }
        let config = self.blob(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest, "size": layer.size}],
            "annotations": annotations,
        });
        let image_size = json!(config.size + layer.size);
        (self.blob(manifest.to_string().as_bytes()), image_size)
    }

    /// An index of `manifests` (descriptor, architecture, variant).
    pub fn index(&self, manifests: &[(&Blob, &str, Option<&str>)], annotations: Value) -> Blob {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(blob, architecture, variant)| {
                let mut platform = json!({"architecture": architecture, "os": "linux"});
                if let Some(variant) = variant {
                    platform["variant"] = (*variant).into();
                }
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob.digest, "size": blob.size, "platform": platform})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries, "annotations": annotations});
        self.blob(index.to_string().as_bytes())
    }

    /// Names `blob` (a manifest or an index) `tag` in the layout's index.json.
    pub fn tag(&mut self, blob: &Blob, media_type: &str, tag: &str) {
        self.refs.push(
            json!({"mediaType": media_type, "digest": blob.digest, "size": blob.size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}),
        );
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(self.dir.path().join("index.json"), index.to_string()).unwrap();
    }
}

/// An auth file (containers' auth.json) with these credentials for `host`.
pub fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join(format!("auth-{user}-{}.json", password.len()));
    fs::write(&path, json!({"auths": {host: {"auth": auth}}}).to_string()).unwrap();
    path
}
