//! The binary protocol listener. Each connection has a reader task, which
//! checks frames, authenticates and authorizes requests and queues them for
//! the engine, and a writer task, which sends replies back in request order.
//! Bad input gets an error frame; only errors that break the framing close
//! the connection, and nothing a client sends can stop the server. Idle and
//! slow connections are closed at a deadline, and one address may hold only
//! so many connections, so they cannot crowd out other clients.

use crate::admission::{Admission, Refusal, next_connection};
use crate::engine::KeyTable;
use crate::limits::AUTH_FAILURES_MAX;
use crate::message::{EngineMsg, Request, Response, error_response, ok_response};
use crate::session::{Session, authenticate, filter_reply, needs_account_check, unauthenticated};
use bursar_core::Operation;
use bursar_proto::{HEADER_SIZE, Header, ProtocolError, RequestOp, check_request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Clone, Debug)]
pub struct NetLimits {
    /// Concurrent connections; more are refused with `server_busy`.
    pub max_connections: usize,
    /// Concurrent connections from one IP address; more are refused with
    /// `server_busy`, so one client cannot take every slot.
    pub max_connections_per_ip: usize,
    /// Requests one connection may have waiting for replies (pipelining).
    pub max_in_flight: usize,
    /// A whole frame header must arrive within this time of the connection
    /// opening (the TLS handshake included) or of the previous request's
    /// body; else the connection is closed.
    pub idle_timeout: Duration,
    /// Once a header arrived, its body must arrive within this time.
    pub body_timeout: Duration,
    /// How long a request may wait for room in the engine's queue before it
    /// is refused with `server_busy`.
    pub queue_timeout: Duration,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_connections: 256,
            max_connections_per_ip: 64,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// The TLS acceptor of a listener (its certificate and key).
#[derive(Clone)]
pub struct Tls(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct Listener {
    pub engine: mpsc::Sender<EngineMsg>,
    pub keys: KeyTable,
    pub limits: NetLimits,
    /// Serve TLS (every connection must start with a handshake).
    pub tls: Option<Tls>,
}

/// A reply slot, in request order: already known, or coming from the engine
/// (with the ledgers a scoped key may see in it).
enum Slot {
    Ready(Response),
    Pending(u8, u64, oneshot::Receiver<Response>, Option<Arc<[u32]>>),
}

/// Accepts connections until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Listener, mut stop: watch::Receiver<bool>) {
    let admission = Admission::new(shared.limits.max_connections, shared.limits.max_connections_per_ip);
    while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
        let admitted = match admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                metrics::counter!("bursar_binary_refused_total", "reason" => refusal.reason()).increment(1);
                let why = match refusal {
                    Refusal::Full => "too many connections",
                    Refusal::PerClient => "too many connections from this address",
                };
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = accept(stream, &shared).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(admitted);
        });
    }
}

/// Refuses a connection with one `server_busy` frame (plaintext: a TLS
/// client sees a failed handshake, which is as clear a refusal).
async fn refuse(mut stream: TcpStream, why: &str) {
    let r = error_response(0, 0, ProtocolError::ServerBusy, why);
    let _ = tokio::time::timeout(Duration::from_secs(1), write_response(&mut stream, &r)).await;
}

async fn accept(stream: TcpStream, shared: &Listener) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let Some(Tls(tls)) = &shared.tls else { return connection(stream, shared).await };
    let deadline = tokio::time::Instant::now() + shared.limits.idle_timeout;
    if speaks_plaintext(&stream, deadline).await? {
        tell_tls_required(stream).await;
        return Ok(());
    }
    let handshake = tokio::time::timeout_at(deadline, tls.accept(stream)).await;
    match handshake {
        Ok(Ok(stream)) => connection(stream, shared).await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(timed_out("the TLS handshake did not finish in time")),
    }
}

/// Whether a client on a TLS port sent a plaintext frame header (its first
/// bytes are the magic number), so it can be told so in a frame it reads.
async fn speaks_plaintext(stream: &TcpStream, deadline: tokio::time::Instant) -> std::io::Result<bool> {
    let magic = bursar_proto::MAGIC.to_le_bytes();
    let mut first = [0u8; 4];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out("the TLS handshake did not start in time")),
        };
        // A prefix of the magic may be all that arrived yet: peek again
        // (peek returns at once while data is buffered, so wait a little).
        if n == 0 || n == 4 || first[..n] != magic[..n] {
            return Ok(n == 4 && first == magic);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Answers a plaintext client on a TLS port with one `tls_required` frame.
/// Its request is drained first (for at most a second), so the close is a
/// FIN after the frame, not a reset that could discard it.
async fn tell_tls_required(mut stream: TcpStream) {
    let e = ProtocolError::TlsRequired;
    let reply = refused(0, 0, e, e.description());
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink).await;
        write_response(&mut stream, &reply).await?;
        stream.shutdown().await?;
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

async fn connection<S>(stream: S, shared: &Listener) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let (slots, slot_rx) = mpsc::channel(shared.limits.max_in_flight);
    let writer = tokio::spawn(write_replies(writer, slot_rx));
    let result = Reader { reader, slots: &slots, shared, session: None, failures: 0 }.run().await;
    drop(slots);
    let _ = writer.await;
    result
}

