//! Certificates for standalone mode: a CA, a serving certificate for the bind address and
//! localhost, and an admin client certificate, made once under the data directory and reused
//! afterwards; and the kubeconfig that uses them.

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
pub fn ensure_standalone(dir: &Path, hosts: &[String]) -> Result<StandaloneFiles, String> {
    let files = StandaloneFiles::under(dir);
    if files.ca.exists() && files.serving_cert.exists() && files.admin_cert.exists() {
        return Ok(files);
    }
    fs::create_dir_all(files.ca.parent().expect("pki has a parent")).map_err(|e| e.to_string())?;
    let fail = |e: rcgen::Error| e.to_string();

    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.distinguished_name = name("catalog-apiserver standalone CA", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().map_err(fail)?;
    let mut serving = CertificateParams::new(hosts.to_vec()).map_err(fail)?;
    serving.distinguished_name = name("catalog-apiserver", None);
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(fail)?;

    // user admin in group system:masters, as a kubeadm admin.conf would have it
    let admin_key = KeyPair::generate().map_err(fail)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    admin.distinguished_name = name("admin", Some("system:masters"));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(fail)?;

    let write = |path: &Path, text: String| {
        fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&files.serving_cert, serving_cert.pem())?;
    write_private(&files.serving_key, &serving_key.serialize_pem())?;
    write(&files.admin_cert, admin_cert.pem())?;
    write_private(&files.admin_key, &admin_key.serialize_pem())?;
    // The CA last: its presence marks the set as complete.
    write(&files.ca, ca_cert.pem())?;
    Ok(files)
}

/// A kubeconfig for `server` authenticating with the admin certificate.
pub fn kubeconfig(files: &StandaloneFiles, server: &str) -> Result<String, String> {
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

pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<(), String> {
    write_private(path, contents)
}
