//! The server against real TCP clients: correct requests, and every kind of
//! bad input, which must get an error reply and leave the server serving.

use bursar_client::{Client, ClientError, ClientOptions};
use bursar_core::limits::BATCH_EVENTS_MAX;
use bursar_core::records::{AccountFilter, filter_flags, transfer_flags};
use bursar_core::{Account, CreateTransferResult, Ledger, Operation, Transfer};
use bursar_proto::{HEADER_SIZE, Header, ProtocolError};
use bursar_server::{Node, NodeConfig};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The first admin key; it may also write over the binary protocol.
const ADMIN: &str = "protocol-test-admin-key-0123456789abcdef";

fn start(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some(ADMIN.into());
    Node::start(config).expect("node starts")
}

fn client(node: &Node) -> Client {
    let options = ClientOptions { timeout: Duration::from_secs(10), key: Some(ADMIN.into()), ..Default::default() };
    Client::connect(node.local_addr(), &options).unwrap()
}

fn seed(c: &mut Client) {
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> = (1..=3).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
}

fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id: dr, credit_account_id: cr, amount, ledger: 1, code: 1, ..Default::default() }
}

/// Reads one reply frame from a raw socket.
fn read_reply(s: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut h = [0u8; HEADER_SIZE];
    s.read_exact(&mut h).unwrap();
    let header = Header::decode(&h).unwrap();
    let mut body = vec![0; header.body_len as usize];
    s.read_exact(&mut body).unwrap();
    (header, body)
}

fn raw(node: &Node) -> TcpStream {
    let s = TcpStream::connect(node.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn creates_looks_up_and_queries_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut c = client(&node);
    c.ping().unwrap();
    seed(&mut c);
    let results = c
        .create_transfers(&[
            transfer(10, 1, 2, 100),
            Transfer { flags: transfer_flags::PENDING, ..transfer(11, 2, 3, 40) },
            transfer(12, 1, 1, 5),
            Transfer { flags: 1 << 12, ..transfer(13, 1, 2, 5) },
        ])
        .unwrap();
    let codes: Vec<_> = results.iter().map(|r| (r.index, CreateTransferResult::from_code(r.code).unwrap())).collect();
    assert_eq!(
        codes,
        vec![(2, CreateTransferResult::AccountsMustBeDifferent), (3, CreateTransferResult::ReservedFlag)]
    );
    let accounts = c.lookup_accounts(&[1, 2, 99]).unwrap();
    assert_eq!(accounts.len(), 2, "unknown ids are left out");
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted, accounts[1].debits_pending), (100, 100, 40));
    let t = c.lookup_transfers(&[11]).unwrap();
    assert_eq!(t[0].amount, 40);
    let filter = AccountFilter {
        account_id: 2,
        limit: 10,
        flags: filter_flags::DEBITS | filter_flags::CREDITS,
        ..Default::default()
    };
    let history = c.get_account_transfers(&filter).unwrap();
    assert_eq!(history.iter().map(|t| t.id).collect::<Vec<_>>(), vec![10, 11]);
    let err = c.get_account_transfers(&AccountFilter { limit: 0, ..filter }).unwrap_err();
    assert_eq!(err.protocol_error(), Some(ProtocolError::InvalidFilter));
    assert_eq!(c.list_ledgers(0, 10).unwrap().len(), 1);
    c.ping().unwrap();
    node.shutdown();

    // Everything acknowledged survives a restart.
    let node = start(dir.path());
    let mut c = client(&node);
    assert_eq!(c.lookup_accounts(&[1]).unwrap()[0].debits_posted, 100);
    assert_eq!(c.create_transfers(&[transfer(10, 1, 2, 100)]).unwrap()[0].code, CreateTransferResult::Exists.code());
    node.shutdown();
}

