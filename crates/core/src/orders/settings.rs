//! The order settings shared by the API edge (which resolves them into each
//! create command, so replay never depends on today's configuration) and the
//! executor (which needs asset codes for connector calls). Apply never reads
//! them: they are configuration, resolved before a command is logged.

use crate::orders::money::FeeSchedule;
use crate::orders::order_flags;

/// One asset orders may use: its code, the ledger that holds it, and the
/// ledger's minor-unit scale (used when the node creates missing ledgers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetSpec {
    pub code: String,
    pub ledger: u32,
    pub scale: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrdersConfig {
    pub assets: Vec<AssetSpec>,
    pub fee: FeeSchedule,
    /// Funds must arrive within this long of creation, else the order expires.
    pub funds_timeout_seconds: u32,
    /// A manual review must happen within this long, else the order expires
    /// and its hold is released.
    pub review_timeout_seconds: u32,
    /// Fee policy (`order_flags`) stamped on new orders.
    pub flags: u32,
}

impl Default for OrdersConfig {
    /// ISO 4217 numeric codes as ledger ids; a 0.5% fee rounded up, at least
    /// one minor unit; 24 h for funds, 72 h for review; the fee is refunded
    /// when the payout fails but not when the customer cancels after FX.
    fn default() -> Self {
        let asset = |code: &str, ledger, scale| AssetSpec { code: code.into(), ledger, scale };
        OrdersConfig {
            assets: vec![asset("USD", 840, 2), asset("EUR", 978, 2), asset("GBP", 826, 2), asset("JPY", 392, 0)],
            fee: FeeSchedule { fixed: 0, bps: 50, min: 1, max: 0 },
            funds_timeout_seconds: 24 * 3600,
            review_timeout_seconds: 72 * 3600,
            flags: order_flags::REFUND_FEE_ON_FAILURE,
        }
    }
}

impl OrdersConfig {
    pub fn ledger_of(&self, code: &str) -> Option<u32> {
        self.assets.iter().find(|a| a.code == code).map(|a| a.ledger)
    }

    pub fn asset_of(&self, ledger: u32) -> Option<&str> {
        self.assets.iter().find(|a| a.ledger == ledger).map(|a| a.code.as_str())
    }

    /// Parses `CODE:LEDGER:SCALE,...` (for `--order-assets`).
    pub fn parse_assets(spec: &str) -> Result<Vec<AssetSpec>, AssetSpecError> {
        let assets =
            spec.split(',').filter(|s| !s.trim().is_empty()).map(parse_asset).collect::<Result<Vec<_>, _>>()?;
        for (i, a) in assets.iter().enumerate() {
            if assets[..i].iter().any(|b| b.code == a.code || b.ledger == a.ledger) {
                return Err(AssetSpecError::Duplicate { code: a.code.clone(), ledger: a.ledger });
            }
        }
        if assets.is_empty() {
            return Err(AssetSpecError::Empty);
        }
        Ok(assets)
    }
}

/// Why an `--order-assets` list was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssetSpecError {
    #[error("asset {item:?} is not CODE:LEDGER:SCALE")]
    Shape { item: String },
    #[error("asset code {code:?} is not 1-16 of A-Z, 0-9, '_', '-', '.'")]
    Code { code: String },
    #[error("ledger {ledger:?} is not 1..2^32")]
    Ledger { ledger: String },
    #[error("scale {scale:?} is not 0..=38")]
    Scale { scale: String },
    #[error("asset {code} or ledger {ledger} is listed twice")]
    Duplicate { code: String, ledger: u32 },
    #[error("no assets given")]
    Empty,
}

/// One `CODE:LEDGER:SCALE` item.
fn parse_asset(item: &str) -> Result<AssetSpec, AssetSpecError> {
    let parts: Vec<&str> = item.trim().split(':').collect();
    let [code, ledger, scale] = parts[..] else {
        return Err(AssetSpecError::Shape { item: item.into() });
    };
    if crate::Ledger::pack_asset(code).is_none() {
        return Err(AssetSpecError::Code { code: code.into() });
    }
    let ledger = ledger
        .parse::<u32>()
        .ok()
        .filter(|l| *l != 0)
        .ok_or_else(|| AssetSpecError::Ledger { ledger: ledger.into() })?;
    let scale =
        scale.parse::<u8>().ok().filter(|s| *s <= 38).ok_or_else(|| AssetSpecError::Scale { scale: scale.into() })?;
    Ok(AssetSpec { code: code.into(), ledger, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_asset_lists_and_refuses_bad_ones() {
        let a = OrdersConfig::parse_assets("USD:840:2, JPY:392:0").unwrap();
        assert_eq!(a[1], AssetSpec { code: "JPY".into(), ledger: 392, scale: 0 });
        for bad in ["", "USD:840", "usd:840:2", "USD:0:2", "USD:840:39", "USD:840:2,USD:841:2", "USD:1:2,EUR:1:2"] {
            assert!(OrdersConfig::parse_assets(bad).is_err(), "{bad}");
        }
        let c = OrdersConfig::default();
        assert_eq!((c.ledger_of("EUR"), c.asset_of(392)), (Some(978), Some("JPY")));
        assert_eq!(c.fee.fee(10_000), Some(50));
    }
}
