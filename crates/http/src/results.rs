//! From the engine's result codes to HTTP: status, stable code name, detail
//! and the field at fault. A pure function of the codes, so a replayed
//! response is the same as the original.

use crate::dto::{BatchResult, EventError};
use crate::problem::Problem;
use axum::http::StatusCode;
use bursar_core::orders::{CreateOrderResult, OrderCommandResult, OrderState};
use bursar_core::service::keys::{CreateKeyResult, RevokeKeyResult, RotateKeyResult};
use bursar_core::{CreateAccountResult, CreateLedgerResult, CreateTransferResult, EventResult, Operation};

/// A result code's name, description and class.
struct Code {
    name: &'static str,
    detail: &'static str,
}

fn describe(op: Operation, code: u32) -> Code {
    macro_rules! from {
        ($t:ty) => {
            match <$t>::from_code(code) {
                Some(c) => Code { name: c.name(), detail: c.description() },
                None => Code { name: "unknown_result", detail: "The engine returned an unknown result code." },
            }
        };
    }
    match op {
        Operation::CreateLedgers => from!(CreateLedgerResult),
        Operation::CreateAccounts => from!(CreateAccountResult),
        Operation::CreateTransfers => from!(CreateTransferResult),
        Operation::CreateKeys => from!(CreateKeyResult),
        Operation::RevokeKeys => from!(RevokeKeyResult),
        Operation::RotateKeys => from!(RotateKeyResult),
        Operation::CreateOrders => from!(CreateOrderResult),
        Operation::OrderCommands => from!(OrderCommandResult),
        _ => Code { name: "unknown_result", detail: "The engine returned an unknown result code." },
    }
}

/// The request field a result code is about.
pub fn field_of(name: &str) -> Option<&'static str> {
    let table: [(&str, &str); 16] = [
        ("debit_account", "debit_account_id"),
        ("credit_account", "credit_account_id"),
        ("pending_id", "pending_id"),
        ("pending_transfer", "pending_id"),
        ("user_data_128", "user_data_128"),
        ("user_data_64", "user_data_64"),
        ("user_data_32", "user_data_32"),
        ("timeout", "timeout"),
        ("flag", "flags"),
        ("amount", "amount"),
        ("exceeds", "amount"),
        ("overflows", "amount"),
        ("ledger", "ledger"),
        ("asset", "asset"),
        ("scale", "scale"),
        ("timestamp", "timestamp"),
    ];
    if let Some((_, field)) = table.iter().find(|(needle, _)| name.contains(needle)) {
        return Some(field);
    }
    match name {
        "code_must_not_be_zero" | "exists_with_different_code" => Some("code"),
        "id_must_not_be_zero" | "id_must_not_be_int_max" | "id_already_failed" => Some("id"),
        "role_invalid" => Some("role"),
        "ledgers_invalid" => Some("ledgers"),
        "name_invalid" => Some("name"),
        "rate_limit_invalid" => Some("rate_limit"),
        _ => None,
    }
}

/// The request field an order result code is about (the names of the
/// ledger's table would point at fields order requests do not have).
pub fn order_field_of(name: &str) -> Option<&'static str> {
    match name {
        "id_must_not_be_zero" | "id_must_not_be_int_max" | "order_id_must_not_be_zero" => Some("id"),
        "customer_id_must_not_be_zero" => Some("customer_id"),
        "source_amount_must_not_be_zero" | "fee_must_be_less_than_amount" => Some("source_amount"),
        "source_ledger_not_found" => Some("source_asset"),
        "target_ledger_not_found" => Some("target_asset"),
        "amount_must_equal_order" => Some("amount"),
        "reason_invalid" => Some("reason"),
        "verdict_invalid" => Some("decision"),
        _ => None,
    }
}

fn field(op: Operation, name: &str) -> Option<&'static str> {
    match op {
        Operation::CreateOrders | Operation::OrderCommands => order_field_of(name),
        _ => field_of(name),
    }
}

/// The state an `order_is_<state>` code names.
fn state_of(op: Operation, code: u32) -> Option<OrderState> {
    let c = OrderCommandResult::from_code(code).filter(|_| op == Operation::OrderCommands)?;
    OrderState::ALL.into_iter().find(|s| OrderCommandResult::in_state(*s) == c)
}

