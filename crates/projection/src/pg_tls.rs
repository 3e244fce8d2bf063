//! TLS to PostgreSQL with rustls (ring), following libpq's `sslmode`
//! (docs/projection.md):
//!
//! | mode | TLS | server certificate |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it | not checked |
//! | `require` | always | not checked, unless a CA is given: then its chain is |
//! | `verify-ca` | always | chain to the CA |
//! | `verify-full` | always | chain to the CA and the host name |
//!
//! The CA is `--pg-ca-file` or `sslrootcert` in the connection string
//! (`system`: the public web roots; none given: the public web roots for
//! the `verify-*` modes). `sslmode` and `sslrootcert` are taken out of the
//! connection string here because the `postgres` crate knows neither
//! `verify-*` nor `sslrootcert`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bursar_tls::rustls::client::WebPkiServerVerifier;
use bursar_tls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use bursar_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use bursar_tls::rustls::{self, CertificateError, DigitallySignedStruct, SignatureScheme};

/// Longest connection string accepted.
const CONNINFO_LEN_MAX: usize = 8192;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// An `sslmode` that is not one of the five offered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sslmode {given:?}: expected disable, prefer, require, verify-ca or verify-full")]
pub struct SslModeError {
    pub given: String,
}

impl FromStr for SslMode {
    type Err = SslModeError;

