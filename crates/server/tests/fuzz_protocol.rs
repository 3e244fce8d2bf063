//! Live fuzz target for the binary protocol listener (issue 13, trust
//! boundaries).
//!
//! `fuzz_live_listener` starts a real node and, per case, opens a raw TCP
//! connection and writes a burst of frames: valid frames of every operation
//! whose events are mutated valid records (so they reach the engine and the
//! state machine), frames with edited headers (raw, or with the header CRC
//! recomputed), bodies that do not match, and plain garbage. It reads the
//! replies (every one must be a well-formed frame) until the server closes
//! or answers everything, then checks that the node still serves: a fresh
//! client pings, creates a transfer and reads it back. At the end the node
//! stops and the offline verifier replays the whole log and checks every
//! invariant.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

use bursar_client::{Client, ClientOptions};
use bursar_core::records::{AccountFilter, LedgerFilter, encode_all, transfer_flags as TF};
use bursar_core::{Account, Ledger, Operation, Transfer};
use bursar_fuzz as fz;
use bursar_proto::{HEADER_SIZE, Header, PING};
use bursar_server::{Node, NodeConfig};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: dr, credit_account_id: cr, amount, ledger: 1, code: 1, ..Default::default() }
}

/// Valid request bodies of every operation the binary protocol reaches.
fn seeds() -> Vec<(u8, Vec<u8>, u32)> {
    let usd = Ledger { id: 2, scale: 2, asset: Ledger::pack_asset("EUR").expect("asset"), ..Default::default() };
    let account = Account { id: 50, ledger: 1, code: 1, ..Default::default() };
    let pending = Transfer { flags: TF::PENDING, timeout: 1, ..transfer(60, 1, 2, 5) };
    let post = Transfer { flags: TF::POST_PENDING, pending_id: 60, ..transfer(61, 0, 0, u128::MAX) };
    let linked = [Transfer { flags: TF::LINKED, ..transfer(62, 2, 3, 1) }, transfer(63, 3, 1, 1)];
    let filter = AccountFilter { account_id: 1, limit: 10, ..Default::default() };
    let ledgers = LedgerFilter { limit: 10, ..Default::default() };
    let ids: Vec<u8> = [1u128, 2, 60].iter().flat_map(|i| i.to_le_bytes()).collect();
    let one = |op: Operation, bytes: &[u8]| (op as u8, bytes.to_vec(), (bytes.len() / op.event_size()) as u32);
    vec![
        (PING, Vec::new(), 0),
        one(Operation::CreateLedgers, encode_all(&[usd])),
        one(Operation::CreateAccounts, encode_all(&[account])),
        one(Operation::CreateTransfers, encode_all(&[transfer(64, 1, 2, 3)])),
        one(Operation::CreateTransfers, encode_all(&[pending, post])),
        one(Operation::CreateTransfers, encode_all(&linked)),
        one(Operation::ListLedgers, encode_all(&[ledgers])),
        one(Operation::LookupAccounts, &ids),
        one(Operation::LookupTransfers, &ids),
        one(Operation::GetAccountTransfers, encode_all(&[filter])),
        one(Operation::GetAccountBalances, encode_all(&[filter])),
    ]
}

/// How one frame of a burst is made.
#[derive(Clone, Debug)]
enum Frame {
    /// A valid frame whose events were edited (length kept): it reaches
    /// the engine.
    Events(Index, Vec<fz::Mutation>, u64),
    /// Header bytes edited, optionally re-sealed; body edited too.
    Damaged(Index, Vec<fz::Mutation>, bool, Vec<fz::Mutation>),
    /// Bytes that are not a frame at all.
    Garbage(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => (any::<Index>(), fz::mutations(6), any::<u64>()).prop_map(|(s, m, id)| Frame::Events(s, m, id)),
        3 => (any::<Index>(), fz::mutations(3), any::<bool>(), fz::mutations(2))
            .prop_map(|(s, h, r, b)| Frame::Damaged(s, h, r, b)),
        1 => proptest::collection::vec(any::<u8>(), 1..200).prop_map(Frame::Garbage),
    ]
}

