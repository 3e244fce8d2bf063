//! HTTP clients for the connectors, speaking the JSON API that
//! [`serve_simulators`](super::serve_simulators) serves (docs/connectors.md).
//!
//! Each call is one request carrying the idempotency key in an
//! `Idempotency-Key` header and the credentials of [`ConnectorAuth`], over
//! HTTPS with a private CA and a client certificate when configured. Errors
//! map to [`ConnectorError`]: no connection, a TLS failure or 5xx →
//! `Unavailable`, 401/403 → `Unauthorized`, other 4xx → `Rejected` with the
//! server's message (except 408 → `Timeout` and 429 → `Unavailable`, which
//! are worth retrying), a body that is oversized, undecodable or not about
//! the request asked → `Malformed`, the client's own timeout → `Timeout`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{ConnectorAuth, unix_now};
use super::wire::{DownBody, FundsAnswer, PayoutAnswer, QuoteAnswer, QuoteBody, ScreeningAnswer, StatusAnswer};
use super::{
    BoxFuture, CallRecord, ConnectorError, FundsInstructions, FundsRequest, FxQuote, FxRates, IncomingFunds,
    PayoutRail, PayoutRequest, PayoutStatus, Screening, ScreeningRequest, ScreeningVerdict,
};

/// The header carrying the caller's idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The longest error message kept from a response body.
const MESSAGE_LEN_MAX: usize = 300;
/// Largest connector response read; a larger one is refused unread.
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Largest call log read from a simulator (`GET /control/calls`, tests only).
const CALL_LOG_BYTES_MAX: usize = 256 << 20;

/// Where HTTP connectors are and how to reach them safely.
#[derive(Debug, Clone, Default)]
pub struct HttpConnectorsConfig {
    /// `https://bank.example/connectors` (or `http://` on loopback).
    pub base_url: String,
    pub auth: ConnectorAuth,
    /// A PEM CA trusted besides the public roots (a bank's private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain and key presented for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// Why the connectors' HTTP endpoint could not be set up; names the option
/// or the URL (never a credential: URLs with user info are refused).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Tls(#[from] bursar_tls::TlsError),
    #[error("--connectors-ca-file: {0}")]
    Roots(#[source] bursar_tls::TlsError),
    #[error("cannot build the connector HTTP client: {}", bursar_tls::error_chain(.0))]
    Client(#[source] reqwest::Error),
    /// `reason` is the URL parser's (its error type is not re-exported by reqwest).
    #[error("connectors URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("connectors URL {url:?}: must be http:// or https:// with a host")]
    NotHttp { url: String },
    #[error("connectors URL {url:?}: no user info or query (credentials go in files)")]
    UserInfoOrQuery { url: String },
}

/// For callers whose own errors are still strings (the workflow runtime).
impl From<EndpointError> for String {
    fn from(e: EndpointError) -> String {
        e.to_string()
    }
}

impl HttpConnectorsConfig {
    pub fn new(base_url: &str) -> Self {
        HttpConnectorsConfig { base_url: base_url.to_string(), ..Default::default() }
    }

    /// Reads the TLS files and builds the client; errors name the bad option.
    pub fn endpoint(&self) -> Result<HttpEndpoint, EndpointError> {
        let mut roots_extra = Vec::new();
        if let Some(path) = &self.ca_file {
            roots_extra = bursar_tls::read_certs(path, "--connectors-ca-file")?;
        }
        let roots = bursar_tls::roots(true, &roots_extra).map_err(EndpointError::Roots)?;
        let identity = match &self.client_identity {
            Some((cert, key)) => {
                Some(bursar_tls::Identity::load(cert, key, "--connectors-cert-file/--connectors-key-file")?)
            }
            None => None,
        };
        let tls = bursar_tls::client_config(roots, identity)?;
        HttpEndpoint::new(&self.base_url, http_client(tls)?, self.auth.clone())
    }
}

/// A `reqwest` client for the connectors with `tls` (rustls, ring). Callers
/// enforce their own per-call timeouts; the 30 s client timeout is only a
/// backstop so a forgotten timeout can't hang a call forever. Redirects are
/// not followed: credentials go only where they were configured to go.
pub fn http_client(tls: bursar_tls::rustls::ClientConfig) -> Result<reqwest::Client, EndpointError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(EndpointError::Client)
}

/// A plain-HTTP warning for `base_url`, if it sends requests (personal data,
/// credentials) unencrypted beyond this machine.
pub fn plaintext_warning(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    (url.scheme() == "http" && !loopback).then(|| {
        format!(
            "connectors at {}: plain http:// to another host sends personal data and credentials unencrypted; use https://",
            url.origin().ascii_serialization()
        )
    })
}

/// A base URL, a shared client and the credentials: what every HTTP
/// connector holds.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    base: String,
    client: reqwest::Client,
    auth: Arc<ConnectorAuth>,
}

