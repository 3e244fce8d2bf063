//! The JSON shapes of the connectors' HTTP API that are not domain types:
//! request bodies, and answers that repeat what was asked so the client can
//! check that an answer is about its own request (docs/connectors.md).
//!
//! [`Answer`] checks run on the client before anything reaches the
//! executor: an answer for another key, order, pair or amount, or with an
//! implausible value, is refused and never applied.

use serde::{Deserialize, Serialize};

use super::{
    FundsInstructions, FundsRequest, FxQuote, PayoutRequest, PayoutStatus, ScreeningRequest, ScreeningVerdict, decimal,
};

/// The JSON body of `POST /fx/quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuoteBody {
    pub source_asset: String,
    pub target_asset: String,
    #[serde(with = "decimal")]
    pub source_amount: u128,
}

/// The JSON body of `POST /control/down`: all connectors, or one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DownBody {
    pub down: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
}

/// Longest reason (a screening rule, a rail's failure code): what an order
/// records (`REASON_MAX` in the core).
const REASON_MAX: usize = bursar_core::limits::REASON_MAX;
/// Longest reference (a rail's or bank's): what an order records.
const REFERENCE_MAX: usize = bursar_core::limits::REFERENCE_MAX;

/// An answer to one request: the key it was sent with, what it repeats of
/// the request, and the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Answer<E, T> {
    pub idempotency_key: String,
    #[serde(flatten)]
    pub echo: E,
    #[serde(flatten)]
    pub result: T,
}

/// What a screening answer repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderEcho {
    #[serde(with = "decimal")]
    pub order_id: u128,
}

/// What payout and funds answers repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MoneyEcho {
    #[serde(with = "decimal")]
    pub order_id: u128,
    pub asset: String,
    #[serde(with = "decimal")]
    pub amount: u128,
}

/// Payout status answers repeat only the key (a status request has no body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NoEcho {}

pub(crate) type ScreeningAnswer = Answer<OrderEcho, ScreeningVerdict>;
pub(crate) type QuoteAnswer = Answer<QuoteBody, FxQuote>;
pub(crate) type PayoutAnswer = Answer<MoneyEcho, PayoutStatus>;
pub(crate) type StatusAnswer = Answer<NoEcho, PayoutStatus>;
pub(crate) type FundsAnswer = Answer<MoneyEcho, FundsInstructions>;

impl<E, T> Answer<E, T> {
    pub fn new(key: &str, echo: E, result: T) -> Self {
        Answer { idempotency_key: key.to_string(), echo, result }
    }
}

/// Why a connector's answer was refused: it is about another request, or
/// a field the order would record is out of bounds.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer is for idempotency key {got:?}, not {want:?}")]
    WrongKey { got: String, want: String },
    /// The echoed request and the one asked, as their `Debug` text.
    #[error("the answer is about {got}, not the request {asked}")]
    WrongRequest { got: String, asked: String },
    #[error("quote_id is 0")]
    ZeroQuoteId,
    #[error("rate_ppb is 0: a rate must be positive")]
    ZeroRate,
    #[error("rate_ppb {rate_ppb} overflows the target amount of {amount}")]
    RateOverflows { rate_ppb: u128, amount: u128 },
    #[error("expires_at_unix_nanos is 0")]
    ZeroExpiry,
    #[error("reference must be 1 to {REFERENCE_MAX} visible ASCII characters")]
    BadReference,
    #[error("reason must be 1 to {REASON_MAX} bytes without control characters")]
    BadReason,
}

impl<E: PartialEq + std::fmt::Debug, T> Answer<E, T> {
    /// The result, if the answer names `key` and repeats `asked`.
    fn matching(self, key: &str, asked: &E) -> Result<T, AnswerError> {
        if self.idempotency_key != key {
            return Err(AnswerError::WrongKey { got: self.idempotency_key, want: key.to_string() });
        }
        if self.echo != *asked {
            return Err(AnswerError::WrongRequest { got: format!("{:?}", self.echo), asked: format!("{asked:?}") });
        }
        Ok(self.result)
    }
}

