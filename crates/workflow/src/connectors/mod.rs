//! The external services a payment order talks to, behind object-safe traits:
//! sanctions/limits [`Screening`], [`FxRates`] quotes, the [`PayoutRail`] that
//! pays the recipient, and [`IncomingFunds`] that expects the customer's
//! payment.
//!
//! Each connector has a built-in simulator (so a node runs with no outside
//! service; see [`Simulators`]), an HTTP client (`Http*`, authenticated by
//! [`ConnectorAuth`], over HTTPS with a private CA when configured), and an
//! HTTP server exposing the simulators ([`serve_simulators`]) so tests can
//! run them in a process that outlives the node; it checks the same
//! credentials a bank's endpoint would.
//!
//! Every method is ONE attempt (retries, timeouts and circuit breakers wrap
//! calls elsewhere) and takes the caller's idempotency key, derived from the
//! order and step: repeating a call with the same key returns the first
//! result and never repeats the side effect.

mod auth;
mod funds;
mod fx;
mod http_client;
mod http_server;
mod payout;
mod screening;
mod sim;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use auth::{
    AuthConfigError, AuthRefusal, ConnectorAuth, SIGNATURE_HEADER, SKEW_SECS_MAX, TIMESTAMP_HEADER, canonical_string,
    unix_now,
};
pub use funds::FundsSimulator;
pub use fx::{FxSimulator, RATE_SCALE_PPB, default_fx_rates};
pub use http_client::{
    EndpointError, HttpConnectorsConfig, HttpEndpoint, HttpFxRates, HttpIncomingFunds, HttpPayoutRail, HttpScreening,
    HttpSimControl, RESPONSE_BYTES_MAX, http_client, plaintext_warning,
};
pub use http_server::{SimServerOptions, serve_simulators, serve_simulators_with, simulators_router};
pub use payout::{PayoutSettings, PayoutSimulator};
pub use screening::{AssetLimits, ScreeningRules, ScreeningSimulator};
pub use sim::{CallRecord, SimClock, SimConfig, SimControls, Simulators, SimulatorsConfig, UnknownConnector};

/// A boxed, sendable future: what the connector traits return, so they stay
/// object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one connector call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConnectorError {
    /// No answer in time; the call may or may not have taken effect.
    #[error("connector call timed out")]
    Timeout,
    /// The service is down or failing (5xx, refused connection, simulated outage).
    #[error("connector unavailable: {0}")]
    Unavailable(String),
    /// The service refused the request for good (4xx).
    #[error("connector rejected the request: {0}")]
    Rejected(String),
    /// The service refused our credentials (401/403): a configuration
    /// problem, so the call is retried (the order waits) until it is fixed.
    #[error("connector refused the credentials: {0}")]
    Unauthorized(String),
    /// The service answered with something that could not be understood.
    #[error("malformed connector response: {0}")]
    Malformed(String),
}

impl ConnectorError {
    /// Whether retrying with the same idempotency key may succeed. Only
    /// [`ConnectorError::Rejected`] is permanent.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ConnectorError::Rejected(_))
    }
}

/// What screening is asked to judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreeningRequest {
    #[serde(with = "decimal")]
    pub order_id: u128,
    #[serde(with = "decimal")]
    pub customer_id: u128,
    pub asset: String,
    /// Minor units of `asset`.
    #[serde(with = "decimal")]
    pub amount: u128,
    pub sender_name: String,
    pub sender_country: String,
    pub recipient_name: String,
}

/// Screening's decision about an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ScreeningVerdict {
    Pass,
    /// A human must decide; `reason` is a stable code such as `amount_review`.
    Review {
        reason: String,
    },
    /// The order must not proceed; `reason` is a stable code such as `sanctions_match`.
    Reject {
        reason: String,
    },
}

/// Screening: sanctions lists, risk rules and customer limits.
pub trait Screening: Send + Sync {
    /// Judges one order. The same key always returns the first verdict and
    /// counts toward customer limits once.
    fn screen<'a>(
        &'a self,
        key: &'a str,
        request: &'a ScreeningRequest,
    ) -> BoxFuture<'a, Result<ScreeningVerdict, ConnectorError>>;
}

/// A firm FX quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxQuote {
    #[serde(with = "decimal")]
    pub quote_id: u128,
    /// Target minor units per source minor unit, times 10^9 ([`RATE_SCALE_PPB`]).
    #[serde(with = "decimal")]
    pub rate_ppb: u128,
    /// The quote may not be used at or after this time.
    pub expires_at_unix_nanos: u64,
}

/// Foreign exchange quotes.
pub trait FxRates: Send + Sync {
    /// Quotes converting `source_amount` minor units of `source_asset` into
    /// `target_asset`. The same key returns the same quote.
    fn quote<'a>(
        &'a self,
        key: &'a str,
        source_asset: &'a str,
        target_asset: &'a str,
        source_amount: u128,
    ) -> BoxFuture<'a, Result<FxQuote, ConnectorError>>;
}