    fn from_str(s: &str) -> Result<Self, SslModeError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` would fall back to plain text after a TLS failure: not offered.
            other => return Err(SslModeError { given: other.into() }),
        })
    }
}

/// Why a connection to PostgreSQL could not be set up or made. Never quotes
/// the connection string (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error("the connection string is over {max} bytes")]
    TooLong { max: usize },
    #[error("the connection string: {0}")]
    ConnInfo(#[source] ConnInfoError),
    #[error("the connection string: {0}")]
    Parse(#[source] postgres::Error),
    /// `sslmode` in the connection string.
    #[error(transparent)]
    SslMode(#[from] SslModeError),
    #[error(transparent)]
    Tls(#[from] PgTlsError),
    /// The server refused (its code and message).
    #[error("{}", crate::apply::pg_error(.0))]
    Refused(#[source] postgres::Error),
    /// No session: TLS, network or protocol, with every cause spelled out.
    #[error("postgresql: {}", bursar_tls::error_chain(.0))]
    Connect(#[source] postgres::Error),
}

/// A connection string that does not parse where this module reads it.
#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    #[error("a truncated %-escape")]
    TruncatedEscape,
    #[error("a bad %-escape")]
    BadEscape,
    #[error("a %-escape is not UTF-8")]
    EscapeNotUtf8,
    #[error("{key:?} has no value (key=value expected)")]
    NoValue { key: String },
    #[error("a dangling \\")]
    DanglingBackslash,
    #[error("an unterminated quote")]
    UnterminatedQuote,
}

/// TLS options given beside the connection string; they win over it.
#[derive(Clone, Debug, Default)]
pub struct PgTlsOptions {
    pub mode: Option<SslMode>,
    pub ca_file: Option<PathBuf>,
}

/// A checked connection string and its TLS connector: built once, so a bad
/// option or CA file is a start-up error, not a retry loop.
pub struct PgConnector {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl PgConnector {
    pub fn new(conninfo: &str, options: &PgTlsOptions) -> Result<PgConnector, PgConnectError> {
        if conninfo.len() > CONNINFO_LEN_MAX {
            return Err(PgConnectError::TooLong { max: CONNINFO_LEN_MAX });
        }
        let (rest, url_mode, url_ca) = split_tls_options(conninfo).map_err(PgConnectError::ConnInfo)?;
        // Never echo the connection string: it may hold a password.
        let mut config = postgres::Config::from_str(&rest).map_err(PgConnectError::Parse)?;
        let mode = match (options.mode, url_mode) {
            (Some(mode), _) => mode,
            (None, Some(text)) => text.parse().map_err(PgConnectError::SslMode)?,
            (None, None) => SslMode::Prefer,
        };
        let ca = match (&options.ca_file, url_ca) {
            (Some(path), _) => Some(CaSource::File(path.clone())),
            (None, Some(text)) if text == "system" => Some(CaSource::System),
            (None, Some(text)) => Some(CaSource::File(PathBuf::from(text))),
            (None, None) => None,
        };
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let tls = match mode {
            SslMode::Disable => None,
            _ => Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(mode, ca.as_ref())?)),
        };
        Ok(PgConnector { config, tls })
    }

    /// One connection; TLS failures are spelled out (unknown CA, wrong host name).
    pub fn connect(&self) -> Result<postgres::Client, PgConnectError> {
        let connected = match &self.tls {
            None => self.config.connect(postgres::NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        };
        connected.map_err(|e| match e.as_db_error() {
            Some(_) => PgConnectError::Refused(e),
            None => PgConnectError::Connect(e),
        })
    }
}

enum CaSource {
    File(PathBuf),
    System,
}

fn tls_config(mode: SslMode, ca: Option<&CaSource>) -> Result<rustls::ClientConfig, PgTlsError> {
    let roots = match ca {
        Some(CaSource::File(path)) => Some(bursar_tls::roots(false, &read_ca(path)?)?),
        Some(CaSource::System) => Some(bursar_tls::roots(true, &[])?),
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => Some(bursar_tls::roots(true, &[])?),
        None => None,
    };
    let Some(roots) = roots else {
        // prefer/require without a CA: encrypted against eavesdroppers, like libpq.
        return Ok(bursar_tls::client_config_with_verifier(Arc::new(EncryptOnly::new()), None)?);
    };
    if mode == SslMode::VerifyFull {
        return Ok(bursar_tls::client_config(roots, None)?);
    }
    let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), bursar_tls::provider())
        .build()
        .map_err(PgTlsError::Ca)?;
    Ok(bursar_tls::client_config_with_verifier(Arc::new(ChainOnly(chain)), None)?)
}

/// Why the TLS settings for PostgreSQL could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error(transparent)]
    Tls(#[from] bursar_tls::TlsError),
    #[error("the PostgreSQL CA: {0}")]
    Ca(#[source] rustls::server::VerifierBuilderError),
}

fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, bursar_tls::TlsError> {
    bursar_tls::read_certs(path, "--pg-ca-file/sslrootcert")
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
/// `key=value` form): the rest, and their values.
fn split_tls_options(conninfo: &str) -> Result<(String, Option<String>, Option<String>), ConnInfoError> {
    let (mut mode, mut ca) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            ca = Some(value);
            true
        }
        _ => false,
    };
    let rest = if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        split_url(conninfo, &mut take)?
    } else {
        split_pairs(conninfo, &mut take)?
    };
    Ok((rest, mode, ca))
}

fn split_url(url: &str, take: &mut impl FnMut(&str, String) -> bool) -> Result<String, ConnInfoError> {
    let Some((base, query)) = url.split_once('?') else { return Ok(url.to_string()) };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(key, percent_decode(value)?) {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) })
}

fn percent_decode(text: &str) -> Result<String, ConnInfoError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(ConnInfoError::TruncatedEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ConnInfoError::BadEscape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::EscapeNotUtf8)
}

/// `key = value` pairs, values bare or single-quoted with `\` escapes (libpq);
/// the kept pairs are written back quoted.
fn split_pairs(text: &str, take: &mut impl FnMut(&str, String) -> bool) -> Result<String, ConnInfoError> {
    let mut chars = text.chars().peekable();
    let mut kept = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConnInfoError::NoValue { key });
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(ConnInfoError::DanglingBackslash)?),
                    Some(c) => value.push(c),
                    None => return Err(ConnInfoError::UnterminatedQuote),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if !take(&key, value.clone()) {
            kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'")));
        }
    }
    Ok(kept.join(" "))
}

/// `prefer`/`require` without a CA: any certificate, but the handshake
/// signatures are still checked (the session key belongs to that certificate).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl EncryptOnly {
    fn new() -> Self {
        EncryptOnly(bursar_tls::provider())
    }
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a CA): the chain must lead to the CA;
/// the host name is not compared (the web PKI verifier checks it last, so
/// a name error means everything else passed).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_come_out_of_both_forms() {
        let (rest, mode, ca) =
            split_tls_options("host=db port=5432 sslmode=verify-full sslrootcert = '/etc/my ca.pem' user='o\\'k'")
                .unwrap();
        assert_eq!(rest, "host='db' port='5432' user='o\\'k'");
        assert_eq!((mode.as_deref(), ca.as_deref()), (Some("verify-full"), Some("/etc/my ca.pem")));
        postgres::Config::from_str(&rest).expect("the rest still parses");

        let (rest, mode, ca) = split_tls_options(
            "postgresql://u@db:5432/x?sslmode=require&sslrootcert=%2Ftmp%2Fca.pem&application_name=b",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@db:5432/x?application_name=b");
        assert_eq!((mode.as_deref(), ca.as_deref()), (Some("require"), Some("/tmp/ca.pem")));
        assert_eq!(split_tls_options("postgres://db/x").unwrap(), ("postgres://db/x".into(), None, None));

        for bad in ["host", "host='x", "postgresql://db/?sslrootcert=%G1", "x='a\\"] {
            assert!(split_tls_options(bad).is_err(), "{bad}");
        }
        assert!(
            PgConnector::new("host=x sslmode=allow", &PgTlsOptions::default())
                .err()
                .is_some_and(|e| e.to_string().contains("sslmode"))
        );
        let missing = PgTlsOptions { mode: Some(SslMode::VerifyFull), ca_file: Some("/nonexistent/ca.pem".into()) };
        let err = PgConnector::new("host=x password=hunter2", &missing)
            .err()
            .expect("a missing CA file is an error")
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem") && !err.contains("hunter2"), "{err}");
    }
}