impl OrderEcho {
    pub fn of_screening(r: &ScreeningRequest) -> Self {
        OrderEcho { order_id: r.order_id }
    }
}

impl MoneyEcho {
    pub fn of_payout(r: &PayoutRequest) -> Self {
        MoneyEcho { order_id: r.order_id, asset: r.asset.clone(), amount: r.amount }
    }
    pub fn of_funds(r: &FundsRequest) -> Self {
        MoneyEcho { order_id: r.order_id, asset: r.asset.clone(), amount: r.amount }
    }
}

impl ScreeningAnswer {
    pub fn check(self, key: &str, request: &ScreeningRequest) -> Result<ScreeningVerdict, AnswerError> {
        let verdict = self.matching(key, &OrderEcho::of_screening(request))?;
        match &verdict {
            ScreeningVerdict::Pass => {}
            ScreeningVerdict::Review { reason } | ScreeningVerdict::Reject { reason } => check_reason(reason)?,
        }
        Ok(verdict)
    }
}

impl QuoteAnswer {
    pub fn check(self, key: &str, asked: &QuoteBody) -> Result<FxQuote, AnswerError> {
        let quote = self.matching(key, asked)?;
        if quote.quote_id == 0 {
            return Err(AnswerError::ZeroQuoteId);
        }
        if quote.rate_ppb == 0 {
            return Err(AnswerError::ZeroRate);
        }
        if bursar_core::orders::money::convert(asked.source_amount, quote.rate_ppb).is_none() {
            return Err(AnswerError::RateOverflows { rate_ppb: quote.rate_ppb, amount: asked.source_amount });
        }
        if quote.expires_at_unix_nanos == 0 {
            return Err(AnswerError::ZeroExpiry);
        }
        Ok(quote)
    }
}

impl PayoutAnswer {
    pub fn check(self, key: &str, request: &PayoutRequest) -> Result<PayoutStatus, AnswerError> {
        check_status(self.matching(key, &MoneyEcho::of_payout(request))?)
    }
}

impl StatusAnswer {
    pub fn check(self, key: &str) -> Result<PayoutStatus, AnswerError> {
        check_status(self.matching(key, &NoEcho {})?)
    }
}

impl FundsAnswer {
    pub fn check(self, key: &str, request: &FundsRequest) -> Result<FundsInstructions, AnswerError> {
        let instructions = self.matching(key, &MoneyEcho::of_funds(request))?;
        check_reference(&instructions.reference)?;
        Ok(instructions)
    }
}

fn check_status(status: PayoutStatus) -> Result<PayoutStatus, AnswerError> {
    match &status {
        PayoutStatus::Pending { reference } | PayoutStatus::Confirmed { reference } => check_reference(reference)?,
        PayoutStatus::Failed { reason } => check_reason(reason)?,
    }
    Ok(status)
}

/// A reference is recorded on the order as is: 1 to 32 visible ASCII characters.
fn check_reference(reference: &str) -> Result<(), AnswerError> {
    if reference.is_empty() || reference.len() > REFERENCE_MAX || !reference.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AnswerError::BadReference);
    }
    Ok(())
}