/// What a request needs next, once checked and authorized.
enum Next {
    Reply(Response),
    /// Reply, then close the connection.
    ReplyAndClose(Response),
    Forward(Request, Option<Arc<[u32]>>),
}

struct Reader<'a, S> {
    reader: ReadHalf<S>,
    slots: &'a mpsc::Sender<Slot>,
    shared: &'a Listener,
    session: Option<Session>,
    /// Failed authentications and requests sent before one.
    failures: u32,
}

impl<S: AsyncRead + AsyncWrite> Reader<'_, S> {
    async fn run(mut self) -> std::io::Result<()> {
        let limits = self.shared.limits.clone();
        loop {
            let mut raw = [0u8; HEADER_SIZE];
            match tokio::time::timeout(limits.idle_timeout, self.reader.read_exact(&mut raw)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    metrics::counter!("bursar_binary_refused_total", "reason" => "idle").increment(1);
                    return Err(timed_out("no whole frame header within the idle timeout"));
                }
            }
            let request_id = u64::from_le_bytes(raw[16..24].try_into().expect("invariant: 8 bytes of 64"));
            let header = match Header::decode(&raw) {
                Ok(h) => h,
                Err(e) => {
                    let _ = self.slots.send(Slot::Ready(error_response(raw[11], request_id, e, e.description()))).await;
                    return Ok(());
                }
            };
            let mut body = vec![0u8; header.body_len as usize];
            match tokio::time::timeout(limits.body_timeout, self.reader.read_exact(&mut body)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out("body did not arrive in time")),
            }
            let slot = match self.next(&header, body).await {
                Next::Reply(r) => Slot::Ready(r),
                Next::ReplyAndClose(r) => {
                    let _ = self.slots.send(Slot::Ready(r)).await;
                    return Ok(());
                }
                Next::Forward(request, scope) => {
                    let (tx, rx) = oneshot::channel();
                    let slot = Slot::Pending(header.operation, header.request_id, rx, scope);
                    if self.slots.send(slot).await.is_err() {
                        return Ok(()); // the writer is gone: the peer closed
                    }
                    if !self.forward(Request { reply: tx, ..request }).await {
                        return Ok(()); // engine stopped: the writer reports shutting_down
                    }
                    continue;
                }
            };
            let closes = matches!(&slot, Slot::Ready(r) if ProtocolError::from_code(r.status).is_some_and(|e| e.closes_connection()));
            if self.slots.send(slot).await.is_err() || closes {
                return Ok(());
            }
        }
    }

    /// Checks, authenticates and authorizes one request.
    async fn next(&mut self, header: &Header, body: Vec<u8>) -> Next {
        let (code, id) = (header.operation, header.request_id);
        let op = match check_request(header, &body) {
            Ok(op) => op,
            Err(e) => return Next::Reply(refused(code, id, e, e.description())),
        };
        let name = match op {
            RequestOp::Ping => "ping",
            RequestOp::Authenticate => "authenticate",
            RequestOp::Op(o) => o.name(),
        };
        metrics::counter!("bursar_binary_requests_total", "operation" => name).increment(1);
        let current = self.shared.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let op = match op {
            // Liveness needs no key: a ping says only that the node serves.
            RequestOp::Ping => return Next::Forward(request(op, id, body, None), None),
            RequestOp::Authenticate => return self.authenticate(&current, id, &body),
            RequestOp::Op(op) => op,
        };
        let Some(session) = self.session.as_mut() else {
            let (e, why) = unauthenticated();
            return self.failed(refused(code, id, e, why));
        };
        if let Err(why) = session.refresh(&current) {
            return Next::ReplyAndClose(refused(code, id, ProtocolError::Unauthenticated, why));
        }
        if let Err(why) = session.authorize(op, &body) {
            return Next::Reply(refused(code, id, ProtocolError::Forbidden, &why.to_string()));
        }
        let scope = session.scope().cloned();
        if op.is_write() {
            let envelope = session.envelope(op);
            return Next::Forward(request(RequestOp::Op(op), id, body, Some(envelope)), None);
        }
        if let Some(scope) = &scope
            && needs_account_check(op)
            && let Err(r) = self.account_in_scope(code, id, &body, scope).await
        {
            return Next::Reply(r);
        }
        Next::Forward(request(RequestOp::Op(op), id, body, None), scope)
    }

    fn authenticate(&mut self, keys: &Arc<bursar_core::service::keys::Keys>, id: u64, secret: &[u8]) -> Next {
        let code = bursar_proto::AUTHENTICATE;
        match authenticate(keys, secret) {
            Ok(session) => {
                let body = session.reply().encode().to_vec();
                self.session = Some(session);
                Next::Reply(ok_response(code, id, 1, body))
            }
            Err(why) => {
                // A failed attempt also drops an earlier identity.
                self.session = None;
                self.failed(refused(code, id, ProtocolError::Unauthenticated, why))
            }
        }
    }

    /// Counts an authentication failure; the last one allowed closes.
    fn failed(&mut self, reply: Response) -> Next {
        self.failures += 1;
        if self.failures >= AUTH_FAILURES_MAX { Next::ReplyAndClose(reply) } else { Next::Reply(reply) }
    }

    /// A scoped key's account history query: the account must be in scope
    /// (an unknown account passes; its history is empty).
    async fn account_in_scope(&self, code: u8, id: u64, filter: &[u8], scope: &[u32]) -> Result<(), Response> {
        let account_id = filter[..16].to_vec();
        let (tx, rx) = oneshot::channel();
        let lookup = Request { reply: tx, ..request(RequestOp::Op(Operation::LookupAccounts), id, account_id, None) };
        if !self.forward(lookup).await {
            return Err(refused(code, id, ProtocolError::ShuttingDown, "the server is stopping"));
        }
        let Ok(found) = rx.await else {
            return Err(refused(code, id, ProtocolError::ShuttingDown, "the server is stopping"));
        };
        if found.status != 0 {
            return Err(Response { operation: code, ..found });
        }
        match found.body.get(..bursar_core::Account::SIZE) {
            Some(a) if !scope.contains(&bytemuck::pod_read_unaligned::<bursar_core::Account>(a).ledger) => {
                Err(refused(code, id, ProtocolError::Forbidden, "this key may not read this account's ledger"))
            }
            _ => Ok(()),
        }
    }

    /// Queues a request for the engine; false once the engine is gone. A
    /// full queue answers `server_busy` in the request's place.
    async fn forward(&self, r: Request) -> bool {
        match self.shared.engine.send_timeout(EngineMsg::Request(r), self.shared.limits.queue_timeout).await {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(EngineMsg::Request(r))) => {
                let busy = error_response(r.op.code(), r.request_id, ProtocolError::ServerBusy, "queue full");
                let _ = r.reply.send(busy);
                true
            }
            Err(_) => false,
        }
    }
}

