//! TLS settings shared by Bursar's clients and servers: rustls with the
//! ring provider only (never aws-lc), PEM files read with errors that name
//! the file, trust roots with private CAs, and client/server identities for
//! mutual TLS.
//!
//! Files are configuration from outside: a missing, oversized or malformed
//! file is an error message, never a panic.

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;

/// Largest PEM file read (a chain or a CA bundle is a few KiB; the Mozilla
/// bundle is about 250 KiB).
pub const PEM_FILE_MAX: u64 = 4 << 20;

/// Why TLS material could not be read or a TLS configuration built. File
/// errors name the option (`what`) and the path; none quotes a key file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {source}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}: {len} bytes is over the {max}-byte limit for a PEM file", path.display())]
    TooLarge { what: String, path: PathBuf, len: u64, max: u64 },
    #[error("{what} {}: not a PEM certificate file: {source}", path.display())]
    NotPem {
        what: String,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {}: holds no PEM certificate", path.display())]
    NoCertificate { what: String, path: PathBuf },
    #[error("{what} {}: holds no PEM private key", path.display())]
    NoKey { what: String, path: PathBuf },
    #[error("not a usable CA certificate: {0}")]
    UnusableCa(#[source] rustls::Error),
    #[error("no trust roots: give a CA certificate")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Setup(#[source] rustls::Error),
    #[error("client certificate verification: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the client certificate and key do not fit together: {0}")]
    ClientKeyMismatch(#[source] rustls::Error),
    #[error("the server certificate and key do not fit together: {0}")]
    ServerKeyMismatch(#[source] rustls::Error),
}

/// The one crypto provider of this repository.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file, bounded in size; `what` names it in errors (e.g. `--connectors-ca-file`).
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read { what: what.to_string(), path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > PEM_FILE_MAX {
        return Err(TlsError::TooLarge { what: what.to_string(), path: path.to_path_buf(), len, max: PEM_FILE_MAX });
    }
    std::fs::read(path).map_err(read)
}

/// Every certificate of a PEM file (at least one).
pub fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::NotPem { what: what.to_string(), path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.to_string(), path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, what)?;
    // The error never quotes the file (nor the parser's error): it holds a secret.
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| TlsError::NoKey { what: what.to_string(), path: path.to_path_buf() })
}

/// A certificate chain and its private key: a server's, or a client's for
/// mutual TLS.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Loads `cert` (a PEM chain, leaf first) and `key`; `what` prefixes errors.
    pub fn load(cert: &Path, key: &Path, what: &str) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: read_certs(cert, &format!("{what} certificate"))?,
            key: read_key(key, &format!("{what} key"))?,
        })
    }
}

/// Trust roots: the public web PKI (Mozilla's roots, compiled in) when
/// `public`, plus every certificate in `extra` (a private CA).
pub fn roots(public: bool, extra: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if public {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in extra {
        store.add(cert.clone()).map_err(TlsError::UnusableCa)?;
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(store)
}

/// A client that verifies servers against `roots` (chain and host name).
pub fn client_config(roots: RootCertStore, identity: Option<Identity>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots);
    finish_client(builder, identity)
}

/// A client that verifies servers with `verifier` (for checks other than
/// the web PKI's, such as PostgreSQL's `sslmode=verify-ca`).
pub fn client_config_with_verifier(
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    finish_client(builder, identity)
}

fn finish_client(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder.with_client_auth_cert(id.chain, id.key).map_err(TlsError::ClientKeyMismatch),
    }
}

/// A server presenting `identity`; with `client_roots`, clients must show a
/// certificate issued by one of them (mutual TLS).
pub fn server_config(identity: Identity, client_roots: Option<RootCertStore>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(TlsError::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(identity.chain, identity.key).map_err(TlsError::ServerKeyMismatch)
}

/// An error and its causes on one line (TLS failures hide in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_generated_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (write(dir.path(), "c.pem", &cert.pem()), write(dir.path(), "k.pem", &key.serialize_pem()));
        let id = Identity::load(&c, &k, "--tls").unwrap();
        assert_eq!(id.chain.len(), 1);
        server_config(id.clone(), None).unwrap();
        client_config(roots(false, &id.chain).unwrap(), Some(id)).unwrap();

        let garbage = write(dir.path(), "g.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
        assert!(read_certs(&garbage, "--ca").unwrap_err().to_string().contains("not a PEM certificate file"));
        let empty = write(dir.path(), "e.pem", "nothing here");
        assert!(read_certs(&empty, "--ca").unwrap_err().to_string().contains("holds no PEM certificate"));
        let err = read_key(&c, "--key").unwrap_err().to_string();
        assert!(err.contains("holds no PEM private key") && !err.contains("BEGIN"), "{err}");
        let missing = read_certs(&dir.path().join("nope.pem"), "--ca").unwrap_err().to_string();
        assert!(missing.starts_with("--ca ") && missing.contains("nope.pem"), "{missing}");
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big).unwrap().set_len(PEM_FILE_MAX + 1).unwrap();
        assert!(read_certs(&big, "--ca").unwrap_err().to_string().contains("limit"));
        assert!(roots(false, &[]).is_err());
        assert!(roots(true, &[]).unwrap().len() > 50);
    }
}