/// A reason is recorded on the order as is: 1 to 128 bytes, no control characters.
fn check_reason(reason: &str) -> Result<(), AnswerError> {
    if reason.is_empty() || reason.len() > REASON_MAX || reason.chars().any(char::is_control) {
        return Err(AnswerError::BadReason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payout() -> PayoutRequest {
        PayoutRequest {
            order_id: 7,
            asset: "EUR".into(),
            amount: 1000,
            recipient_name: "R".into(),
            bank_account: "DE00".into(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("decodes")
    }

    #[test]
    fn answers_are_flat_json() {
        let answer =
            PayoutAnswer::new("k", MoneyEcho::of_payout(&payout()), PayoutStatus::Pending { reference: "PO-1".into() });
        let v = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            v,
            json!({"idempotency_key": "k", "order_id": "7", "asset": "EUR", "amount": "1000",
                   "status": "pending", "reference": "PO-1"})
        );
        assert_eq!(decode::<PayoutAnswer>(v), answer);
    }

    #[test]
    fn a_payout_answer_about_another_payout_is_refused() {
        let ok = json!({"idempotency_key": "k", "order_id": "7", "asset": "EUR", "amount": "1000",
                        "status": "confirmed", "reference": "PO-1"});
        assert!(decode::<PayoutAnswer>(ok.clone()).check("k", &payout()).is_ok());
        for (field, value, why) in [
            ("idempotency_key", json!("k2"), "idempotency key"),
            ("order_id", json!("8"), "not the request"),
            ("asset", json!("USD"), "not the request"),
            ("amount", json!("1001"), "not the request"),
            ("reference", json!(""), "reference"),
            ("reference", json!("x".repeat(33)), "reference"),
        ] {
            let mut bad = ok.clone();
            bad[field] = value;
            let err = decode::<PayoutAnswer>(bad).check("k", &payout()).unwrap_err().to_string();
            assert!(err.contains(why), "{field}: {err}");
        }
        for (field, value) in [("amount", json!(1000)), ("amount", json!("-1000")), ("status", json!("paid"))] {
            let mut bad = ok.clone();
            bad[field] = value;
            assert!(serde_json::from_value::<PayoutAnswer>(bad).is_err(), "{field} must not decode");
        }
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("amount");
        assert!(serde_json::from_value::<PayoutAnswer>(missing).is_err());
    }

    #[test]
    fn quotes_are_for_the_pair_asked_with_a_usable_rate() {
        let asked = QuoteBody { source_asset: "USD".into(), target_asset: "EUR".into(), source_amount: 500 };
        let quote = |rate: u128| {
            QuoteAnswer::new("k", asked.clone(), FxQuote { quote_id: 9, rate_ppb: rate, expires_at_unix_nanos: 1 })
        };
        assert_eq!(quote(920_000_000).check("k", &asked).unwrap().rate_ppb, 920_000_000);
        assert!(quote(0).check("k", &asked).unwrap_err().to_string().contains("positive"));
        let big = QuoteBody { source_amount: u128::MAX, ..asked.clone() };
        let doubled = FxQuote { quote_id: 9, rate_ppb: 2_000_000_000, expires_at_unix_nanos: 1 };
        assert!(
            QuoteAnswer::new("k", big.clone(), doubled).check("k", &big).unwrap_err().to_string().contains("overflows")
        );
        let mut swapped = quote(1);
        swapped.echo.target_asset = "JPY".into();
        assert!(swapped.check("k", &asked).unwrap_err().to_string().contains("not the request"));
    }

    #[test]
    fn screening_verdicts_are_known_values() {
        let request = ScreeningRequest {
            order_id: 3,
            customer_id: 4,
            asset: "USD".into(),
            amount: 1,
            sender_name: "S".into(),
            sender_country: "DE".into(),
            recipient_name: "R".into(),
        };
        let ok = json!({"idempotency_key": "k", "order_id": "3", "verdict": "review", "reason": "amount_review"});
        assert!(decode::<ScreeningAnswer>(ok.clone()).check("k", &request).is_ok());
        let mut unknown = ok.clone();
        unknown["verdict"] = json!("maybe");
        assert!(serde_json::from_value::<ScreeningAnswer>(unknown).is_err());
        let mut other = ok.clone();
        other["order_id"] = json!("4");
        assert!(decode::<ScreeningAnswer>(other).check("k", &request).is_err());
        let mut control = ok;
        control["reason"] = json!("a\nb");
        assert!(decode::<ScreeningAnswer>(control).check("k", &request).unwrap_err().to_string().contains("reason"));
    }
}
