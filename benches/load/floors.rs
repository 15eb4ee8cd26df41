//! The floors the figures are held against, measured in the same run: serialising a page with
//! serde_json in process, and copying bytes over loopback TLS with nothing behind them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The median time to serialise the items of `page` (a list response) with serde_json.
pub fn serialise_page(page: &[u8]) -> Result<Duration, String> {
    let list: Value = serde_json::from_slice(page).map_err(|e| e.to_string())?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let at = Instant::now();
            let bytes = serde_json::to_vec(&items).expect("values serialise");
            std::hint::black_box(bytes);
            at.elapsed()
        })
        .collect();
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// MB/s of `bytes` streamed over a loopback TLS connection (rustls, ring) to a reader.
pub async fn tls_copy_rate(bytes: usize) -> Result<f64, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(|e| fail(&e))?;
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| e.to_string())?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], private)
        .map_err(|e| fail(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).map_err(|e| fail(&e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail(&e))?;
    let address = listener.local_addr().map_err(|e| fail(&e))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let writer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.ok()?;
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let chunk = vec![b'x'; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            tls.write_all(&chunk[..n]).await.ok()?;
            left -= n;
        }
        tls.shutdown().await.ok()
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| fail(&e))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| fail(&e))?;
    let started = Instant::now();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| fail(&e))?;
    let mut buffer = vec![0u8; 64 << 10];
    let mut read = 0usize;
    loop {
        match tls.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(_) if read >= bytes => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = writer.await;
    Ok(read as f64 / 1e6 / started.elapsed().as_secs_f64())
}