/// A request without its reply channel yet (set when it is queued).
fn request(op: RequestOp, request_id: u64, body: Vec<u8>, envelope: Option<crate::message::OwnedEnvelope>) -> Request {
    let (reply, _) = oneshot::channel();
    Request { op, request_id, body, envelope, reply }
}

fn refused(code: u8, id: u64, e: ProtocolError, why: &str) -> Response {
    metrics::counter!("bursar_binary_errors_total", "code" => e.name()).increment(1);
    error_response(code, id, e, why)
}

async fn write_replies<S: AsyncWrite>(mut writer: WriteHalf<S>, mut slots: mpsc::Receiver<Slot>) {
    while let Some(slot) = slots.recv().await {
        let response = match slot {
            Slot::Ready(r) => r,
            Slot::Pending(op, id, rx, scope) => {
                let mut r = rx.await.unwrap_or_else(|_| {
                    error_response(op, id, ProtocolError::ShuttingDown, "the server stopped before answering")
                });
                if let Some(scope) = scope
                    && r.status == 0
                {
                    (r.body, r.count) = filter_reply(op, &r.body, r.count, &scope);
                }
                r
            }
        };
        let closes = ProtocolError::from_code(response.status).is_some_and(|e| e.closes_connection());
        if write_response(&mut writer, &response).await.is_err() || closes {
            return;
        }
    }
    // Flush (and for TLS, close_notify) before the socket is dropped.
    let _ = writer.shutdown().await;
}

async fn write_response<W: AsyncWriteExt + Unpin>(writer: &mut W, r: &Response) -> std::io::Result<()> {
    let header = Header::reply(r.operation, r.status, r.request_id, &r.body, r.count).encode();
    if r.body.len() <= 4096 {
        // One segment for small replies.
        let mut frame = Vec::with_capacity(HEADER_SIZE + r.body.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&r.body);
        return writer.write_all(&frame).await;
    }
    writer.write_all(&header).await?;
    writer.write_all(&r.body).await
}
