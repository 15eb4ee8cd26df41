//! The TLS configuration. ALPN offers HTTP/2 and HTTP/1.1. Client certificates are asked for
//! but not judged here: as in k8s.io/apiserver (`tls.RequestClientCert`), each request's chain
//! is verified by the authenticator against the CA bundles current at that moment, so a CA
//! rotation applies without new connections. Our serving certificate is reloaded when its
//! files change, for new handshakes, without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why certificates or keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl From<String> for TlsError {
    fn from(message: String) -> Self {
        TlsError(message)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading certificates from {}: {e}", path.display())))
}

/// A server configuration presenting `serving` and asking clients for a certificate.
pub fn server_config(
    serving: Arc<ServingCertificate>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(RequestClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration presenting `serving` and asking for no client certificate: for
/// files anyone may fetch (the console plugin's).
pub fn server_config_without_client_certificates(
    serving: Arc<ServingCertificate>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Asks for a client certificate and checks that the client holds its key (the handshake
/// signature), leaving the chain to the authenticator.
#[derive(Debug)]
struct RequestClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Tokens, anonymous health checks: a connection without a certificate is fine here.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Our serving certificate and key, from files, swapped in place when the files change.
#[derive(Debug)]
pub struct ServingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// When each file was last modified, to notice a change.
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ServingCertificate {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServingCertificate>, TlsError> {
        let loaded = Self::read(cert_path, key_path)?;
        Ok(Arc::new(ServingCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(loaded),
        }))
    }

    fn read(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
        let stamps = (modified(cert_path), modified(key_path));
        let chain = load_certificates(cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| format!("reading key {}: {e}", key_path.display()))?;
        let key = CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("serving certificate {}: {e}", cert_path.display()))?;
        Ok(Loaded {
            key: Arc::new(key),
            stamps,
        })
    }

    /// Reloads when either file's modification time changed; a pair that does not load (a
    /// rotation caught half-written) is retried on the next check, the old one kept meanwhile.
    pub fn reload_if_changed(&self) {
        let stamps = (modified(&self.cert_path), modified(&self.key_path));
        if self
            .current
            .read()
            .expect("serving certificate lock")
            .stamps
            == stamps
        {
            return;
        }
        match Self::read(&self.cert_path, &self.key_path) {
            Ok(loaded) => {
                *self.current.write().expect("serving certificate lock") = loaded;
                tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "serving certificate not reloaded yet"),
        }
    }

    /// Checks the files every `interval` for as long as the process runs.
    pub fn watch(self: Arc<Self>, interval: Duration) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                self.reload_if_changed();
            }
        });
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .expect("serving certificate lock")
                .key
                .clone(),
        )
    }
}
