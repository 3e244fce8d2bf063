//! The binary protocol's trust boundary against a real node over loopback:
//! API keys in the first frame, roles and ledger scopes, audit records that
//! name the key, TLS, and the connection hygiene (header deadline, caps per
//! address) that keeps idle or slow sockets from blocking other clients.

use bursar_client::{Client, ClientError, ClientOptions, TlsOptions};
use bursar_core::command::AuditFilter;
use bursar_core::records::{AccountFilter, filter_flags};
use bursar_core::service::audit::AuditRecord;
use bursar_core::service::keys::Role;
use bursar_core::{Account, Ledger, Operation, Transfer};
use bursar_proto::{HEADER_SIZE, Header, PING, ProtocolError};
use bursar_server::message::{EngineMsg, Request};
use bursar_server::{Node, NodeConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const ADMIN: &str = "binary-auth-admin-key-0123456789abcdef";

fn start(dir: &std::path::Path, tune: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some(ADMIN.into());
    tune(&mut config);
    Node::start(config).expect("node starts")
}

fn options(key: Option<&str>) -> ClientOptions {
    ClientOptions { timeout: Duration::from_secs(10), key: key.map(String::from), ..Default::default() }
}

fn connect(node: &Node, key: &str) -> Client {
    Client::connect(node.local_addr(), &options(Some(key))).expect("connects and authenticates")
}

fn ledger(id: u32) -> Ledger {
    Ledger { id, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }
}

fn account(id: u128, ledger: u32) -> Account {
    Account { id, ledger, code: 1, ..Default::default() }
}

fn transfer(id: u128, dr: u128, cr: u128, ledger: u32) -> Transfer {
    Transfer { id, debit_account_id: dr, credit_account_id: cr, amount: 5, ledger, code: 1, ..Default::default() }
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> ProtocolError {
    let e = r.expect_err("the server refuses");
    e.protocol_error().unwrap_or_else(|| panic!("a protocol error, not {e}"))
}

/// Two ledgers with two accounts each, created by the admin.
fn seed(node: &Node) {
    let mut admin = connect(node, ADMIN);
    assert!(admin.create_ledgers(&[ledger(1), ledger(2)]).unwrap().is_empty());
    let accounts = [account(11, 1), account(12, 1), account(21, 2), account(22, 2)];
    assert!(admin.create_accounts(&accounts).unwrap().is_empty());
}

/// Reads the whole reply frame (header and body) from a raw socket.
fn read_reply(s: &mut TcpStream) -> std::io::Result<(Header, Vec<u8>)> {
    let mut raw = [0u8; HEADER_SIZE];
    s.read_exact(&mut raw)?;
    let h = Header::decode(&raw).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body)?;
    Ok((h, body))
}

/// Whether the server closed the socket (EOF or reset) within 10 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error frame before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn writes_without_a_key_are_refused_and_repeated_failures_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {});
    seed(&node);
    let mut anonymous = Client::connect(node.local_addr(), &options(None)).unwrap();
    anonymous.ping().expect("ping needs no key");
    let t = transfer(1, 11, 12, 1);
    assert_eq!(refused(anonymous.create_transfers(&[t])), ProtocolError::Unauthenticated);
    assert_eq!(refused(anonymous.lookup_accounts(&[11])), ProtocolError::Unauthenticated);
    assert_eq!(refused(anonymous.authenticate("not-a-key-of-this-node-0123456789")), ProtocolError::Unauthenticated);
    // The third failure was the last: the connection is closed.
    assert!(anonymous.ping().is_err(), "the server closed the connection");
    let mut admin = connect(&node, ADMIN);
    assert!(admin.lookup_transfers(&[1]).unwrap().is_empty(), "nothing was written");
    node.shutdown();
}

