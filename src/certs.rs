//! Certificates we make ourselves: for standalone mode, a CA, a serving certificate for the bind
//! address and localhost, and an admin client certificate, made once under the data directory
//! and reused afterwards, with the kubeconfig that uses them; and for `catalog-apiserver certs`,
//! a CA and a serving certificate for the in-cluster Service, with the APIService patch that
//! trusts that CA.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub struct StandaloneFiles {
    pub ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl StandaloneFiles {
    fn under(dir: &Path) -> StandaloneFiles {
        let pki = dir.join("pki");
        StandaloneFiles {
            ca: pki.join("ca.crt"),
            serving_cert: pki.join("serving.crt"),
            serving_key: pki.join("serving.key"),
            admin_cert: pki.join("admin.crt"),
            admin_key: pki.join("admin.key"),
        }
    }
}

/// Why certificates, keys or a kubeconfig could not be made or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertsError(String);

impl From<String> for CertsError {
    fn from(message: String) -> Self {
        CertsError(message)
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

/// Makes the CA and certificates under `dir/pki` unless they exist; `hosts` are the serving
/// certificate's names (IP addresses or DNS names).
pub fn ensure_standalone(dir: &Path, hosts: &[String]) -> Result<StandaloneFiles, CertsError> {
    let files = StandaloneFiles::under(dir);
    if files.ca.exists() && files.serving_cert.exists() && files.admin_cert.exists() {
        return Ok(files);
    }
    fs::create_dir_all(files.ca.parent().expect("pki has a parent")).map_err(|e| e.to_string())?;

    let (ca_pem, issuer) = new_ca("catalog-apiserver standalone CA", None)?;
    let (serving_cert, serving_key) = issue(
        &issuer,
        name("catalog-apiserver", None),
        hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
        None,
    )?;
    // user admin in group system:masters, as a kubeadm admin.conf would have it
    let (admin_cert, admin_key) = issue(
        &issuer,
        name("admin", Some("system:masters")),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        None,
    )?;

    let write = |path: &Path, text: String| {
        fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&files.serving_cert, serving_cert)?;
    write_private(&files.serving_key, &serving_key)?;
    write(&files.admin_cert, admin_cert)?;
    write_private(&files.admin_key, &admin_key)?;
    // The CA last: its presence marks the set as complete.
    write(&files.ca, ca_pem)?;
    Ok(files)
}

fn fail(e: rcgen::Error) -> String {
    e.to_string()
}

/// Makes `params` valid until `days` from now, when given (rcgen's default is far away).
fn valid_for(params: &mut CertificateParams, days: Option<u32>) -> Result<(), String> {
    let Some(days) = days else { return Ok(()) };
    let date = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days as i64))
        .map_err(|e| e.to_string())?;
    params.not_after =
        rcgen::date_time_ymd(date.year() as i32, date.month() as u8, date.day() as u8);
    Ok(())
}

/// A new CA: its certificate (PEM) and what issues with it.
fn new_ca(
    common_name: &str,
    days: Option<u32>,
) -> Result<(String, Issuer<'static, KeyPair>), String> {
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    valid_for(&mut params, days)?;
    let pem = params.self_signed(&key).map_err(fail)?.pem();
    Ok((pem, Issuer::new(params, key)))
}

/// A certificate for `subject_alt_names`, issued by `issuer`: (certificate, key), PEM.
fn issue(
    issuer: &Issuer<'static, KeyPair>,
    subject: DistinguishedName,
    subject_alt_names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    days: Option<u32>,
) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::new(subject_alt_names).map_err(fail)?;
    params.distinguished_name = subject;
    params.extended_key_usages = vec![usage];
    valid_for(&mut params, days)?;
    let cert = params.signed_by(&key, issuer).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The names a Service is reached by inside the cluster.
fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Writes `ca.crt`, `tls.crt`, `tls.key` and `apiservice-cabundle.yaml` (the APIService patch
/// that trusts the CA) for Service `service` in `namespace` into `out`.
pub fn write_service_certificates(
    out: &Path,
    service: &str,
    namespace: &str,
    days: u32,
) -> Result<(), CertsError> {
    fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let (ca_pem, issuer) = new_ca(&format!("{service}.{namespace} CA"), Some(days))?;
    let dns = format!("{service}.{namespace}.svc");
    let (cert, key) = issue(
        &issuer,
        name(&dns, None),
        service_names(service, namespace),
        ExtendedKeyUsagePurpose::ServerAuth,
        Some(days),
    )?;
    let write = |file: &str, text: &str| {
        let path = out.join(file);
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("ca.crt", &ca_pem)?;
    write("tls.crt", &cert)?;
    write_private(&out.join("tls.key"), &key)?;
    let patch = format!(
        "# Written by `catalog-apiserver certs`: trust the CA that signed tls.crt.\n\
         apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1alpha1.catalog.automotive.io\n\
         spec:\n  caBundle: {}\n",
        STANDARD.encode(&ca_pem)
    );
    Ok(write("apiservice-cabundle.yaml", &patch)?)
}

/// A kubeconfig for `server` authenticating with the admin certificate.
pub fn kubeconfig(files: &StandaloneFiles, server: &str) -> Result<String, CertsError> {
    let data = |path: &Path| {
        fs::read(path)
            .map(|b| STANDARD.encode(b))
            .map_err(|e| format!("reading {}: {e}", path.display()))
    };
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: catalog
  cluster:
    server: {server}
    certificate-authority-data: {}
users:
- name: admin
  user:
    client-certificate-data: {}
    client-key-data: {}
contexts:
- name: catalog
  context:
    cluster: catalog
    user: admin
    namespace: default
current-context: catalog
",
        data(&files.ca)?,
        data(&files.admin_cert)?,
        data(&files.admin_key)?,
    ))
}

pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<(), CertsError> {
    Ok(write_private(path, contents)?)
}
