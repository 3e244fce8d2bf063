//! The one place a NATS connection is made: server URLs plus security
//! options become a server list without secrets and `ConnectOptions` with
//! the credentials and TLS applied; a failed connect becomes an error that
//! says what to fix.

use crate::error::{NatsError, NatsErrorKind};
use crate::files;
use crate::servers::{self, UrlCredentials};
use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The security options (`--nats-*-file`), shared by every connection of a
/// process. Credentials may also come from the URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// A credentials file: user JWT and nkey seed (decentralized auth).
    pub creds_file: Option<PathBuf>,
    /// A file holding a user nkey seed.
    pub nkey_file: Option<PathBuf>,
    /// The CA(s) that signed the servers' certificates (PEM); without it,
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl NatsSecurity {
    /// Any TLS file given: TLS is then required on every connection (a
    /// configured CA never silently falls back to plain text).
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Where and how to reach NATS. Its `Debug` shows the URLs redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsEndpoint {
    /// Comma-separated URLs; they may carry `user:password@` or `token@`.
    urls: String,
    pub security: NatsSecurity,
}

impl fmt::Debug for NatsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsEndpoint").field("urls", &self.redacted()).field("security", &self.security).finish()
    }
}

impl NatsEndpoint {
    pub fn new(urls: impl Into<String>, security: NatsSecurity) -> NatsEndpoint {
        NatsEndpoint { urls: urls.into(), security }
    }

    /// The URLs as given, credentials included: never print this.
    pub fn urls_with_secrets(&self) -> &str {
        &self.urls
    }

    /// The URLs with their credentials replaced by `***`: safe to print.
    pub fn redacted(&self) -> String {
        servers::redact(&self.urls)
    }

    /// Parses the URLs and reads the security files. Cheap enough to do
    /// for every connection (a few small files), which also picks up a
    /// rotated certificate on reconnect.
    pub fn prepare(&self) -> Result<NatsTarget, NatsError> {
        let list = servers::parse_servers(&self.urls)?;
        let auth = Auth::resolve(list.credentials, &self.security)?;
        let mut options = auth.apply(ConnectOptions::new())?;
        let tls = list.tls || self.security.wants_tls();
        let client_cert = match (&self.security.cert_file, &self.security.key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(NatsError::new(
                    NatsErrorKind::ConflictingOptions,
                    "--nats-cert-file and --nats-key-file go together: give both for mutual TLS, or neither",
                ));
            }
        };
        if tls {
            let config = files::client_tls(self.security.ca_file.as_deref(), client_cert)?;
            options = options.require_tls(true).tls_client_config(config);
        }
        Ok(NatsTarget {
            servers: list.servers,
            options,
            shown: self.redacted(),
            auth,
            tls,
            security: self.security.clone(),
        })
    }

    /// [`NatsEndpoint::prepare`] then [`NatsTarget::connect`].
    pub async fn connect(
        &self,
        deadline: Duration,
        tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> Result<async_nats::Client, NatsError> {
        self.prepare()?.connect(deadline, tune).await
    }
}

/// Where the connection's credentials come from.
#[derive(Clone)]
enum Auth {
    None,
    Url(UrlCredentials),
    CredsFile(PathBuf),
    NkeyFile(PathBuf),
}

impl Auth {
    fn resolve(url: UrlCredentials, security: &NatsSecurity) -> Result<Auth, NatsError> {
        let conflict = |what: &str| {
            NatsError::new(NatsErrorKind::ConflictingOptions, format!("{what}: give one way to authenticate to NATS"))
        };
        match (url, &security.creds_file, &security.nkey_file) {
            (_, Some(_), Some(_)) => Err(conflict("both --nats-creds-file and --nats-nkey-file are given")),
            (UrlCredentials::None, None, None) => Ok(Auth::None),
            (UrlCredentials::None, Some(path), None) => Ok(Auth::CredsFile(path.clone())),
            (UrlCredentials::None, None, Some(path)) => Ok(Auth::NkeyFile(path.clone())),
            (url, None, None) => Ok(Auth::Url(url)),
            (_, Some(_), None) => Err(conflict("the URLs carry credentials and --nats-creds-file is given")),
            (_, None, Some(_)) => Err(conflict("the URLs carry credentials and --nats-nkey-file is given")),
        }
    }

    fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, NatsError> {
        Ok(match self {
            Auth::None | Auth::Url(UrlCredentials::None) => options,
            Auth::Url(UrlCredentials::UserPassword { user, password }) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Url(UrlCredentials::Token(token)) => options.token(token.clone()),
            Auth::CredsFile(path) => files::with_credentials(options, path)?,
            Auth::NkeyFile(path) => options.nkey(files::nkey_seed(path)?),
        })
    }

    /// Which option set the credentials the server refused.
    fn describe(&self) -> String {
        match self {
            Auth::None | Auth::Url(UrlCredentials::None) => "no credentials were given; put user:password@ or a \
                token@ in the URL, or use --nats-creds-file or --nats-nkey-file"
                .to_string(),
            Auth::Url(UrlCredentials::UserPassword { user, .. }) => {
                format!("check the user ({user}) and password in the URL")
            }
            Auth::Url(UrlCredentials::Token(_)) => "check the token in the URL".to_string(),
            Auth::CredsFile(path) => format!("check --nats-creds-file {}", path.display()),
            Auth::NkeyFile(path) => format!("check --nats-nkey-file {}", path.display()),
        }
    }
}

/// A checked server list and options, ready to connect (again).
#[derive(Clone)]
pub struct NatsTarget {
    servers: Vec<ServerAddr>,
    options: ConnectOptions,
    shown: String,
    auth: Auth,
    tls: bool,
    security: NatsSecurity,
}

impl NatsTarget {
    /// The servers, without credentials.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// The URLs as safe to print.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Connects within `deadline` (all servers tried). `tune` adds the
    /// caller's options (name, timeouts, callbacks) to the security ones.
    pub async fn connect(
        &self,
        deadline: Duration,
        tune: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> Result<async_nats::Client, NatsError> {
        let options = tune(self.options.clone());
        match tokio::time::timeout(deadline, options.connect(self.servers.clone())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.explain(e)),
            Err(_) => Err(NatsError::new(
                NatsErrorKind::Unreachable,
                format!("no NATS server of {} answered within {deadline:?}", self.shown),
            )),
        }
    }

    /// Turns the client's error into what to fix. The client's text is
    /// safe to quote: the addresses it was given carry no credentials.
    fn explain(&self, e: async_nats::ConnectError) -> NatsError {
        let detail = e.to_string();
        let at = &self.shown;
        match e.kind() {
            ConnectErrorKind::AuthorizationViolation => NatsError::new(
                NatsErrorKind::AuthRefused,
                format!(
                    "the NATS server at {at} refused the credentials (authorization violation): {}",
                    self.auth.describe()
                ),
            ),
            ConnectErrorKind::Authentication => NatsError::new(
                NatsErrorKind::AuthRefused,
                format!("signing the NATS server's challenge failed ({detail}): {}", self.auth.describe()),
            ),
            _ if detail.contains("invalid peer certificate") => NatsError::new(
                NatsErrorKind::TlsUntrusted,
                format!("the TLS certificate of the NATS server at {at} is not trusted ({detail}): {}", self.trust()),
            ),
            _ if self.tls && is_tls_refusal(&detail) => NatsError::new(
                NatsErrorKind::TlsRefused,
                format!("the NATS server at {at} ended the TLS handshake ({detail}): {}", self.client_cert()),
            ),
            _ => NatsError::new(NatsErrorKind::Unreachable, format!("connecting to NATS at {at}: {detail}")),
        }
    }

    fn trust(&self) -> String {
        match &self.security.ca_file {
            Some(path) => format!("it is not signed by a CA in --nats-ca-file {}", path.display()),
            None => "it is not signed by a CA the system trusts; give its CA with --nats-ca-file".to_string(),
        }
    }

    fn client_cert(&self) -> String {
        match &self.security.cert_file {
            Some(path) => format!("it does not accept the client certificate --nats-cert-file {}", path.display()),
            None => "it requires a client certificate it trusts (--nats-cert-file and --nats-key-file), or does not \
                     serve TLS"
                .to_string(),
        }
    }
}

/// Errors a TLS client sees when the server aborts the handshake (an
/// alert) or does not speak TLS at all.
fn is_tls_refusal(detail: &str) -> bool {
    ["alert", "corrupt message", "InvalidContentType", "handshake", "early eof", "reset by peer"]
        .iter()
        .any(|s| detail.contains(s))
}