#[test]
fn keys_with_the_wrong_role_or_ledger_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {});
    seed(&node);
    let auditor = node.create_key(Role::Auditor, &[], "auditor").unwrap();
    let scoped = node.create_key(Role::Operator, &[1], "ledger 1").unwrap();

    let mut a = connect(&node, &auditor);
    assert_eq!(refused(a.create_accounts(&[account(13, 1)])), ProtocolError::Forbidden);
    assert_eq!(refused(a.create_transfers(&[transfer(1, 11, 12, 1)])), ProtocolError::Forbidden);
    assert_eq!(a.lookup_accounts(&[11, 21]).unwrap().len(), 2, "auditors read every ledger");

    let mut s = connect(&node, &scoped);
    assert_eq!(refused(s.create_ledgers(&[ledger(3)])), ProtocolError::Forbidden);
    assert_eq!(refused(s.create_accounts(&[account(13, 1), account(23, 2)])), ProtocolError::Forbidden);
    assert_eq!(refused(s.create_transfers(&[transfer(2, 21, 22, 2)])), ProtocolError::Forbidden);
    assert_eq!(refused(s.create_transfers(&[transfer(3, 11, 12, 0)])), ProtocolError::Forbidden);
    assert!(s.create_transfers(&[transfer(4, 11, 12, 1)]).unwrap().is_empty(), "its own ledger is fine");
    let seen: Vec<u128> = s.lookup_accounts(&[11, 21, 12, 22]).unwrap().iter().map(|a| a.id).collect();
    assert_eq!(seen, [11, 12], "accounts of other ledgers read as not found");
    let both = filter_flags::DEBITS | filter_flags::CREDITS;
    let history = AccountFilter { account_id: 21, limit: 10, flags: both, ..Default::default() };
    assert_eq!(refused(s.get_account_balances(&history)), ProtocolError::Forbidden);
    assert_eq!(refused(s.get_account_transfers(&history)), ProtocolError::Forbidden);
    let own = AccountFilter { account_id: 11, limit: 10, flags: both, ..Default::default() };
    assert_eq!(s.get_account_transfers(&own).unwrap().len(), 1);

    let mut admin = connect(&node, ADMIN);
    let written: Vec<u128> = admin.lookup_transfers(&[1, 2, 3, 4]).unwrap().iter().map(|t| t.id).collect();
    assert_eq!(written, [4], "only the allowed transfer was applied");
    node.shutdown();
}

#[test]
fn a_binary_write_is_audited_with_its_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {});
    seed(&node);
    let operator = node.create_key(Role::Operator, &[], "payments").unwrap();
    let mut c = Client::connect(node.local_addr(), &options(None)).unwrap();
    let me = c.authenticate(&operator).unwrap();
    assert_eq!(me.role, Role::Operator as u8);
    assert!(c.create_transfers(&[transfer(7, 11, 12, 1)]).unwrap().is_empty());

    let records = audit(&node);
    let last = records.last().expect("the write is audited");
    assert_eq!(last.key_id, me.key_id);
    assert_ne!(last.key_id, 0);
    assert_eq!(last.route, "BINARY create_transfers");
    assert_eq!(last.operation, Operation::CreateTransfers as u8);
    node.shutdown();
}

