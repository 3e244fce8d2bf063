//! A blocking client for Bursar's binary protocol.
//!
//! One `Client` is one TCP connection. The typed methods send one request
//! and wait for its reply. For throughput, `send` several requests and then
//! `receive` their replies in the same order (pipelining).
//!
//! Results of create operations are sparse: only the events that were not
//! `ok` are listed, as (index, code).
//!
//! With `ClientOptions::key` set, `connect` authenticates right away (the
//! server refuses everything but `ping` before that). With
//! `ClientOptions::tls`, the connection is TLS (rustls with ring), trusting
//! only the given CA certificates.

use bursar_core::limits::BATCH_EVENTS_MAX;
use bursar_core::records::{Account, AccountFilter, BalanceRecord, Ledger, LedgerFilter, Transfer};
use bursar_core::{EventResult, Operation};
use bursar_proto::{AUTHENTICATE, AuthReply, HEADER_SIZE, Header, Kind, PING, ProtocolError};
use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server refused the request: {name} ({code}): {message}")]
    Server { code: u16, name: &'static str, message: String },
    #[error("invalid reply from server: {0}")]
    InvalidReply(String),
    #[error("{count} events exceed the limit of {max} for {operation}")]
    TooManyEvents { operation: &'static str, count: usize, max: usize },
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The protocol error the server reported, if that is what this is.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        match self {
            ClientError::Server { code, .. } => ProtocolError::from_code(*code),
            _ => None,
        }
    }

    /// Whether the request may have been applied even though no reply came:
    /// the caller must look the ids up (or simply retry: ids are idempotent).
    pub fn is_indefinite(&self) -> bool {
        matches!(self, ClientError::Io(_))
            || matches!(self.protocol_error(), Some(ProtocolError::Internal | ProtocolError::OutcomeUnknown))
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub struct ClientOptions {
    /// Bound on connecting and on each read or write.
    pub timeout: Duration,
    /// The API key's secret; `connect` authenticates with it.
    pub key: Option<String>,
    /// Connect with TLS.
    pub tls: Option<TlsOptions>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(30), key: None, tls: None }
    }
}

impl std::fmt::Debug for ClientOptions {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.as_ref().map(|t| &t.server_name))
            .finish()
    }
}

/// TLS settings: which CA certificates to trust and the name the server's
/// certificate must carry.
#[derive(Clone)]
pub struct TlsOptions {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

impl TlsOptions {
    /// Trusts exactly the certificates in `ca_pem` (PEM, one or more).
    pub fn with_ca_pem(ca_pem: &[u8], server_name: &str) -> Result<TlsOptions> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("not a PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| ClientError::Tls(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("the CA file holds no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsOptions { config: Arc::new(config), server_name: server_name.to_string() })
    }
}

/// The connection: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn tls_stream(tcp: TcpStream, tls: &TlsOptions) -> Result<Stream> {
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|e| ClientError::Tls(format!("invalid server name {}: {e}", tls.server_name)))?;
    let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Handshake now, so that a failure is reported by `connect`.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| ClientError::Tls(format!("handshake failed: {e}")))?;
    }
    Ok(Stream::Tls(Box::new(stream)))
}

/// A reply as received: header fields and the raw body.
#[derive(Debug)]
pub struct Reply {
    pub operation: u8,
    pub request_id: u64,
    pub count: u32,
    pub body: Vec<u8>,
}

pub struct Client {
    stream: Stream,
    next_request_id: u64,
    /// Requests sent and not yet answered: (request id, operation).
    in_flight: VecDeque<(u64, u8)>,
}