/// The status of a single create that failed with `name`.
fn status_of(name: &str) -> StatusCode {
    if name.starts_with("exists_with_different")
        || name == "id_already_failed"
        || name == "last_admin_key"
        || name == "key_is_revoked"
        || name == "key_is_expired"
        || name.starts_with("order_is_")
    {
        StatusCode::CONFLICT
    } else if name == "maker_checker" {
        StatusCode::FORBIDDEN
    } else if name == "key_not_found" || name == "order_not_found" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// The outcome of a single-event create.
pub enum Single {
    Created,
    Exists,
    Failed(Problem),
}

pub fn single(op: Operation, results: &[EventResult]) -> Single {
    let Some(r) = results.first() else { return Single::Created };
    let code = describe(op, r.code);
    if code.name == "exists" {
        return Single::Exists;
    }
    let detail = match state_of(op, r.code) {
        Some(state) => format!("{} (the order is {})", code.detail, state.name()),
        None => code.detail.to_string(),
    };
    let mut problem = Problem::new(status_of(code.name), code.name, detail);
    problem.field = field(op, code.name).map(str::to_string);
    Single::Failed(problem)
}

pub fn batch(op: Operation, events: usize, results: &[EventResult]) -> BatchResult {
    BatchResult {
        accepted: (events - results.len()) as u32,
        results: results
            .iter()
            .map(|r| {
                let code = describe(op, r.code);
                EventError {
                    index: r.index,
                    code: code.name.to_string(),
                    detail: code.detail.to_string(),
                    field: field(op, code.name).map(str::to_string),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses_and_fields() {
        let r = |c: CreateTransferResult| [EventResult { index: 0, code: c.code() }];
        assert!(matches!(single(Operation::CreateTransfers, &[]), Single::Created));
        assert!(matches!(single(Operation::CreateTransfers, &r(CreateTransferResult::Exists)), Single::Exists));
        let Single::Failed(p) = single(Operation::CreateTransfers, &r(CreateTransferResult::ExceedsCredits)) else {
            panic!()
        };
        assert_eq!(
            (p.status, p.code.as_str(), p.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, "exceeds_credits", Some("amount"))
        );
        let Single::Failed(p) = single(Operation::CreateTransfers, &r(CreateTransferResult::ExistsWithDifferentAmount))
        else {
            panic!()
        };
        assert_eq!((p.status, p.field.as_deref()), (StatusCode::CONFLICT, Some("amount")));
        let Single::Failed(p) = single(Operation::CreateTransfers, &r(CreateTransferResult::DebitAccountNotFound))
        else {
            panic!()
        };
        assert_eq!(p.field.as_deref(), Some("debit_account_id"));
        let b = batch(Operation::CreateTransfers, 3, &r(CreateTransferResult::LinkedEventFailed));
        assert_eq!((b.accepted, b.results[0].code.as_str()), (2, "linked_event_failed"));
        for c in CreateTransferResult::ALL {
            let _ = field_of(c.name());
        }
    }

    #[test]
    fn order_codes_map_to_statuses_and_fields() {
        let r = |c: OrderCommandResult| [EventResult { index: 0, code: c.code() }];
        let failed = |c| match single(Operation::OrderCommands, &r(c)) {
            Single::Failed(p) => p,
            _ => panic!("{c:?} is a failure"),
        };
        let p = failed(OrderCommandResult::OrderIsPayoutSent);
        assert_eq!((p.status, p.code.as_str()), (StatusCode::CONFLICT, "order_is_payout_sent"));
        assert!(p.detail.ends_with("(the order is payout_sent)"), "{}", p.detail);
        for s in OrderState::ALL {
            let p = failed(OrderCommandResult::in_state(s));
            assert_eq!((p.status, p.code), (StatusCode::CONFLICT, format!("order_is_{}", s.name())));
        }
        assert_eq!(failed(OrderCommandResult::OrderNotFound).status, StatusCode::NOT_FOUND);
        let p = failed(OrderCommandResult::AmountMustEqualOrder);
        assert_eq!((p.status, p.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("amount")));
        let p = failed(OrderCommandResult::LedgerRejected);
        assert_eq!((p.status, p.field), (StatusCode::UNPROCESSABLE_ENTITY, None));
        let c = |c: CreateOrderResult| [EventResult { index: 0, code: c.code() }];
        assert!(matches!(single(Operation::CreateOrders, &c(CreateOrderResult::Exists)), Single::Exists));
        let Single::Failed(p) = single(Operation::CreateOrders, &c(CreateOrderResult::ExistsWithDifferentFields))
        else {
            panic!()
        };
        assert_eq!(p.status, StatusCode::CONFLICT);
        let Single::Failed(p) = single(Operation::CreateOrders, &c(CreateOrderResult::TargetLedgerNotFound)) else {
            panic!()
        };
        assert_eq!((p.status, p.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("target_asset")));
    }
}
