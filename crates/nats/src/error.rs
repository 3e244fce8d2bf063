//! Errors with a stable code and a message an operator can act on. No
//! message ever holds a password, token, seed or key: URLs are shown
//! redacted and file contents are never quoted.

use std::fmt;

/// What went wrong, as a stable code (`NatsErrorKind::code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatsErrorKind {
    /// A server URL does not parse, or has a scheme other than `nats`/`tls`.
    BadUrl,
    /// The URLs of one list carry different credentials.
    MixedCredentials,
    /// Options that exclude each other (credentials in the URL and a
    /// credentials file, a certificate without its key, ...).
    ConflictingOptions,
    /// A file named by an option cannot be read (or is too large).
    UnreadableFile,
    /// A file was read but does not hold what its option needs (PEM
    /// certificates, a PEM key, an nkey seed, a credentials file).
    BadFile,
    /// The server refused the credentials (authorization violation).
    AuthRefused,
    /// The server's TLS certificate is not trusted by the CAs in use.
    TlsUntrusted,
    /// The TLS handshake failed on the server's side (no or an untrusted
    /// client certificate, or the server does not speak TLS).
    TlsRefused,
    /// No server could be reached within the bounds.
    Unreachable,
}

impl NatsErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            NatsErrorKind::BadUrl => "nats_bad_url",
            NatsErrorKind::MixedCredentials => "nats_mixed_credentials",
            NatsErrorKind::ConflictingOptions => "nats_conflicting_options",
            NatsErrorKind::UnreadableFile => "nats_unreadable_file",
            NatsErrorKind::BadFile => "nats_bad_file",
            NatsErrorKind::AuthRefused => "nats_auth_refused",
            NatsErrorKind::TlsUntrusted => "nats_tls_untrusted",
            NatsErrorKind::TlsRefused => "nats_tls_refused",
            NatsErrorKind::Unreachable => "nats_unreachable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsError {
    pub kind: NatsErrorKind,
    pub message: String,
}

impl NatsError {
    pub fn new(kind: NatsErrorKind, message: impl Into<String>) -> NatsError {
        NatsError { kind, message: message.into() }
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.code())
    }
}

impl std::error::Error for NatsError {}

impl From<NatsError> for String {
    fn from(e: NatsError) -> String {
        e.to_string()
    }
}
