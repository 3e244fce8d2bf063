//! The FX simulator: firm quotes from a fixed rate table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::sim::{SimCore, duration_nanos, lock};
use super::{BoxFuture, ConnectorError, FxQuote, FxRates, SimConfig, SimControls};

/// `rate_ppb` of an identity conversion: one target minor unit per source
/// minor unit, in parts per billion.
pub const RATE_SCALE_PPB: u128 = 1_000_000_000;

/// The default table: USD, EUR, GBP and JPY among each other, derived from
/// 1 USD = 0.92 EUR = 0.79 GBP = 150 JPY and rounded to the nearest ppb.
///
/// A rate is target MINOR units per source MINOR unit × 10^9: USD→EUR
/// 920,000,000 means one US cent buys 0.92 euro cents; USD→JPY
/// 1,500,000,000 means one cent buys 1.5 yen (JPY has no minor unit).
pub fn default_fx_rates() -> BTreeMap<(String, String), u128> {
    [
        ("USD", "EUR", 920_000_000),
        ("USD", "GBP", 790_000_000),
        ("USD", "JPY", 1_500_000_000),
        ("EUR", "USD", 1_086_956_522),
        ("EUR", "GBP", 858_695_652),
        ("EUR", "JPY", 1_630_434_783),
        ("GBP", "USD", 1_265_822_785),
        ("GBP", "EUR", 1_164_556_962),
        ("GBP", "JPY", 1_898_734_177),
        ("JPY", "USD", 666_666_667),
        ("JPY", "EUR", 613_333_333),
        ("JPY", "GBP", 526_666_667),
    ]
    .into_iter()
    .map(|(source, target, rate)| ((source.to_string(), target.to_string()), rate))
    .collect()
}

/// What a quote answered, to detect a key reused for another request.
type QuoteParams = (String, String, u128);

/// Simulated FX: quotes valid for a fixed time from the simulator's clock.
/// Converting an asset into itself is quoted at [`RATE_SCALE_PPB`].
pub struct FxSimulator {
    core: SimCore,
    rates: BTreeMap<(String, String), u128>,
    ttl: Duration,
    quotes: Mutex<HashMap<String, (QuoteParams, FxQuote)>>,
}

impl FxSimulator {
    pub fn new(
        controls: SimControls,
        config: SimConfig,
        rates: BTreeMap<(String, String), u128>,
        ttl: Duration,
    ) -> Self {
        FxSimulator { core: SimCore::new("fx", config, controls), rates, ttl, quotes: Mutex::new(HashMap::new()) }
    }

    /// Returns the quote recorded for `key`, or makes and records one.
    fn quote_once(&self, key: &str, params: QuoteParams) -> Result<(FxQuote, bool), ConnectorError> {
        let mut quotes = lock(&self.quotes);
        if let Some((first, quote)) = quotes.get(key) {
            if *first != params {
                return Err(ConnectorError::Rejected("idempotency key reused with a different request".into()));
            }
            return Ok((quote.clone(), false));
        }
        let (source, target, amount) = &params;
        if *amount == 0 {
            return Err(ConnectorError::Rejected("source_amount must be positive".into()));
        }
        let rate_ppb = self.rate(source, target)?;
        let quote = FxQuote {
            quote_id: self.core.random_nonzero_u128(),
            rate_ppb,
            expires_at_unix_nanos: self.core.now_unix_nanos().saturating_add(duration_nanos(self.ttl)),
        };
        quotes.insert(key.to_string(), (params, quote.clone()));
        Ok((quote, true))
    }

    fn rate(&self, source: &str, target: &str) -> Result<u128, ConnectorError> {
        if source == target {
            return Ok(RATE_SCALE_PPB);
        }
        self.rates
            .get(&(source.to_string(), target.to_string()))
            .copied()
            .ok_or_else(|| ConnectorError::Rejected(format!("no rate for {source}/{target}")))
    }
}

impl FxRates for FxSimulator {
    fn quote<'a>(
        &'a self,
        key: &'a str,
        source_asset: &'a str,
        target_asset: &'a str,
        source_amount: u128,
    ) -> BoxFuture<'a, Result<FxQuote, ConnectorError>> {
        let params = (source_asset.to_string(), target_asset.to_string(), source_amount);
        Box::pin(self.core.call("quote", key, move || self.quote_once(key, params)))
    }
}
