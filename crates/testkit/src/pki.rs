//! Test support: a private CA and certificates
//! made for each test with rcgen, written as PEM files, and the
//! `nats-server` configuration blocks that use them. Never for production:
//! keys are generated in-process and written unencrypted to a temp dir.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The files of one test PKI: a CA, a server certificate for `localhost`
/// and `127.0.0.1`, and a client certificate, all signed by the CA.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Why a test PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A CA: its certificate plus the means to sign others.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Result<Ca, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Ca { issuer })
    }

    /// A leaf certificate and its key (PEM), for a server or a client.
    fn leaf(&self, name: &str, server: bool) -> Result<(String, String), PkiError> {
        let names = if server { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { Vec::new() };
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl TestPki {
    /// Generates a CA named `name` and its certificates into `dir` (files
    /// prefixed with `name`, so several PKIs can share a directory).
    pub fn generate(dir: &Path, name: &str) -> Result<TestPki, PkiError> {
        let ca = Ca::new(&format!("{name} test CA"))?;
        let (server_cert, server_key) = ca.leaf(&format!("{name} nats-server"), true)?;
        let (client_cert, client_key) = ca.leaf(&format!("{name} bursar replica"), false)?;
        let write = |file: &str, text: &str| -> Result<PathBuf, PkiError> {
            let path = dir.join(format!("{name}-{file}"));
            match std::fs::write(&path, text) {
                Ok(()) => Ok(path),
                Err(source) => Err(PkiError::Write { path, source }),
            }
        };
        Ok(TestPki {
            ca: write("ca.pem", &ca.issuer.pem())?,
            server_cert: write("server.pem", &server_cert)?,
            server_key: write("server-key.pem", &server_key)?,
            client_cert: write("client.pem", &client_cert)?,
            client_key: write("client-key.pem", &client_key)?,
        })
    }

    /// A nats-server `tls { }` block for client connections serving this
    /// PKI's server certificate; `verify` requires a client certificate
    /// signed by the CA (mutual TLS).
    pub fn server_tls_block(&self, verify: bool) -> String {
        format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: {verify}, timeout: 5 }}\n",
            self.server_cert, self.server_key, self.ca
        )
    }
}