fn encode(seeds: &[(u8, Vec<u8>, u32)], f: &Frame) -> Vec<u8> {
    match f {
        Frame::Events(s, m, request_id) => {
            let (op, body, count) = &seeds[s.index(seeds.len())];
            let mut body = fz::mutated(body.clone(), m);
            body.truncate(seeds[s.index(seeds.len())].1.len());
            body.resize(seeds[s.index(seeds.len())].1.len(), 0);
            let mut out = Header::request(*op, *request_id, &body, *count).encode().to_vec();
            out.extend_from_slice(&body);
            out
        }
        Frame::Damaged(s, header_edits, reseal, body_edits) => {
            let (op, body, count) = &seeds[s.index(seeds.len())];
            let mut h = fz::mutated(Header::request(*op, 7, body, *count).encode().to_vec(), header_edits);
            h.resize(HEADER_SIZE, 0);
            if *reseal {
                let crc = crc32c::crc32c(&h[8..]);
                h[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            h.extend_from_slice(&fz::mutated(body.clone(), body_edits));
            h
        }
        Frame::Garbage(bytes) => bytes.clone(),
    }
}

/// Reads reply frames until the server closes the connection or every
/// frame got its reply; each reply must be a well-formed frame.
fn drain(s: &mut TcpStream, frames: usize) -> Result<(), TestCaseError> {
    for _ in 0..frames {
        let mut h = [0u8; HEADER_SIZE];
        match s.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("reading a reply: {e}"))),
        }
        let header = Header::decode(&h).map_err(|e| TestCaseError::fail(format!("server sent a bad frame: {e}")))?;
        let mut body = vec![0; header.body_len as usize];
        s.read_exact(&mut body).map_err(|e| TestCaseError::fail(format!("reply body cut short: {e}")))?;
        prop_assert!(header.check_body(&body).is_ok(), "reply body does not match its checksum");
    }
    Ok(())
}

const ADMIN_KEY: &str = "fuzz-protocol-admin-key-0123456789";

/// A client that authenticates with the node's admin key.
fn client_options() -> ClientOptions {
    ClientOptions { timeout: Duration::from_secs(30), key: Some(ADMIN_KEY.into()), ..Default::default() }
}

/// The node still serves: ping, a new transfer, and reading it back.
fn still_serving(node: &Node, id: u128) -> Result<(), TestCaseError> {
    let options = client_options();
    let fail = |what: &str, e: bursar_client::ClientError| TestCaseError::fail(format!("{what}: {e}"));
    let mut c = Client::connect(node.local_addr(), &options).map_err(|e| fail("connect", e))?;
    c.ping().map_err(|e| fail("ping", e))?;
    let results = c.create_transfers(&[transfer(id, 1, 2, 1)]).map_err(|e| fail("create", e))?;
    prop_assert!(results.is_empty(), "the check transfer failed: {:?}", results);
    let found = c.lookup_transfers(&[id]).map_err(|e| fail("lookup", e))?;
    prop_assert_eq!(found.len(), 1);
    Ok(())
}

#[test]
fn fuzz_live_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some(ADMIN_KEY.into());
    let node = Node::start(config).unwrap();
    let mut c = Client::connect(node.local_addr(), &client_options()).unwrap();
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> = (1..=3).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
    drop(c);

    let seeds = seeds();
    let mut runner = TestRunner::new(fz::config(48));
    let check_id = std::sync::atomic::AtomicU64::new(1);
    let result = runner.run(&proptest::collection::vec(frame(), 1..24), |frames| {
        let mut s = TcpStream::connect(node.local_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode(&seeds, f)).collect();
        // A peer that vanished mid-write is fine: the server closed on a
        // framing error it had already answered.
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        drain(&mut s, frames.len())?;
        let id = (1u128 << 100) + u128::from(check_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        still_serving(&node, id)
    });
    node.shutdown();
    result.unwrap();
    let report = bursar_server::verify::verify(dir.path()).expect("the fuzzed log replays with every invariant");
    assert!(report.transfers > 0);
}
