//! rustls client configuration from PEM files: the CA that signs etcd's
//! server certificates and an optional client certificate and key.
//!
//! PEM is parsed by `rustls-pki-types` (re-exported as `rustls::pki_types`,
//! its `PemObject` trait), so no PEM crate is needed. Errors name the file,
//! never its content.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{EtcdError, Result};

/// Builds the client TLS configuration (ring provider, TLS 1.2 and 1.3).
pub fn client_config(
    ca_file: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = certs(ca_file)?;
    for ca in cas {
        roots.add(ca).map_err(|e| EtcdError::TlsFile {
            path: ca_file.to_path_buf(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(EtcdError::TlsConfig)?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| EtcdError::TlsFile {
                path: key.to_path_buf(),
                why: format!("no usable PEM private key: {}", pem_why(&e)),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(EtcdError::TlsConfig)?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) | (None, Some(_)) => {
            return Err(EtcdError::TlsFile {
                path: cert_file.or(key_file).unwrap_or(ca_file).to_path_buf(),
                why: "a client certificate needs both cert_file and key_file".into(),
            })
        }
    };
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file; none is an error.
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |why: String| EtcdError::TlsFile {
        path: path.to_path_buf(),
        why,
    };
    let list = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_why(&e)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_why(&e)))?;
    if list.is_empty() {
        return Err(bad("no PEM CERTIFICATE in it".into()));
    }
    Ok(list)
}

/// A PEM error in words, without echoing any of the file's bytes.
fn pem_why(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "no matching PEM section".into(),
        E::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        E::IllegalSectionStart { .. } => "malformed PEM BEGIN line".into(),
        E::Base64Decode(_) => "invalid base64 in a PEM section".into(),
        _ => "invalid PEM".into(),
    }
}