impl HttpEndpoint {
    /// Refuses a base URL that is not absolute `http(s)://host...` (no user info).
    pub fn new(base_url: &str, client: reqwest::Client, auth: ConnectorAuth) -> Result<Self, EndpointError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| EndpointError::BadUrl { url: base_url.to_string(), reason: e.to_string() })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(EndpointError::NotHttp { url: base_url.to_string() });
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(EndpointError::UserInfoOrQuery { url: base_url.to_string() });
        }
        let base = url.as_str().trim_end_matches('/').to_string();
        Ok(HttpEndpoint { base, client, auth: Arc::new(auth) })
    }

    /// A plain endpoint without credentials and with the public roots only
    /// (for tests and loopback simulators).
    pub fn plain(base_url: &str) -> Result<Self, EndpointError> {
        HttpConnectorsConfig::new(base_url).endpoint()
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Result<T, ConnectorError> {
        let body =
            serde_json::to_vec(body).map_err(|e| ConnectorError::Rejected(format!("unencodable request: {e}")))?;
        self.call(Method::POST, path, Some(key), body, RESPONSE_BYTES_MAX).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, key: Option<&str>, limit: usize) -> Result<T, ConnectorError> {
        self.call(Method::GET, path, key, Vec::new(), limit).await
    }

    /// One signed request; the decoded body of a 2xx answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<T, ConnectorError> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| ConnectorError::Rejected(format!("bad connector URL: {e}")))?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = self.client.request(method.clone(), url);
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_HEADER, header_value(key)?);
        }
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in self.auth.headers(method.as_str(), &target, key.unwrap_or(""), &body, unix_now()) {
            let value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| ConnectorError::Rejected(format!("{name} is not a valid header value")))?;
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(transport_error)?;
        let status = response.status();
        let json = is_json(response.headers());
        let body = read_bounded(response, limit).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        if !json {
            return Err(ConnectorError::Malformed("the answer's Content-Type is not application/json".into()));
        }
        serde_json::from_slice(&body).map_err(|e| ConnectorError::Malformed(format!("undecodable body: {e}")))
    }
}

/// The key as a header value; a key no header can carry is the caller's bug.
fn header_value(key: &str) -> Result<reqwest::header::HeaderValue, ConnectorError> {
    if key.is_empty() {
        return Err(ConnectorError::Rejected("missing idempotency key".into()));
    }
    reqwest::header::HeaderValue::from_str(key)
        .map_err(|_| ConnectorError::Rejected("idempotency key is not a valid header value".into()))
}

/// Whether the Content-Type is `application/json` (parameters allowed).
fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    let Some(value) = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    value.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The body, refused unread past `limit` when the length is announced, and
/// as soon as it passes `limit` when it is not.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ConnectorError> {
    let too_big = || ConnectorError::Malformed(format!("response body over the {limit}-byte limit"));
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn status_error(status: StatusCode, body: &[u8]) -> ConnectorError {
    let message = error_message(status, body);
    match status {
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ConnectorError::Timeout,
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::Unavailable(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ConnectorError::Unauthorized(message),
        s if s.is_client_error() => ConnectorError::Rejected(message),
        s if s.is_server_error() => ConnectorError::Unavailable(message),
        _ => ConnectorError::Malformed(format!("unexpected status {status}")),
    }
}

fn transport_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() { ConnectorError::Timeout } else { ConnectorError::Unavailable(bursar_tls::error_chain(&e)) }
}

/// The `error` field of a JSON error body, else the body as text, else the
/// status, bounded in length.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text = if text.is_empty() { status.to_string() } else { text };
    text.chars().take(MESSAGE_LEN_MAX).filter(|c| !c.is_control()).collect()
}

/// An answer that does not fit the request is malformed: never applied.
fn checked<T>(result: Result<T, super::wire::AnswerError>, connector: &str) -> Result<T, ConnectorError> {
    result.map_err(|why| ConnectorError::Malformed(format!("{connector} answer does not match the request: {why}")))
}

/// Screening over HTTP: `POST {base}/screening/screen`.
#[derive(Debug, Clone)]
pub struct HttpScreening {
    endpoint: HttpEndpoint,
}

impl HttpScreening {
    pub fn new(endpoint: HttpEndpoint) -> Self {
        HttpScreening { endpoint }
    }
}

impl Screening for HttpScreening {
    fn screen<'a>(
        &'a self,
        key: &'a str,
        request: &'a ScreeningRequest,
    ) -> BoxFuture<'a, Result<ScreeningVerdict, ConnectorError>> {
        Box::pin(async move {
            let answer: ScreeningAnswer = self.endpoint.post("/screening/screen", key, request).await?;
            checked(answer.check(key, request), "screening")
        })
    }
}

/// FX over HTTP: `POST {base}/fx/quote`.
#[derive(Debug, Clone)]
pub struct HttpFxRates {
    endpoint: HttpEndpoint,
}

impl HttpFxRates {
    pub fn new(endpoint: HttpEndpoint) -> Self {
        HttpFxRates { endpoint }
    }
}