impl Client {
    pub fn connect(addr: impl ToSocketAddrs, options: &ClientOptions) -> Result<Client> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, options.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(options.timeout))?;
                    stream.set_write_timeout(Some(options.timeout))?;
                    let stream = match &options.tls {
                        Some(tls) => tls_stream(stream, tls)?,
                        None => Stream::Plain(stream),
                    };
                    let mut client = Client { stream, next_request_id: 1, in_flight: VecDeque::new() };
                    if let Some(key) = &options.key {
                        client.authenticate(key)?;
                    }
                    return Ok(client);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("address resolved to nothing")).into())
    }

    /// Authenticates the connection with an API key's secret; later
    /// requests act as that key. Returns the key's id and role.
    pub fn authenticate(&mut self, key: &str) -> Result<AuthReply> {
        let reply = self.call(AUTHENTICATE, key.as_bytes(), 1)?;
        AuthReply::decode(&reply.body)
            .ok_or_else(|| ClientError::InvalidReply(format!("an authenticate reply of {} bytes", reply.body.len())))
    }

    /// Requests sent whose replies have not been received.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends a request without waiting; returns its request id.
    pub fn send(&mut self, operation: u8, body: &[u8], count: u32) -> Result<u64> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let header = Header::request(operation, id, body, count).encode();
        write_all_vectored(&mut self.stream, &mut [IoSlice::new(&header), IoSlice::new(body)])?;
        self.in_flight.push_back((id, operation));
        Ok(id)
    }

    /// Receives the reply to the oldest request in flight. A server error
    /// status becomes `ClientError::Server`.
    pub fn receive(&mut self) -> Result<Reply> {
        let (id, operation) =
            self.in_flight.pop_front().ok_or_else(|| ClientError::InvalidReply("no request in flight".into()))?;
        let mut raw = [0u8; HEADER_SIZE];
        self.stream.read_exact(&mut raw).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                ClientError::Io(std::io::Error::new(e.kind(), "the server closed the connection before replying"))
            }
            _ => ClientError::Io(e),
        })?;
        let header = Header::decode(&raw).map_err(|e| ClientError::InvalidReply(e.to_string()))?;
        // Request id 0 with an error: the server refused the connection
        // itself (too many connections, TLS required) before any request.
        let refusal = header.kind == Kind::Reply && header.request_id == 0 && header.status != 0;
        if !refusal && (header.kind != Kind::Reply || header.request_id != id || header.operation != operation) {
            return Err(ClientError::InvalidReply(format!(
                "expected the reply to request {id} (operation {operation}), got request {} (operation {})",
                header.request_id, header.operation
            )));
        }
        let mut body = vec![0u8; header.body_len as usize];
        self.stream.read_exact(&mut body)?;
        header.check_body(&body).map_err(|e| ClientError::InvalidReply(e.to_string()))?;
        if header.status != 0 {
            let error = ProtocolError::from_code(header.status);
            return Err(ClientError::Server {
                code: header.status,
                name: error.map_or("unknown_error", |e| e.name()),
                message: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(Reply { operation, request_id: id, count: header.count, body })
    }

    fn call(&mut self, operation: u8, body: &[u8], count: usize) -> Result<Reply> {
        if !self.in_flight.is_empty() {
            return Err(ClientError::InvalidReply("receive pipelined replies before a blocking call".into()));
        }
        self.send(operation, body, count as u32)?;
        self.receive()
    }

    /// Succeeds once the server is ready to serve.
    pub fn ping(&mut self) -> Result<()> {
        self.call(PING, &[], 0).map(|_| ())
    }

    pub fn create_ledgers(&mut self, ledgers: &[Ledger]) -> Result<Vec<EventResult>> {
        self.create(Operation::CreateLedgers, bytemuck::cast_slice(ledgers), ledgers.len())
    }

    pub fn create_accounts(&mut self, accounts: &[Account]) -> Result<Vec<EventResult>> {
        self.create(Operation::CreateAccounts, bytemuck::cast_slice(accounts), accounts.len())
    }

    pub fn create_transfers(&mut self, transfers: &[Transfer]) -> Result<Vec<EventResult>> {
        self.create(Operation::CreateTransfers, bytemuck::cast_slice(transfers), transfers.len())
    }

    fn create(&mut self, op: Operation, body: &[u8], count: usize) -> Result<Vec<EventResult>> {
        check_count(op, count)?;
        let reply = self.call(op as u8, body, count)?;
        decode_records(&reply)
    }

    pub fn list_ledgers(&mut self, after_id: u32, limit: u32) -> Result<Vec<Ledger>> {
        let filter = LedgerFilter { after_id, limit };
        self.query(Operation::ListLedgers, bytemuck::bytes_of(&filter), 1)
    }

    pub fn lookup_accounts(&mut self, ids: &[u128]) -> Result<Vec<Account>> {
        check_count(Operation::LookupAccounts, ids.len())?;
        self.query(Operation::LookupAccounts, bytemuck::cast_slice(ids), ids.len())
    }

    pub fn lookup_transfers(&mut self, ids: &[u128]) -> Result<Vec<Transfer>> {
        check_count(Operation::LookupTransfers, ids.len())?;
        self.query(Operation::LookupTransfers, bytemuck::cast_slice(ids), ids.len())
    }

    pub fn get_account_transfers(&mut self, filter: &AccountFilter) -> Result<Vec<Transfer>> {
        self.query(Operation::GetAccountTransfers, bytemuck::bytes_of(filter), 1)
    }

    pub fn get_account_balances(&mut self, filter: &AccountFilter) -> Result<Vec<BalanceRecord>> {
        self.query(Operation::GetAccountBalances, bytemuck::bytes_of(filter), 1)
    }

    fn query<T: bytemuck::Pod>(&mut self, op: Operation, body: &[u8], count: usize) -> Result<Vec<T>> {
        let reply = self.call(op as u8, body, count)?;
        decode_records(&reply)
    }
}

fn check_count(op: Operation, count: usize) -> Result<()> {
    if count > op.events_max() {
        return Err(ClientError::TooManyEvents { operation: op.name(), count, max: BATCH_EVENTS_MAX });
    }
    Ok(())
}

/// Decodes a reply body of `count` fixed-size records.
pub fn decode_records<T: bytemuck::Pod>(reply: &Reply) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if reply.body.len() != reply.count as usize * size {
        return Err(ClientError::InvalidReply(format!(
            "{} bytes do not hold {} records of {size} bytes",
            reply.body.len(),
            reply.count
        )));
    }
    Ok(reply.body.chunks_exact(size).map(bytemuck::pod_read_unaligned).collect())
}

/// `write_all` over several buffers without joining them.
fn write_all_vectored(stream: &mut Stream, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
