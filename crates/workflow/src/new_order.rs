//! An order created in process (benchmarks, tests): the same resolution the
//! API edge performs for `POST /v1/orders`: assets to ledgers, the fee,
//! timeouts and fee policy stamped, personal data encrypted.

use bursar_core::orders::OrderCreate;
use bursar_core::orders::settings::OrdersConfig;

/// An order as a client asks for it, before the edge resolves it.
pub struct NewOrder<'a> {
    pub id: u128,
    pub customer_id: u128,
    pub source_asset: &'a str,
    pub source_amount: u128,
    pub target_asset: &'a str,
    /// Earliest payout time, unix nanoseconds; 0 = as soon as ready.
    pub payout_at: u64,
    pub pii: &'a bursar_crypto::pii::OrderPii,
}

/// Why a new order cannot become a create command; `field` names the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrderError {
    pub field: &'static str,
    pub message: String,
}

/// Resolves assets to ledgers, computes the fee, stamps timeouts and fee
/// policy, and encrypts the personal data (bound to the order id).
pub fn create_event(
    config: &OrdersConfig,
    o: &NewOrder<'_>,
    keyring: &bursar_crypto::pii::PiiKeyring,
) -> Result<OrderCreate, NewOrderError> {
    let err = |field, message: String| NewOrderError { field, message };
    let source_ledger = config
        .ledger_of(o.source_asset)
        .ok_or_else(|| err("source_asset", format!("{} is not an order asset", o.source_asset)))?;
    let target_ledger = config
        .ledger_of(o.target_asset)
        .ok_or_else(|| err("target_asset", format!("{} is not an order asset", o.target_asset)))?;
    let fee_amount = config.fee.fee(o.source_amount).ok_or_else(|| err("source_amount", "the fee overflows".into()))?;
    o.pii.validate().map_err(|e| match e {
        bursar_crypto::pii::PiiError::Invalid { field, reason } => err(field, reason),
        other => err("sender", other.to_string()),
    })?;
    let blob = keyring.encrypt(o.id, o.pii).map_err(|e| err("sender", e.to_string()))?;
    let mut event = OrderCreate {
        id: o.id,
        customer_id: o.customer_id,
        source_amount: o.source_amount,
        fee_amount,
        payout_at: o.payout_at,
        source_ledger,
        target_ledger,
        funds_timeout_seconds: config.funds_timeout_seconds,
        review_timeout_seconds: config.review_timeout_seconds,
        flags: config.flags,
        pii_len: blob.len() as u16,
        ..Default::default()
    };
    let slot = event.pii.get_mut(..blob.len()).ok_or_else(|| err("sender", "personal data too long".into()))?;
    slot.copy_from_slice(&blob);
    Ok(event)
}
