//! Someone who can publish to the cluster's log subject but holds no
//! cluster key cannot write to the ledger, nor stop a replica.
//!
//! Method: 3 real `nats-server`s, 3 real `bursar start --cluster` replicas.
//! After a genuine write, an anonymous NATS client publishes to the log
//! subject exactly what issue 13's attacker did (a raw `create_transfers`
//! body moving 999999, a raw `create_keys` body making an admin key with a
//! secret the attacker chose, a body with an unknown operation code), plus
//! a message sealed under the wrong key and a byte-exact replay of a
//! genuine committed entry. Then: nothing of it is applied on any replica,
//! every replica still serves writes, each reports the five refusals (audit
//! records, metric), every replica restarts cleanly, and `bursar verify
//! --until` gives the same state digest on all three at the last common
//! position, with `refused_entries=5`.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).

mod cluster_common;
#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use bursar_client::Client as BinaryClient;
use bursar_core::command::{Command, Operation, encode_command};
use bursar_core::records::encode_all;
use bursar_core::{Account, Ledger, Transfer};
use bursar_testkit::nats_cluster::NatsCluster;
use cluster_common::{Replica, assert_same_state, connect, field, start, wait_for};
use common::{ADMIN_KEY, Client};
use process_common::Proc;
use std::time::Duration;

const ATTACKER_SECRET: &str = "attacker-chosen-secret-0123456789abcdef";
const FORGED_TRANSFER: u128 = 999_999;

fn setup(c: &mut BinaryClient) {
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> = (1..=2).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
}

fn transfer(id: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: 1, credit_account_id: 2, amount, ledger: 1, code: 1, ..Default::default() }
}

fn command_body(operation: Operation, events: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    encode_command(&mut body, &Command { operation, events });
    body
}

/// What the attacker publishes, with a label for failure messages.
fn forgeries(stream: &str) -> Vec<(&'static str, Vec<u8>)> {
    let forged_transfer = command_body(Operation::CreateTransfers, encode_all(&[transfer(FORGED_TRANSFER, 999_999)]));
    let admin = bursar_server::keys::admin_key_event(4242, ATTACKER_SECRET);
    let forged_key = command_body(Operation::CreateKeys, bytemuck::bytes_of(&admin));
    let mut unknown_operation = vec![255, 0, 0, 0, 1, 0, 0, 0];
    unknown_operation.extend_from_slice(&[0xAB; 120]);
    let wrong_key = bursar_cluster::ClusterKeys::parse(&"5a".repeat(32)).unwrap();
    let origin = bursar_core::entry::Origin { node: 1, key_id: 1, boot: u64::MAX / 2, proposal: 1 };
    let sealed_wrong = bursar_cluster::seal::seal(&wrong_key, stream, origin, 1, &forged_transfer);
    vec![
        ("a raw create_transfers body", forged_transfer),
        ("a raw create_keys body", forged_key),
        ("an unknown operation code", unknown_operation),
        ("a body sealed under another key", sealed_wrong),
    ]
}

/// Publishes as an anonymous client with the headers the old format used;
/// returns the stream positions the messages got.
fn publish(urls: &str, messages: Vec<Vec<u8>>) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let servers: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
        let js = async_nats::jetstream::new(async_nats::connect(servers).await.expect("an anonymous connection"));
        let mut positions = Vec::new();
        for (i, payload) in messages.into_iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("attacker-{i}").as_str());
            headers.insert("Bursar-Time", "1800000000000000000");
            let ack = js.publish_with_headers("bursar_log.entries", headers, payload.into()).await.unwrap();
            positions.push(ack.await.expect("the broker stores what anyone publishes").sequence);
        }
        positions
    })
}

/// The payload of the newest committed entry holding a `create_transfers`
/// command, as stored.
fn newest_transfer_entry(urls: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let servers: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
        let js = async_nats::jetstream::new(async_nats::connect(servers).await.unwrap());
        let mut stream = js.get_stream("BURSAR_LOG").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        for position in (1..=last).rev() {
            let payload = stream.get_raw_message(position).await.unwrap().payload.to_vec();
            let body = payload.get(bursar_cluster::seal::SEAL_BYTES..).unwrap_or_default();
            let commands = bursar_core::command::decode_body(body).unwrap_or_default();
            if commands.iter().any(|c| c.command().operation == Operation::CreateTransfers) {
                return payload;
            }
        }
        panic!("no create_transfers entry in positions 1..={last}")
    })
}

