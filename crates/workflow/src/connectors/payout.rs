//! The payout-rail simulator: pays once per key, settles after a delay, and
//! fails a configurable share of payouts for business reasons.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::sim::{SimCore, duration_nanos, lock};
use super::{BoxFuture, ConnectorError, PayoutRail, PayoutRequest, PayoutStatus, SimConfig, SimControls};

/// The reason a simulated payout fails with.
const FAILURE_REASON: &str = "beneficiary_bank_rejected";

/// How simulated payouts settle.
#[derive(Debug, Clone, Default)]
pub struct PayoutSettings {
    /// Time from the first send until the payout settles (`Confirmed` or
    /// `Failed`); zero settles it on send.
    pub confirm_after: Duration,
    /// Probability (clamped to `[0, 1]`) that a payout ends `Failed`, decided
    /// once per key at the first send.
    pub payout_failure_rate: f64,
}

/// One performed payout.
struct Payout {
    request: PayoutRequest,
    reference: String,
    settles_at_unix_nanos: u64,
    fails: bool,
}

impl Payout {
    fn status(&self, now_unix_nanos: u64) -> PayoutStatus {
        if now_unix_nanos < self.settles_at_unix_nanos {
            PayoutStatus::Pending { reference: self.reference.clone() }
        } else if self.fails {
            PayoutStatus::Failed { reason: FAILURE_REASON.into() }
        } else {
            PayoutStatus::Confirmed { reference: self.reference.clone() }
        }
    }
}

#[derive(Default)]
struct State {
    payouts: HashMap<String, Payout>,
    sent: u64,
}

/// Simulated payout rail.
pub struct PayoutSimulator {
    core: SimCore,
    settings: PayoutSettings,
    state: Mutex<State>,
}

impl PayoutSimulator {
    pub fn new(controls: SimControls, config: SimConfig, settings: PayoutSettings) -> Self {
        PayoutSimulator {
            core: SimCore::new("payout", config, controls),
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// Pays out on the first send with `key`; later sends report its status.
    fn send_once(&self, key: &str, request: &PayoutRequest) -> Result<(PayoutStatus, bool), ConnectorError> {
        let now = self.core.now_unix_nanos();
        let mut state = lock(&self.state);
        if let Some(payout) = state.payouts.get(key) {
            if payout.request != *request {
                return Err(ConnectorError::Rejected("idempotency key reused with a different request".into()));
            }
            return Ok((payout.status(now), false));
        }
        validate(request)?;
        state.sent += 1;
        let payout = Payout {
            request: request.clone(),
            reference: format!("PO-{:010}", state.sent),
            settles_at_unix_nanos: now.saturating_add(duration_nanos(self.settings.confirm_after)),
            fails: self.core.chance(self.settings.payout_failure_rate),
        };
        let status = payout.status(now);
        state.payouts.insert(key.to_string(), payout);
        Ok((status, true))
    }

    fn status_of(&self, key: &str) -> Result<(PayoutStatus, bool), ConnectorError> {
        let now = self.core.now_unix_nanos();
        let state = lock(&self.state);
        let payout = state.payouts.get(key).ok_or_else(|| ConnectorError::Rejected("unknown payout".into()))?;
        Ok((payout.status(now), false))
    }
}

/// A rail refuses payouts it could never make.
fn validate(request: &PayoutRequest) -> Result<(), ConnectorError> {
    if request.amount == 0 {
        return Err(ConnectorError::Rejected("amount must be positive".into()));
    }
    if request.bank_account.trim().is_empty() {
        return Err(ConnectorError::Rejected("bank_account is empty".into()));
    }
    Ok(())
}

impl PayoutRail for PayoutSimulator {
    fn send<'a>(
        &'a self,
        key: &'a str,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(self.core.call("send", key, move || self.send_once(key, request)))
    }

    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<PayoutStatus, ConnectorError>> {
        Box::pin(self.core.call("status", key, move || self.status_of(key)))
    }
}
