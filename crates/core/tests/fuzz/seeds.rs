//! Valid events of every write operation and a machine built from them:
//! the starting points of the core fuzz targets.

#![allow(dead_code)]

use bursar_core::command::{Command, Envelope, LogCommand, Operation, decode_body, encode_command, envelope_prefix};
use bursar_core::machine::Machine;
use bursar_core::orders::{Actor, CommandKind, OrderCommand, OrderCreate, Verdict, order_flags};
use bursar_core::records::{NANOS_PER_SECOND, encode_all, transfer_flags as TF};
use bursar_core::service::keys::{KeyEvent, RevokeEvent, Role};
use bursar_core::service::webhooks::{WebhookCreate, WebhookUpdate};
use bursar_core::state::{Snapshot, SnapshotChunks};
use bursar_core::{Account, Ledger, Limits, Transfer};

pub const USD: u32 = 840;
pub const EUR: u32 = 978;
pub const SEC: u64 = NANOS_PER_SECOND;
pub const START: u64 = 1_700_000_000 * SEC;

pub fn ledger(id: u32, asset: &str) -> Ledger {
    Ledger { id, scale: 2, asset: Ledger::pack_asset(asset).expect("valid asset"), ..Default::default() }
}

pub fn account(id: u128, ledger: u32) -> Account {
    Account { id, ledger, code: 1, ..Default::default() }
}

pub fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: dr, credit_account_id: cr, amount, ledger: USD, code: 1, ..Default::default() }
}

pub fn order(id: u128) -> OrderCreate {
    let mut e = OrderCreate {
        id,
        customer_id: 77,
        source_amount: 10_000,
        fee_amount: 150,
        source_ledger: USD,
        target_ledger: EUR,
        funds_timeout_seconds: 60,
        review_timeout_seconds: 600,
        flags: order_flags::REFUND_FEE_ON_FAILURE,
        pii_len: 3,
        ..Default::default()
    };
    e.pii[..3].copy_from_slice(b"xyz");
    e
}

pub fn order_cmd(kind: CommandKind, actor: Actor) -> OrderCommand {
    OrderCommand::new(1, kind, actor)
}

pub fn webhook_update(seq: u64) -> WebhookUpdate {
    WebhookUpdate { id: 1, seq, attempts: 3, status: 500, ..Default::default() }
}

/// Valid events of every write operation, as (operation, encoded events):
/// the seeds that mutations start from. Applied in order they also build
/// the base state.
pub fn seeds() -> Vec<(Operation, Vec<u8>)> {
    let key = KeyEvent::new(9, [1; 32], Role::Operator, &[USD], "fuzz").expect("short name");
    let hook = WebhookCreate::new(1, 0, [4; 16], "https://example.com/hook", &[5; 40]).expect("short url");
    let pending = Transfer { flags: TF::PENDING, timeout: 30, ..transfer(101, 1, 2, 70) };
    let post = Transfer { flags: TF::POST_PENDING, pending_id: 101, ..transfer(102, 0, 0, u128::MAX) };
    let linked = [Transfer { flags: TF::LINKED, ..transfer(103, 2, 3, 5) }, transfer(104, 3, 4, 5)];
    let funds = OrderCommand { amount: 10_000, ..order_cmd(CommandKind::FundsReceived, Actor::Bank) };
    let screened =
        OrderCommand { verdict: Verdict::Pass as u8, ..order_cmd(CommandKind::ScreeningResult, Actor::Executor) };
    let fx = OrderCommand {
        rate_ppb: 920_000_000,
        quote_id: 5,
        time: START + 3600 * SEC,
        ..order_cmd(CommandKind::LockFx, Actor::Executor)
    };
    vec![
        (Operation::CreateLedgers, encode_all(&[ledger(USD, "USD"), ledger(EUR, "EUR")]).to_vec()),
        (
            Operation::CreateAccounts,
            encode_all(&[account(1, USD), account(2, USD), account(3, USD), account(4, USD)]).to_vec(),
        ),
        (Operation::CreateAccounts, encode_all(&[account(5, EUR), account(6, EUR)]).to_vec()),
        (Operation::CreateTransfers, encode_all(&[transfer(100, 1, 2, 1_000)]).to_vec()),
        (Operation::CreateTransfers, encode_all(&[pending]).to_vec()),
        (Operation::CreateTransfers, encode_all(&[post]).to_vec()),
        (Operation::CreateTransfers, encode_all(&linked).to_vec()),
        (Operation::CreateKeys, encode_all(&[key]).to_vec()),
        (Operation::RevokeKeys, encode_all(&[RevokeEvent { id: 9, reserved: 0 }]).to_vec()),
        (Operation::CreateOrders, encode_all(&[order(1)]).to_vec()),
        (Operation::OrderCommands, encode_all(&[order_cmd(CommandKind::FundsAwaited, Actor::Executor)]).to_vec()),
        (Operation::OrderCommands, encode_all(&[funds]).to_vec()),
        (Operation::OrderCommands, encode_all(&[order_cmd(CommandKind::StartScreening, Actor::Executor)]).to_vec()),
        (Operation::OrderCommands, encode_all(&[screened]).to_vec()),
        (Operation::OrderCommands, encode_all(&[fx]).to_vec()),
        (Operation::OrderCommands, encode_all(&[order_cmd(CommandKind::SendPayout, Actor::Executor)]).to_vec()),
        (Operation::CreateWebhooks, encode_all(&[hook]).to_vec()),
        (Operation::WebhookProgress, encode_all(&[webhook_update(1)]).to_vec()),
        (Operation::WebhookDeadLetters, encode_all(&[webhook_update(2)]).to_vec()),
        (Operation::ReplayDeadLetters, encode_all(&[webhook_update(0)]).to_vec()),
        (Operation::DeleteWebhooks, encode_all(&[webhook_update(0)]).to_vec()),
    ]
}

/// A machine with some of everything: the seeds applied up to but not
/// including the last one (the webhook stays, so updates reach it).
pub fn base() -> (Machine, u64, u64) {
    let mut m = Machine::new(Limits::default());
    let seeds = seeds();
    let (mut position, mut time) = (0, START);
    for (op, events) in &seeds[..seeds.len() - 1] {
        position += 1;
        time += SEC;
        m.apply_entry(position, time, &[LogCommand::Plain(Command { operation: *op, events })]);
    }
    let body = enveloped_body(Operation::CreateTransfers, encode_all(&[transfer(105, 4, 1, 9)]), "k-1");
    position += 1;
    time += SEC;
    m.apply_entry(position, time, &decode_body(&body).expect("valid body"));
    (m, position, time)
}

/// An enveloped command as the HTTP layer logs it (idempotency and audit).
pub fn enveloped_body(operation: Operation, events: &[u8], key: &str) -> Vec<u8> {
    let command = Command { operation, events };
    let env = Envelope {
        key_id: 9,
        idempotency: Some(([key.len() as u8; 16], [2; 16])),
        retention_seconds: 3600,
        idempotency_limit: 100,
        request_id: "req-1",
        route: "POST /v1/transfers",
        idempotency_key: key,
    };
    let mut body = envelope_prefix(&env, &command).expect("short fields");
    encode_command(&mut body, &command);
    body
}

/// The stored form of a snapshot, as a store reads it back.
pub fn stored(m: &Machine) -> SnapshotChunks {
    let snap = m.snapshot();
    let sections =
        snap.sections().iter().map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect()).collect();
    SnapshotChunks { header: snap.header(), sections }
}
