//! Stored index tables at the node level. With a snapshot after every
//! entry, the indexer builds tables of transfer ids and accounts' lists from
//! each written snapshot, and a restart restores with them. They are derived
//! data: damaged tables are rebuilt, and every lookup, account page and
//! duplicate check still answers as before. (Tables ahead of the snapshot
//! recovery starts from: `recovery::tests`.)

mod small_ledger;

use bursar_client::{Client, ClientOptions};
use bursar_core::records::filter_flags as FF;
use bursar_core::{AccountFilter, CreateTransferResult, Transfer};
use bursar_server::{Node, NodeConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.snapshot_every_bytes = 1;
    config.cache_bytes = 1 << 20;
    config.admin_key = Some(small_ledger::ADMIN_KEY.into());
    config
}

fn client(node: &Node) -> Client {
    let key = Some(small_ledger::ADMIN_KEY.to_string());
    Client::connect(node.local_addr(), &ClientOptions { timeout: Duration::from_secs(10), key, ..Default::default() })
        .unwrap()
}

/// Every file of the index tables.
fn table_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.join("index")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() { todo.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// What the small ledger answers: its 20 transfers by id, account 1's
/// transfers newest first, and a re-submission of transfer 100.
fn answers(node: &Node) -> (Vec<Transfer>, Vec<Transfer>, Vec<u32>) {
    let mut c = client(node);
    let ids: Vec<u128> = (100..120).collect();
    let found = c.lookup_transfers(&ids).unwrap();
    let filter = AccountFilter {
        account_id: 1,
        limit: 100,
        flags: FF::DEBITS | FF::CREDITS | FF::REVERSED,
        ..Default::default()
    };
    let page = c.get_account_transfers(&filter).unwrap();
    let again = c.create_transfers(&[Transfer { timestamp: 0, ..found[0] }]).unwrap();
    (found, page, again.iter().map(|r| r.code).collect())
}

/// Starts a node on `dir`, takes its answers (the re-submission is an
/// entry, so a snapshot is written and the indexer runs), waits until index
/// tables exist, and stops it cleanly.
fn start_and_index(dir: &Path, rebuilt: bool) -> (Vec<Transfer>, Vec<Transfer>, Vec<u32>) {
    let node = Node::start(config(dir)).unwrap();
    assert_eq!(node.report().indexes_rebuilt, rebuilt, "whether the tables are rebuilt");
    let seen = answers(&node);
    let deadline = Instant::now() + Duration::from_secs(30);
    while table_files(dir).is_empty() {
        assert!(Instant::now() < deadline, "no index tables were written in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.shutdown();
    seen
}

#[test]
fn damaged_index_tables_are_rebuilt_and_answers_stay_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    small_ledger::populate(config(tmp.path()));
    let first = start_and_index(tmp.path(), false);
    assert_eq!(first.0.len(), 20, "every transfer is found");
    assert_eq!(first.1.len(), 10, "account 1 is on 10 transfers' debit or credit side");
    assert_eq!(first.2, vec![CreateTransferResult::Exists.code()], "a re-submission is a duplicate");
    assert!(!table_files(tmp.path()).is_empty());

    // Restarted with the tables as they are.
    assert_eq!(start_and_index(tmp.path(), false), first);

    // Every table file damaged: the tables are rebuilt.
    for f in table_files(tmp.path()) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&f, bytes).unwrap();
    }
    assert_eq!(start_and_index(tmp.path(), true), first);
    assert_eq!(start_and_index(tmp.path(), false), first, "and used once rebuilt");
}
