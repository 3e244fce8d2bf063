//! One external step of one order: call the connector (with the order's
//! idempotency key, retries, timeout and circuit breaker) and turn the
//! answer into the order command that records it.
//!
//! Keys are derived from the order and the step, never from the attempt, so
//! a retry, a restart or a failover repeats a call with the same key and the
//! connector answers it without repeating its effect. The FX key also
//! carries the deferral count: an expired quote must be replaced by a new
//! one, which is not a side effect.

use super::Connectors;
use crate::connectors::{
    ConnectorError, FundsRequest, PayoutRequest, PayoutStatus, ScreeningRequest, ScreeningVerdict,
};
use crate::engine_link::FeedOrder;
use bursar_core::orders::{Actor, CommandKind, OrderChange, OrderCommand, OrderState, Verdict};
use bursar_crypto::pii::OrderPii;
use bursar_runtime::resilience::{CallError, call_with_retry};
use std::time::Duration;

/// What a step produced.
pub enum StepOutcome {
    /// Record this in the log.
    Command(Box<OrderCommand>),
    /// Nothing to do now (a waiting state, or the payout is still pending
    /// and will be polled again at `retry_in`).
    Wait,
    /// The call could not be made now: defer the order durably.
    Defer { retry_in: Duration, why: String },
}

impl StepOutcome {
    fn command(c: OrderCommand) -> StepOutcome {
        StepOutcome::Command(Box::new(c))
    }
}

pub fn idempotency_key(order: &OrderChange, step: &str) -> String {
    match step {
        "fx" => format!("order-{}-fx-{}", order.id, order.attempts),
        _ => format!("order-{}-{step}", order.id),
    }
}

fn executor(order: &FeedOrder, kind: CommandKind) -> OrderCommand {
    OrderCommand::new(order.change.id, kind, Actor::Executor)
}

/// Runs the step the order's state calls for.
pub async fn run(c: &Connectors, order: &FeedOrder) -> StepOutcome {
    match order.state {
        OrderState::Created => expect_funds(c, order).await,
        OrderState::FundsReceived => StepOutcome::command(executor(order, CommandKind::StartScreening)),
        OrderState::Screening => screen(c, order).await,
        OrderState::Approved => lock_fx(c, order).await,
        OrderState::FxLocked => StepOutcome::command(executor(order, CommandKind::SendPayout)),
        OrderState::PayoutSent => pay_out(c, order).await,
        _ => StepOutcome::Wait,
    }
}

/// The states whose step needs the order's personal data: the feed brings
/// it only for these (bit `1 << state`).
pub const PII_STATES: u16 = 1 << OrderState::Screening as u8 | 1 << OrderState::PayoutSent as u8;

/// Whether the state has an external step for the executor.
pub fn is_actionable(state: OrderState) -> bool {
    matches!(
        state,
        OrderState::Created
            | OrderState::FundsReceived
            | OrderState::Screening
            | OrderState::Approved
            | OrderState::FxLocked
            | OrderState::PayoutSent
    )
}

fn defer(connector: &str, e: CallError<ConnectorError>) -> StepOutcome {
    let retry_in = match &e {
        CallError::CircuitOpen { retry_after } => *retry_after,
        _ => Duration::ZERO,
    };
    StepOutcome::Defer { retry_in, why: format!("{connector}: {e}") }
}

async fn expect_funds(c: &Connectors, order: &FeedOrder) -> StepOutcome {
    let o = &order.change;
    let key = idempotency_key(o, "funds");
    let asset = c.asset(o.source_ledger);
    let request = FundsRequest { order_id: o.id, customer_id: o.customer_id, asset, amount: o.source_amount };
    let funds = c.funds.clone();
    match call_with_retry("funds", &c.retry, &c.breakers.funds, |_| funds.expect(&key, &request)).await {
        Ok(instructions) => {
            StepOutcome::command(executor(order, CommandKind::FundsAwaited).with_reference(&instructions.reference))
        }
        Err(CallError::Permanent(e)) => {
            StepOutcome::Defer { retry_in: Duration::from_secs(60), why: format!("funds refused: {e}") }
        }
        Err(e) => defer("funds", e),
    }
}

