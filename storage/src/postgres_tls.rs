//! How a replica reaches PostgreSQL: the connection string, and TLS through rustls when the
//! string asks for it (`sslmode=require`) or CAs are given. The server's certificate is then
//! always verified, host name included (what libpq calls `verify-full`), against the CAs
//! given, else the system's trusted roots; a certificate that does not verify fails the
//! connection rather than falling back to plaintext.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StorageError;

/// Where PostgreSQL is and which CAs sign its certificate.
#[derive(Clone, Debug)]
pub struct Postgres {
    pub config: tokio_postgres::Config,
    /// PEM certificates of the CAs that sign PostgreSQL's server certificate.
    pub ca_pem: Option<Vec<u8>>,
}

impl From<tokio_postgres::Config> for Postgres {
    fn from(config: tokio_postgres::Config) -> Self {
        Postgres {
            config,
            ca_pem: None,
        }
    }
}

impl Postgres {
    /// The connection settings and the TLS connector to use (None: plaintext). CAs given make
    /// TLS required, whatever `sslmode` says short of `disable`.
    pub(crate) fn connector(
        &self,
    ) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), StorageError> {
        let mut config = self.config.clone();
        let roots = match (config.get_ssl_mode(), &self.ca_pem) {
            (SslMode::Disable, _) | (SslMode::Prefer, None) => return Ok((config, None)),
            (_, Some(pem)) => roots_from_pem(pem)?,
            (_, None) => system_roots()?,
        };
        config.ssl_mode(SslMode::Require);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok((config, Some(MakeRustlsConnect::new(client))))
    }
}

fn tls_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Shared(format!("TLS to PostgreSQL: {e}"))
}

fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, StorageError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(certificate.map_err(tls_error)?)
            .map_err(tls_error)?;
    }
    if roots.is_empty() {
        return Err(tls_error("the CA file holds no certificate"));
    }
    Ok(roots)
}

fn system_roots() -> Result<rustls::RootCertStore, StorageError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(tls_error(format!(
            "no trusted roots found on this system ({:?}); give the CA",
            found.errors
        )));
    }
    Ok(roots)
}
