//! Replies through a real `Machine`: records in request order, filters
//! refused with a reason, writes refused as queries.

use super::*;
use crate::command::{Command, LogCommand};
use crate::limits::QUERY_PAGE_MAX;
use crate::records::{Account, Ledger, encode_all};

fn machine_with_accounts(ids: &[u128]) -> Machine {
    let mut m = Machine::default();
    let ledger = [Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }];
    let accounts: Vec<Account> =
        ids.iter().map(|&id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    let commands = [
        LogCommand::Plain(Command { operation: Operation::CreateLedgers, events: encode_all(&ledger) }),
        LogCommand::Plain(Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) }),
    ];
    m.apply_entry(1, 1_000, &commands);
    m
}

fn id_bytes(ids: &[u128]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

#[test]
fn lookups_answer_existing_records_in_the_order_asked() {
    let m = machine_with_accounts(&[1, 2, 3]);
    let reply = m.query(Operation::LookupAccounts, &id_bytes(&[3, 99, 1])).unwrap();
    assert_eq!(reply.count, 2);
    let found: Vec<Account> = reply.body.chunks_exact(Account::SIZE).map(bytemuck::pod_read_unaligned).collect();
    assert_eq!(found.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 1]);
    assert_eq!(reply.body, bytemuck::cast_slice::<Account, u8>(&m.ledger().lookup_accounts([3, 1])));
}

#[test]
fn a_filter_beyond_the_page_limit_is_refused_with_its_reason() {
    let m = machine_with_accounts(&[1]);
    let filter = LedgerFilter { limit: QUERY_PAGE_MAX as u32 + 1, ..Default::default() };
    let e = m.query(Operation::ListLedgers, bytemuck::bytes_of(&filter)).unwrap_err();
    assert_eq!(e.kind, QueryErrorKind::InvalidFilter);
    assert_eq!(e.detail, format!("limit must be between 1 and {QUERY_PAGE_MAX}"));
    let ok = m.query(Operation::ListLedgers, bytemuck::bytes_of(&LedgerFilter { limit: 10, ..Default::default() }));
    assert_eq!(ok.unwrap().count, 1);
}

#[test]
fn a_body_shorter_than_its_filter_is_refused_not_read_past() {
    let m = Machine::default();
    let e = m.query(Operation::GetAccountTransfers, &[0; 7]).unwrap_err();
    assert_eq!(e.kind, QueryErrorKind::InvalidFilter);
}

#[test]
fn writes_are_not_queries() {
    let m = Machine::default();
    for op in Operation::ALL.iter().filter(|op| op.is_write()) {
        let e = m.query(*op, &[]).unwrap_err();
        assert_eq!(e.kind, QueryErrorKind::NotARead, "{op:?}");
    }
}

#[test]
fn list_webhooks_leads_with_the_next_id_and_list_access_with_the_scan_end() {
    let m = Machine::default();
    let hooks = m.query(Operation::ListWebhooks, &[0; WebhookFilter::SIZE]).unwrap();
    assert_eq!((hooks.count, hooks.body), (0, m.webhooks().next_id().to_le_bytes().to_vec()));
    let access = m.query(Operation::ListAccess, &[0; AccessFilter::SIZE]).unwrap();
    assert_eq!((access.count, access.body.len()), (0, 8));
}