fn personal_data(c: &Connectors, order: &FeedOrder) -> Result<OrderPii, Box<StepOutcome>> {
    c.keyring.decrypt(order.change.id, &order.pii).map_err(|e| {
        tracing::error!(order = %order.change.id, error = %e, "cannot decrypt an order's personal data; is a key missing?");
        Box::new(StepOutcome::Defer { retry_in: Duration::from_secs(300), why: "personal data undecryptable".into() })
    })
}

async fn screen(c: &Connectors, order: &FeedOrder) -> StepOutcome {
    let o = &order.change;
    let pii = match personal_data(c, order) {
        Ok(p) => p,
        Err(outcome) => return *outcome,
    };
    let key = idempotency_key(o, "screening");
    let request = ScreeningRequest {
        order_id: o.id,
        customer_id: o.customer_id,
        asset: c.asset(o.source_ledger),
        amount: o.source_amount,
        sender_name: pii.sender_name,
        sender_country: pii.sender_country,
        recipient_name: pii.recipient_name,
    };
    let screening = c.screening.clone();
    let verdict =
        match call_with_retry("screening", &c.retry, &c.breakers.screening, |_| screening.screen(&key, &request)).await
        {
            Ok(v) => v,
            Err(CallError::Permanent(e)) => ScreeningVerdict::Review { reason: format!("screening refused: {e}") },
            Err(e) => return defer("screening", e),
        };
    let (v, reason) = match verdict {
        ScreeningVerdict::Pass => (Verdict::Pass, String::new()),
        ScreeningVerdict::Review { reason } => (Verdict::Review, reason),
        ScreeningVerdict::Reject { reason } => (Verdict::Reject, reason),
    };
    let command = OrderCommand { verdict: v as u8, ..executor(order, CommandKind::ScreeningResult) };
    StepOutcome::command(command.with_reason(&reason))
}

async fn lock_fx(c: &Connectors, order: &FeedOrder) -> StepOutcome {
    let o = &order.change;
    let key = idempotency_key(o, "fx");
    let (source, target) = (c.asset(o.source_ledger), c.asset(o.target_ledger));
    let net = o.source_amount - o.fee_amount;
    let fx = c.fx.clone();
    match call_with_retry("fx", &c.retry, &c.breakers.fx, |_| fx.quote(&key, &source, &target, net)).await {
        Ok(q) => StepOutcome::command(OrderCommand {
            rate_ppb: q.rate_ppb,
            quote_id: q.quote_id,
            time: q.expires_at_unix_nanos,
            ..executor(order, CommandKind::LockFx)
        }),
        Err(CallError::Permanent(e)) => {
            StepOutcome::Defer { retry_in: Duration::from_secs(60), why: format!("fx refused: {e}") }
        }
        Err(e) => defer("fx", e),
    }
}

async fn pay_out(c: &Connectors, order: &FeedOrder) -> StepOutcome {
    let o = &order.change;
    let pii = match personal_data(c, order) {
        Ok(p) => p,
        Err(outcome) => return *outcome,
    };
    let key = idempotency_key(o, "payout");
    let request = PayoutRequest {
        order_id: o.id,
        asset: c.asset(o.target_ledger),
        amount: o.target_amount,
        recipient_name: pii.recipient_name,
        bank_account: pii.recipient_bank_account,
    };
    let payout = c.payout.clone();
    let status = match call_with_retry("payout", &c.retry, &c.breakers.payout, |_| payout.send(&key, &request)).await {
        Ok(s) => s,
        Err(CallError::Permanent(e)) => PayoutStatus::Failed { reason: format!("rail refused: {e}") },
        Err(e) => return defer("payout", e),
    };
    match status {
        PayoutStatus::Confirmed { reference } => {
            StepOutcome::command(executor(order, CommandKind::ConfirmPayout).with_reference(&reference))
        }
        PayoutStatus::Failed { reason } => {
            StepOutcome::command(executor(order, CommandKind::FailPayout).with_reason(&reason))
        }
        PayoutStatus::Pending { .. } => StepOutcome::Wait,
    }
}