/// The audit trail, read in process as the HTTP API reads it.
fn audit(node: &Node) -> Vec<AuditRecord> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let filter = AuditFilter { after_seq: 0, limit: 1000, reserved: 0 };
    let request = Request {
        op: bursar_proto::RequestOp::Op(Operation::ListAudit),
        request_id: 1,
        body: bytemuck::bytes_of(&filter).to_vec(),
        envelope: None,
        reply: tx,
    };
    node.handle().engine.blocking_send(EngineMsg::Request(request)).unwrap();
    let body = rx.blocking_recv().unwrap().body;
    let mut records = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        records.push(AuditRecord::decode(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    records
}

#[test]
fn idle_and_slow_sockets_are_closed_at_the_deadline_and_do_not_block_new_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.net.idle_timeout = Duration::from_millis(300);
        c.net.max_connections = 3;
    });
    let addr = node.local_addr();
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A slow client: one header byte at a time, never a whole header in time.
    let mut slow = TcpStream::connect(addr).unwrap();
    let ping = Header::request(PING, 1, &[], 0).encode();
    let mut slow_closed = false;
    for b in ping.iter().take(HEADER_SIZE - 1) {
        if slow.write_all(&[*b]).is_err() {
            slow_closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(slow_closed || closed_by_server(&mut slow), "the slow socket is closed");
    for s in &mut idle {
        assert!(closed_by_server(s), "an idle socket is closed");
    }
    // Every slot is free again: new clients are served.
    for _ in 0..3 {
        let mut admin = connect(&node, ADMIN);
        admin.ping().unwrap();
    }
    node.shutdown();
}

fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(to).await.unwrap();
        let std = stream.into_std().unwrap();
        std.set_nonblocking(false).unwrap();
        std
    })
}

#[test]
fn one_address_hits_its_connection_cap_while_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.net.max_connections_per_ip = 3);
    let addr = node.local_addr();
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", addr)).collect();
    // Each held socket is served (a ping answers), so all three count.
    for s in &mut held {
        s.write_all(&Header::request(PING, 1, &[], 0).encode()).unwrap();
        assert_eq!(read_reply(s).unwrap().0.status, 0);
    }
    let mut over = connect_from("127.0.0.1", addr);
    over.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (h, body) = read_reply(&mut over).expect("a refusal frame");
    assert_eq!(ProtocolError::from_code(h.status), Some(ProtocolError::ServerBusy));
    assert!(String::from_utf8_lossy(&body).contains("from this address"));

    let mut other = connect_from("127.0.0.2", addr);
    other.write_all(&Header::request(PING, 2, &[], 0).encode()).unwrap();
    assert_eq!(read_reply(&mut other).unwrap().0.status, 0, "another address is served");
    drop(held);
    node.shutdown();
}

#[test]
fn tls_with_a_private_ca_works_and_a_plaintext_client_is_told_to_use_tls() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert =
        rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&server_key, &ca, &ca_key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(server_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key_der.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));

    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.binary_tls = Some(bursar_server::net::Tls(acceptor)));
    seed_over_tls(&node, ca.pem().as_bytes());

    let plain = Client::connect(node.local_addr(), &options(Some(ADMIN))).map(|_| ());
    assert_eq!(refused(plain), ProtocolError::TlsRequired);

    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = other.self_signed(&other_ca_key).unwrap();
    let untrusted = ClientOptions {
        tls: Some(TlsOptions::with_ca_pem(other_ca.pem().as_bytes(), "localhost").unwrap()),
        ..options(Some(ADMIN))
    };
    assert!(matches!(Client::connect(node.local_addr(), &untrusted), Err(ClientError::Tls(_))));
    node.shutdown();
}

fn seed_over_tls(node: &Node, ca_pem: &[u8]) {
    let tls =
        ClientOptions { tls: Some(TlsOptions::with_ca_pem(ca_pem, "localhost").unwrap()), ..options(Some(ADMIN)) };
    let mut c = Client::connect(node.local_addr(), &tls).expect("TLS with the private CA");
    assert!(c.create_ledgers(&[ledger(1)]).unwrap().is_empty());
    assert!(c.create_accounts(&[account(11, 1), account(12, 1)]).unwrap().is_empty());
    assert!(c.create_transfers(&[transfer(1, 11, 12, 1)]).unwrap().is_empty());
    assert_eq!(c.lookup_transfers(&[1]).unwrap().len(), 1);
}

#[test]
fn a_node_configured_without_an_address_serves_no_binary_port() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.listen = None);
    assert_eq!(node.binary_addr(), None);
    // The node itself serves on (through its handle, as the HTTP API does).
    node.create_key(Role::Auditor, &[], "still works").expect("the engine serves");
    node.shutdown();
}