#[test]
fn bad_frames_get_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut good = client(&node);
    seed(&mut good);

    // Garbage header: error reply, then the connection closes.
    let mut s = raw(&node);
    s.write_all(&[0xAB; HEADER_SIZE]).unwrap();
    let (h, body) = read_reply(&mut s);
    assert_eq!(ProtocolError::from_code(h.status), Some(ProtocolError::InvalidHeader));
    assert!(!body.is_empty(), "the error has a message");
    assert!(closed(&mut s));

    // Oversized body length: refused without reading it.
    let mut s = raw(&node);
    let mut frame = Header::request(3, 9, &[], 0).encode();
    frame[24..28].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let crc = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    s.write_all(&frame).unwrap();
    let (h, _) = read_reply(&mut s);
    assert_eq!(ProtocolError::from_code(h.status), Some(ProtocolError::BodyTooLarge));
    assert!(closed(&mut s));

    // Errors that keep the framing intact keep the connection open.
    let mut s = raw(&node);
    s.write_all(&Header::request(bursar_proto::AUTHENTICATE, 0, ADMIN.as_bytes(), 1).encode()).unwrap();
    s.write_all(ADMIN.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).0.status, 0, "authenticated");
    let body = bursar_core::records::encode_all(&[transfer(50, 1, 2, 1)]).to_vec();
    let too_many = vec![0u8; 16 * (BATCH_EVENTS_MAX + 1)];
    let cases: Vec<(Vec<u8>, Vec<u8>, ProtocolError)> = vec![
        (Header::request(99, 1, &body, 1).encode().to_vec(), body.clone(), ProtocolError::UnknownOperation),
        (Header::request(3, 2, &body, 2).encode().to_vec(), body.clone(), ProtocolError::InvalidBodySize),
        (Header::request(3, 3, &body, 1).encode().to_vec(), flip(&body), ProtocolError::BodyChecksumMismatch),
        (
            Header::request(Operation::LookupAccounts as u8, 4, &too_many, BATCH_EVENTS_MAX as u32 + 1)
                .encode()
                .to_vec(),
            too_many.clone(),
            ProtocolError::TooManyEvents,
        ),
    ];
    for (header, body, expected) in cases {
        s.write_all(&header).unwrap();
        s.write_all(&body).unwrap();
        let (h, _) = read_reply(&mut s);
        assert_eq!(ProtocolError::from_code(h.status), Some(expected));
    }
    // The same connection still works.
    s.write_all(&Header::request(3, 5, &body, 1).encode()).unwrap();
    s.write_all(&body).unwrap();
    let (h, reply) = read_reply(&mut s);
    assert_eq!((h.status, h.request_id, reply.len()), (0, 5, 0), "transfer 50 applied");

    // Random bytes on many connections never stop the server.
    for seed in 0..50u64 {
        let mut s = raw(&node);
        let noise: Vec<u8> = (0..(seed * 37 % 300)).map(|i| (i * 31 + seed * 17) as u8).collect();
        let _ = s.write_all(&noise);
    }
    good.ping().unwrap();
    assert_eq!(good.lookup_accounts(&[1]).unwrap()[0].debits_posted, 1);
    node.shutdown();
}

#[test]
fn client_refuses_oversize_batches_and_pipelines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut c = client(&node);
    seed(&mut c);
    let too_many = vec![Transfer::default(); BATCH_EVENTS_MAX + 1];
    assert!(matches!(c.create_transfers(&too_many), Err(ClientError::TooManyEvents { .. })));
    let ids: Vec<u64> = (0..10u128)
        .map(|i| {
            let body = bursar_core::records::encode_all(&[transfer(100 + i, 1, 2, 1)]).to_vec();
            c.send(Operation::CreateTransfers as u8, &body, 1).unwrap()
        })
        .collect();
    for id in ids {
        assert_eq!(c.receive().unwrap().request_id, id);
    }
    assert_eq!(c.lookup_accounts(&[1]).unwrap()[0].debits_posted, 10);
    node.shutdown();
}

#[test]
fn pending_transfers_expire_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let mut c = client(&node);
    seed(&mut c);
    let pending = Transfer { flags: transfer_flags::PENDING, timeout: 1, ..transfer(7, 1, 2, 30) };
    assert!(c.create_transfers(&[pending]).unwrap().is_empty());
    assert_eq!(c.lookup_accounts(&[1]).unwrap()[0].debits_pending, 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.lookup_accounts(&[1]).unwrap()[0].debits_pending != 0 {
        assert!(std::time::Instant::now() < deadline, "the pending transfer never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let post = Transfer { flags: transfer_flags::POST_PENDING, pending_id: 7, ..transfer(8, 0, 0, u128::MAX) };
    assert_eq!(c.create_transfers(&[post]).unwrap()[0].code, CreateTransferResult::PendingTransferExpired.code());
    node.shutdown();
}

fn flip(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    b[0] ^= 1;
    b
}
