//! The files the security options name, read once and checked before any
//! connection: PEM certificates and keys for TLS, an nkey seed, a
//! credentials file. Errors name the file and say what is wrong with it,
//! never what it holds.

use crate::error::{NatsError, NatsErrorKind};
use async_nats::rustls::{self, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Largest file read for an option: certificates, keys and credentials are
/// a few KiB; a CA bundle well under this.
const FILE_BYTES_MAX: u64 = 1 << 20;

/// The bytes of `path`, at most [`FILE_BYTES_MAX`]. `option` names the
/// option that gave the path, for the message.
pub fn read_bounded(path: &Path, option: &str) -> Result<Vec<u8>, NatsError> {
    let unreadable =
        |why: String| NatsError::new(NatsErrorKind::UnreadableFile, format!("{option} {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(unreadable(format!("larger than {FILE_BYTES_MAX} bytes")));
    }
    Ok(bytes)
}

fn bad_file(option: &str, path: &Path, why: impl std::fmt::Display) -> NatsError {
    NatsError::new(NatsErrorKind::BadFile, format!("{option} {}: {why}", path.display()))
}

/// The CAs a TLS connection trusts: those in `ca_file`, or the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, NatsError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            return Err(NatsError::new(
                NatsErrorKind::BadFile,
                "TLS to NATS: the system has no usable root certificates; give the server's CA with --nats-ca-file",
            ));
        }
        return Ok(roots);
    };
    for (i, cert) in certificates(path, "--nats-ca-file")?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bad_file("--nats-ca-file", path, format!("certificate {} is not a usable CA: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Every PEM certificate in `path` (at least one).
fn certificates(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, NatsError> {
    let bytes = read_bounded(path, option)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad_file(option, path, "not a PEM file of certificates"))?;
    if certs.is_empty() {
        return Err(bad_file(option, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The client TLS configuration: trusted CAs, and the client certificate
/// for mutual TLS when both files are given. Ring is the only provider.
pub fn client_tls(ca_file: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<ClientConfig, NatsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("invariant: ring supports rustls' default protocol versions")
        .with_root_certificates(roots(ca_file)?);
    let Some((cert_path, key_path)) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(cert_path, "--nats-cert-file")?;
    let key_bytes = read_bounded(key_path, "--nats-key-file")?;
    // The parser's error may quote a line of the file: not shown.
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|_| bad_file("--nats-key-file", key_path, "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| {
        NatsError::new(
            NatsErrorKind::BadFile,
            format!(
                "--nats-cert-file {} with --nats-key-file {}: not a usable certificate and key ({e})",
                cert_path.display(),
                key_path.display()
            ),
        )
    })
}

/// The nkey seed in `path` (a user seed, `SU...`, alone or on a line of its own).
pub fn nkey_seed(path: &Path) -> Result<String, NatsError> {
    const OPTION: &str = "--nats-nkey-file";
    let bytes = read_bounded(path, OPTION)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad_file(OPTION, path, "not a text file"))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .ok_or_else(|| bad_file(OPTION, path, "holds no nkey user seed (a line starting with SU)"))?;
    // The library's error is not shown: it may describe the seed.
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| bad_file(OPTION, path, "holds no valid nkey user seed"))?;
    if !pair.public_key().starts_with('U') {
        return Err(bad_file(OPTION, path, "holds a seed that is not a user's"));
    }
    Ok(seed.to_string())
}

/// The contents of a credentials file (user JWT and nkey seed), checked
/// by applying them to `options`.
pub fn with_credentials(
    options: async_nats::ConnectOptions,
    path: &Path,
) -> Result<async_nats::ConnectOptions, NatsError> {
    const OPTION: &str = "--nats-creds-file";
    let bytes = read_bounded(path, OPTION)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad_file(OPTION, path, "not a text file"))?;
    // async-nats' messages name the part missing ("cannot parse user JWT ..."), not its contents.
    options.credentials(text).map_err(|e| bad_file(OPTION, path, format!("not a NATS credentials file: {e}")))
}