fn audit_routes(http: &Client) -> Vec<(String, String)> {
    let page = http.get(ADMIN_KEY, "/v1/audit?limit=1000");
    page.expect(200, None);
    let items = page.json()["data"].as_array().cloned().unwrap_or_else(|| panic!("{}", page.body));
    items
        .iter()
        .map(|r| (r["route"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn forged_garbage_and_replayed_log_entries_are_refused_by_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(&tmp.path().join("nats"), 3)
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let urls = nats.urls();
    let replicas: Vec<Replica> = (1..=3).map(|node| Replica::new(tmp.path(), node, true)).collect();
    let start = |r: &Replica| start(r, &urls, ADMIN_KEY, &[]);
    let mut procs: Vec<Option<Proc>> = replicas.iter().map(|r| Some(start(r))).collect();
    let mut c1 = connect(&replicas[0].addr, ADMIN_KEY).unwrap();
    setup(&mut c1);
    assert!(c1.create_transfers(&[transfer(1, 100)]).unwrap().is_empty());
    let genuine = c1.lookup_transfers(&[1]).unwrap()[0];
    let http: Vec<Client> =
        replicas.iter().map(|r| Client::new(&format!("http://{}", r.http.as_ref().unwrap()))).collect();

    // The genuine transfer's entry, byte for byte, is the replay.
    let mut attack = forgeries("BURSAR_LOG");
    attack.push(("a replay of a genuine entry", newest_transfer_entry(&urls)));
    let labels: Vec<&str> = attack.iter().map(|(label, _)| *label).collect();
    let positions = publish(&urls, attack.into_iter().map(|(_, payload)| payload).collect());
    eprintln!("published {labels:?} at positions {positions:?}");

    // Every replica goes on: a write through replica 2 lands everywhere.
    let mut c2 = connect(&replicas[1].addr, ADMIN_KEY).unwrap();
    assert!(c2.create_transfers(&[transfer(2, 50)]).unwrap().is_empty(), "replica 2 serves writes");
    for r in &replicas {
        let mut c = connect(&r.addr, ADMIN_KEY).unwrap();
        wait_for(&format!("replica {} applies transfer 2", r.node), Duration::from_secs(60), || {
            c.lookup_transfers(&[2]).unwrap().len() == 1
        });
        assert!(c.lookup_transfers(&[FORGED_TRANSFER]).unwrap().is_empty(), "replica {}: forged transfer", r.node);
        let accounts = c.lookup_accounts(&[1, 2]).unwrap();
        assert_eq!(accounts[0].debits_posted, 150, "replica {}: only the genuine transfers moved money", r.node);
        assert_eq!(c.lookup_transfers(&[1]).unwrap()[0], genuine, "replica {}: the replay changed nothing", r.node);
    }
    for (r, h) in replicas.iter().zip(&http) {
        h.get(ATTACKER_SECRET, "/v1/ledgers").expect(401, None);
        let routes = audit_routes(h);
        let refused: Vec<&str> =
            routes.iter().filter(|(_, outcome)| outcome == "rejected").map(|(route, _)| route.as_str()).collect();
        assert_eq!(
            refused,
            ["CLUSTER malformed", "CLUSTER malformed", "CLUSTER malformed", "CLUSTER bad_mac", "CLUSTER replayed"],
            "replica {}'s audit trail: {routes:?}",
            r.node
        );
        let metrics = h.get(ADMIN_KEY, "/metrics").body;
        assert!(
            metrics.lines().any(|l| l.starts_with("bursar_cluster_entries_rejected_total{reason=\"malformed\"} 3")),
            "replica {}: {}",
            r.node,
            metrics.lines().filter(|l| l.contains("rejected")).collect::<Vec<_>>().join("\n")
        );
    }
    drop((c1, c2));

    // Each replica restarts cleanly over the refused entries and agrees.
    for (i, r) in replicas.iter().enumerate() {
        procs[i].take().unwrap().stop_clean();
        procs[i] = Some(start(r));
        let mut c = connect(&r.addr, ADMIN_KEY).unwrap();
        assert!(c.lookup_transfers(&[FORGED_TRANSFER]).unwrap().is_empty());
    }
    for proc in procs.iter_mut() {
        proc.take().unwrap().stop_clean();
    }
    let (_, summary) = assert_same_state(&replicas);
    assert_eq!(field(&summary, "refused_entries"), "5", "{summary}");
    assert_eq!(field(&summary, "transfers"), "2", "{summary}");
}
