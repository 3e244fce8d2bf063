//! A small ledger written through an in-process node, for the tests that
//! then examine its data directory with the real binary (`storage_faults.rs`,
//! `verify_until.rs`): one ledger, 4 accounts, then 20 single-transfer
//! entries; the node is stopped cleanly (which snapshots the end).

use bursar_client::{Client, ClientOptions};
use bursar_core::{Account, Ledger, Transfer};
use bursar_server::{Node, NodeConfig};
use std::time::Duration;

/// The first admin key of the small ledger (it may also write over the
/// binary protocol); creating it is the log's first entry.
#[allow(dead_code)] // used by some of the tests that include this module
pub const ADMIN_KEY: &str = "small-ledger-admin-key-0123456789abcdef";

pub fn populate(mut config: NodeConfig) {
    config.admin_key = Some(ADMIN_KEY.into());
    let node = Node::start(config).unwrap();
    let options = ClientOptions { timeout: Duration::from_secs(10), key: Some(ADMIN_KEY.into()), ..Default::default() };
    let mut c = Client::connect(node.local_addr(), &options).unwrap();
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> = (1..=4).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
    for i in 0..20u128 {
        let t = Transfer {
            id: 100 + i,
            debit_account_id: 1 + i % 4,
            credit_account_id: 1 + (i + 1) % 4,
            amount: 10,
            ledger: 1,
            code: 1,
            ..Default::default()
        };
        assert!(c.create_transfers(&[t]).unwrap().is_empty());
    }
    node.shutdown();
}
