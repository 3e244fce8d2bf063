//! HTTP clients for the connectors, speaking the JSON API that
//! [`serve_simulators`](super::serve_simulators) serves.
//!
//! Each call is one request carrying the idempotency key in an
//! `Idempotency-Key` header. Errors map to [`ConnectorError`]: no connection
//! or 5xx → `Unavailable`, 4xx → `Rejected` with the server's message (except
//! 408 → `Timeout` and 429 → `Unavailable`, which are worth retrying), an
//! undecodable body → `Malformed`, the client's own timeout → `Timeout`.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    BoxFuture, CallRecord, ConnectorError, FundsInstructions, FundsRequest, FxQuote, FxRates, IncomingFunds,
    PayoutRail, PayoutRequest, PayoutStatus, Screening, ScreeningRequest, ScreeningVerdict,
};

/// The header carrying the caller's idempotency key.
pub(crate) const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The longest error message kept from a response body.
const MAX_MESSAGE_LEN: usize = 300;

/// A `reqwest` client for the connectors. Callers enforce their own
/// per-call timeouts; the 30 s client timeout is only a backstop so a
/// forgotten timeout can't hang a call forever.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).connect_timeout(Duration::from_secs(10)).build()
}

/// A base URL and a shared client: what every HTTP connector holds.
#[derive(Debug, Clone)]
struct Endpoint {
    base: String,
    client: reqwest::Client,
}

impl Endpoint {
    fn new(base_url: &str, client: reqwest::Client) -> Self {
        Endpoint { base: base_url.trim_end_matches('/').to_string(), client }
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Result<T, ConnectorError> {
        let request = self.client.post(format!("{}{path}", self.base)).json(body);
        finish(request.header(IDEMPOTENCY_HEADER, header_value(key)?).send().await).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, key: Option<&str>) -> Result<T, ConnectorError> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_HEADER, header_value(key)?);
        }
        finish(request.send().await).await
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

/// Turns a response (or transport failure) into the decoded body or an error.
async fn finish<T: DeserializeOwned>(sent: Result<reqwest::Response, reqwest::Error>) -> Result<T, ConnectorError> {
    let response = sent.map_err(transport_error)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport_error)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ConnectorError::Malformed(format!("undecodable body: {e}")));
    }
    let message = error_message(status, &body);
    Err(match status {
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ConnectorError::Timeout,
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::Unavailable(message),
        s if s.is_client_error() => ConnectorError::Rejected(message),
        s if s.is_server_error() => ConnectorError::Unavailable(message),
        _ => ConnectorError::Malformed(format!("unexpected status {status}")),
    })
}

fn transport_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() { ConnectorError::Timeout } else { ConnectorError::Unavailable(error_chain(&e)) }
}

/// The error and its causes ("connection refused" hides in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    text.chars().take(MAX_MESSAGE_LEN).collect()
}

/// Screening over HTTP: `POST {base}/screening/screen`.
#[derive(Debug, Clone)]
pub struct HttpScreening {
    endpoint: Endpoint,
}

impl HttpScreening {
    pub fn new(base_url: &str, client: reqwest::Client) -> Self {
        HttpScreening { endpoint: Endpoint::new(base_url, client) }
    }
}

impl Screening for HttpScreening {
    fn screen<'a>(
        &'a self,
        key: &'a str,
        request: &'a ScreeningRequest,
    ) -> BoxFuture<'a, Result<ScreeningVerdict, ConnectorError>> {
        Box::pin(self.endpoint.post("/screening/screen", key, request))
    }
}

/// The JSON body of `POST /fx/quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct QuoteBody {
    pub source_asset: String,
    pub target_asset: String,
    #[serde(with = "super::decimal")]
    pub source_amount: u128,
}

/// FX over HTTP: `POST {base}/fx/quote`.
#[derive(Debug, Clone)]
pub struct HttpFxRates {
    endpoint: Endpoint,
}

impl HttpFxRates {
    pub fn new(base_url: &str, client: reqwest::Client) -> Self {
        HttpFxRates { endpoint: Endpoint::new(base_url, client) }
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
        Box::pin(async move { self.endpoint.post("/fx/quote", key, &body).await })
    }
}

/// The payout rail over HTTP: `POST {base}/payouts/send` and
/// `GET {base}/payouts/status` (key in the header).
#[derive(Debug, Clone)]
pub struct HttpPayoutRail {
    endpoint: Endpoint,
}

impl HttpPayoutRail {
    pub fn new(base_url: &str, client: reqwest::Client) -> Self {
        HttpPayoutRail { endpoint: Endpoint::new(base_url, client) }
    }
}

impl PayoutRail for HttpPayoutRail {
    fn send<'a>(
        &'a self,
        key: &'a str,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(self.endpoint.post("/payouts/send", key, request))
    }

    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(self.endpoint.get("/payouts/status", Some(key)))
    }
}

/// Incoming funds over HTTP: `POST {base}/funds/expect`.
#[derive(Debug, Clone)]
pub struct HttpIncomingFunds {
    endpoint: Endpoint,
}

impl HttpIncomingFunds {
    pub fn new(base_url: &str, client: reqwest::Client) -> Self {
        HttpIncomingFunds { endpoint: Endpoint::new(base_url, client) }
    }
}

impl IncomingFunds for HttpIncomingFunds {
    fn expect<'a>(
        &'a self,
        key: &'a str,
        request: &'a FundsRequest,
    ) -> BoxFuture<'a, Result<FundsInstructions, ConnectorError>> {
        Box::pin(self.endpoint.post("/funds/expect", key, request))
    }
}

/// The JSON body of `POST /control/down`: all connectors, or one.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct DownBody {
    pub down: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
}

/// Controls a simulator server remotely: outages and the call log.
#[derive(Debug, Clone)]
pub struct HttpSimControl {
    endpoint: Endpoint,
}

impl HttpSimControl {
    pub fn new(base_url: &str, client: reqwest::Client) -> Self {
        HttpSimControl { endpoint: Endpoint::new(base_url, client) }
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
        self.endpoint.get("/control/calls", None).await
    }

    async fn post_down(&self, body: DownBody) -> Result<(), ConnectorError> {
        let request = self.endpoint.client.post(format!("{}/control/down", self.endpoint.base)).json(&body);
        let _: serde_json::Value = finish(request.send().await).await?;
        Ok(())
    }
}