/// A payment to the recipient's bank account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    #[serde(with = "decimal")]
    pub order_id: u128,
    pub asset: String,
    #[serde(with = "decimal")]
    pub amount: u128,
    pub recipient_name: String,
    pub bank_account: String,
}

/// Where a payout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Accepted by the rail, not yet settled.
    Pending { reference: String },
    /// Settled: the recipient has the money.
    Confirmed { reference: String },
    /// The rail gave up (a business failure, not retryable with this key).
    Failed { reason: String },
}

/// The payout rail.
pub trait PayoutRail: Send + Sync {
    /// Pays out once per key; repeats return the payout's current status.
    fn send<'a>(
        &'a self,
        key: &'a str,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>>;

    /// The current status of the payout sent with `key`.
    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>>;
}

/// An incoming payment the customer is expected to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsRequest {
    #[serde(with = "decimal")]
    pub order_id: u128,
    #[serde(with = "decimal")]
    pub customer_id: u128,
    pub asset: String,
    #[serde(with = "decimal")]
    pub amount: u128,
}

/// How the customer should pay: quote `reference` with the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsInstructions {
    pub reference: String,
}

/// Incoming funds arrived for an order (sent by the simulator's auto-pay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsNotification {
    #[serde(with = "decimal")]
    pub order_id: u128,
    #[serde(with = "decimal")]
    pub amount: u128,
    pub reference: String,
}

/// The bank account that receives customers' payments.
pub trait IncomingFunds: Send + Sync {
    /// Registers an expected payment once per key and returns how to pay.
    fn expect<'a>(
        &'a self,
        key: &'a str,
        request: &'a FundsRequest,
    ) -> BoxFuture<'a, Result<FundsInstructions, ConnectorError>>;
}

/// One implementation of each connector, as the executor uses them.
#[derive(Clone)]
pub struct Connectors {
    pub screening: Arc<dyn Screening>,
    pub fx: Arc<dyn FxRates>,
    pub payout: Arc<dyn PayoutRail>,
    pub funds: Arc<dyn IncomingFunds>,
}

impl Connectors {
    /// HTTP clients for all four connectors at one endpoint (for example a
    /// process running [`serve_simulators`]), sharing one client and its
    /// credentials.
    pub fn http(endpoint: HttpEndpoint) -> Self {
        Connectors {
            screening: Arc::new(HttpScreening::new(endpoint.clone())),
            fx: Arc::new(HttpFxRates::new(endpoint.clone())),
            payout: Arc::new(HttpPayoutRail::new(endpoint.clone())),
            funds: Arc::new(HttpIncomingFunds::new(endpoint)),
        }
    }
}

/// Serde for u128 as a JSON decimal string (a JSON number can't carry 128
/// bits): digits only, no sign, spaces, exponent or fraction.
pub(crate) mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(D::Error::custom)
    }

    /// Parses decimal digits into a u128.
    pub fn parse(text: &str) -> Result<u128, AmountParseError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountParseError::NotDigits);
        }
        text.parse().map_err(|_| AmountParseError::Overflow)
    }

    /// Why a decimal string was refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum AmountParseError {
        #[error("expected a decimal string of digits")]
        NotDigits,
        #[error("decimal string exceeds 2^128 - 1")]
        Overflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_are_strict() {
        assert_eq!(decimal::parse("340282366920938463463374607431768211455"), Ok(u128::MAX));
        for bad in ["", "+1", "-1", "1.0", "1e3", " 1", "340282366920938463463374607431768211456"] {
            assert!(decimal::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_rejected_is_permanent() {
        assert!(ConnectorError::Timeout.is_retryable());
        assert!(ConnectorError::Unavailable("x".into()).is_retryable());
        assert!(ConnectorError::Malformed("x".into()).is_retryable());
        assert!(ConnectorError::Unauthorized("x".into()).is_retryable());
        assert!(!ConnectorError::Rejected("x".into()).is_retryable());
    }

    #[test]
    fn json_shapes() {
        let v = serde_json::to_value(ScreeningVerdict::Review { reason: "amount_review".into() }).unwrap();
        assert_eq!(v, serde_json::json!({"verdict": "review", "reason": "amount_review"}));
        let q = FxQuote { quote_id: u128::MAX, rate_ppb: 920_000_000, expires_at_unix_nanos: 5 };
        let v = serde_json::to_value(&q).unwrap();
        assert_eq!(v["quote_id"], "340282366920938463463374607431768211455");
        assert_eq!(v["rate_ppb"], "920000000");
        assert_eq!(serde_json::from_value::<FxQuote>(v).unwrap(), q);
        let bad = serde_json::json!({"quote_id": 1, "rate_ppb": "1", "expires_at_unix_nanos": 0});
        assert!(serde_json::from_value::<FxQuote>(bad).is_err());
    }
}