impl FxRates for HttpFxRates {
    fn quote<'a>(
        &'a self,
        key: &'a str,
        source_asset: &'a str,
        target_asset: &'a str,
        source_amount: u128,
    ) -> BoxFuture<'a, Result<FxQuote, ConnectorError>> {
        let body =
            QuoteBody { source_asset: source_asset.to_string(), target_asset: target_asset.to_string(), source_amount };
        Box::pin(async move {
            let answer: QuoteAnswer = self.endpoint.post("/fx/quote", key, &body).await?;
            checked(answer.check(key, &body), "fx")
        })
    }
}

/// The payout rail over HTTP: `POST {base}/payouts/send` and
/// `GET {base}/payouts/status` (key in the header).
#[derive(Debug, Clone)]
pub struct HttpPayoutRail {
    endpoint: HttpEndpoint,
}

impl HttpPayoutRail {
    pub fn new(endpoint: HttpEndpoint) -> Self {
        HttpPayoutRail { endpoint }
    }
}

impl PayoutRail for HttpPayoutRail {
    fn send<'a>(
        &'a self,
        key: &'a str,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(async move {
            let answer: PayoutAnswer = self.endpoint.post("/payouts/send", key, request).await?;
            checked(answer.check(key, request), "payout")
        })
    }

    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(async move {
            let answer: StatusAnswer = self.endpoint.get("/payouts/status", Some(key), RESPONSE_BYTES_MAX).await?;
            checked(answer.check(key), "payout status")
        })
    }
}

/// Incoming funds over HTTP: `POST {base}/funds/expect`.
#[derive(Debug, Clone)]
pub struct HttpIncomingFunds {
    endpoint: HttpEndpoint,
}

impl HttpIncomingFunds {
    pub fn new(endpoint: HttpEndpoint) -> Self {
        HttpIncomingFunds { endpoint }
    }
}

impl IncomingFunds for HttpIncomingFunds {
    fn expect<'a>(
        &'a self,
        key: &'a str,
        request: &'a FundsRequest,
    ) -> BoxFuture<'a, Result<FundsInstructions, ConnectorError>> {
        Box::pin(async move {
            let answer: FundsAnswer = self.endpoint.post("/funds/expect", key, request).await?;
            checked(answer.check(key, request), "funds")
        })
    }
}

/// Controls a simulator server remotely: outages and the call log.
#[derive(Debug, Clone)]
pub struct HttpSimControl {
    endpoint: HttpEndpoint,
}

impl HttpSimControl {
    pub fn new(endpoint: HttpEndpoint) -> Self {
        HttpSimControl { endpoint }
    }

    /// Turns the outage of every connector on or off.
    pub async fn set_down(&self, down: bool) -> Result<(), ConnectorError> {
        self.post_down(DownBody { down, connector: None }).await
    }

    /// Turns the outage of one connector on or off.
    pub async fn set_connector_down(&self, connector: &str, down: bool) -> Result<(), ConnectorError> {
        self.post_down(DownBody { down, connector: Some(connector.to_string()) }).await
    }

    /// The server's in-memory call log, oldest first.
    pub async fn calls(&self) -> Result<Vec<CallRecord>, ConnectorError> {
        self.endpoint.get("/control/calls", None, CALL_LOG_BYTES_MAX).await
    }

    async fn post_down(&self, body: DownBody) -> Result<(), ConnectorError> {
        let body = serde_json::to_vec(&body).map_err(|e| ConnectorError::Rejected(e.to_string()))?;
        let _: serde_json::Value =
            self.endpoint.call(Method::POST, "/control/down", None, body, RESPONSE_BYTES_MAX).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback_is_warned_about() {
        for quiet in ["http://127.0.0.1:3200", "http://localhost:3200/x", "http://[::1]:1", "https://bank.example"] {
            assert_eq!(plaintext_warning(quiet), None, "{quiet}");
        }
        let warning = plaintext_warning("http://10.1.2.3:3200/api").expect("a warning");
        assert!(warning.contains("http://10.1.2.3:3200") && warning.contains("https://"), "{warning}");
        assert!(plaintext_warning("http://bank.internal").is_some());
    }

    #[test]
    fn endpoints_refuse_unusable_urls() {
        for bad in ["ftp://x", "not a url", "http://user:pw@host", "https://host/?token=1", "file:///etc/passwd"] {
            assert!(HttpEndpoint::plain(bad).is_err(), "{bad}");
        }
        assert!(HttpEndpoint::plain("https://bank.example/connectors/").is_ok());
    }

    #[test]
    fn statuses_map_to_errors() {
        let unauthorized = status_error(StatusCode::UNAUTHORIZED, br#"{"error":"wrong bearer token"}"#);
        assert_eq!(unauthorized, ConnectorError::Unauthorized("wrong bearer token".into()));
        assert!(matches!(status_error(StatusCode::FORBIDDEN, b""), ConnectorError::Unauthorized(_)));
        assert!(
            matches!(status_error(StatusCode::UNPROCESSABLE_ENTITY, b"no"), ConnectorError::Rejected(m) if m == "no")
        );
        assert!(matches!(status_error(StatusCode::FOUND, b""), ConnectorError::Malformed(_)));
        assert_eq!(status_error(StatusCode::GATEWAY_TIMEOUT, b""), ConnectorError::Timeout);
    }
}
