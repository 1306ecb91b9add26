//! The HTTP client every mirror uses: rustls with the ring provider (the one TLS provider in the tree),
//! Mozilla's roots compiled in so a static binary works in an empty container, and an optional CA file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::MirrorError;

/// A rustls client configuration: ring, TLS 1.2 and 1.3, webpki-root-certs' roots plus those in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, MirrorError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| MirrorError::Config(format!("{}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| MirrorError::Config(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(MirrorError::Config(format!(
                "{}: no PEM certificates",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| MirrorError::Config(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MirrorError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// An HTTP client with [`client_config`], connect and idle timeouts, and mast's user agent.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, MirrorError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_file)?)
        .user_agent(concat!("mast/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        // A pass opens up to a dozen connections to fetch chunks at once; between passes one per mirror
        // is all a poll reuses, and each idle connection holds its buffers in an agent meant to idle in
        // a few MiB.
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|e| MirrorError::Config(format!("HTTP client: {e}")))
}
