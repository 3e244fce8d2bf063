//! The binary protocol listener. Each connection has a reader task, which
//! checks frames and queues requests for the engine, and a writer task,
//! which sends replies back in request order. Bad input gets an error frame;
//! only errors that break the framing close the connection, and nothing a
//! client sends can stop the server.

use crate::engine::{EngineMsg, Request, error_response};
use crate::gate::Response;
use bursar_proto::{HEADER_SIZE, Header, ProtocolError, check_request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

#[derive(Clone, Debug)]
pub struct NetLimits {
    /// Concurrent connections; more are refused with `server_busy`.
    pub max_connections: usize,
    /// Requests one connection may have waiting for replies (pipelining).
    pub max_in_flight: usize,
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
            max_in_flight: 64,
            body_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// A reply slot, in request order: already known, or coming from the engine.
enum Slot {
    Ready(Response),
    Pending(u8, u64, oneshot::Receiver<Response>),
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: mpsc::Sender<EngineMsg>,
    limits: NetLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let engine = engine.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, engine, limits).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let r = error_response(0, 0, ProtocolError::ServerBusy, "too many connections");
    let _ = write_response(&mut stream, &r).await;
}

async fn connection(stream: TcpStream, engine: mpsc::Sender<EngineMsg>, limits: NetLimits) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    let (slots, slot_rx) = mpsc::channel(limits.max_in_flight);
    let writer = tokio::spawn(write_replies(writer, slot_rx));
    let result = read_requests(reader, &slots, &engine, &limits).await;
    drop(slots);
    let _ = writer.await;
    result
}

async fn read_requests(
    mut reader: OwnedReadHalf,
    slots: &mpsc::Sender<Slot>,
    engine: &mpsc::Sender<EngineMsg>,
    limits: &NetLimits,
) -> std::io::Result<()> {
    loop {
        let mut raw = [0u8; HEADER_SIZE];
        if let Err(e) = reader.read_exact(&mut raw).await {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof { Ok(()) } else { Err(e) };
        }
        let request_id = u64::from_le_bytes(raw[16..24].try_into().expect("8 bytes"));
        let header = match Header::decode(&raw) {
            Ok(h) => h,
            Err(e) => {
                let _ = slots.send(Slot::Ready(error_response(raw[11], request_id, e, e.description()))).await;
                return Ok(());
            }
        };
        let mut body = vec![0u8; header.body_len as usize];
        match tokio::time::timeout(limits.body_timeout, reader.read_exact(&mut body)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "body did not arrive in time")),
        }
        let op = match check_request(&header, &body) {
            Ok(op) => op,
            Err(e) => {
                metrics::counter!("bursar_binary_errors_total", "code" => e.name()).increment(1);
                let reply = error_response(header.operation, header.request_id, e, e.description());
                if slots.send(Slot::Ready(reply)).await.is_err() || e.closes_connection() {
                    return Ok(());
                }
                continue;
            }
        };
        let name = match op {
            bursar_proto::RequestOp::Ping => "ping",
            bursar_proto::RequestOp::Op(o) => o.name(),
        };
        metrics::counter!("bursar_binary_requests_total", "operation" => name).increment(1);
        let (tx, rx) = oneshot::channel();
        if slots.send(Slot::Pending(header.operation, header.request_id, rx)).await.is_err() {
            return Ok(()); // the writer is gone: the peer closed
        }
        let request = Request { op, request_id: header.request_id, body, envelope: None, reply: tx };
        match engine.send_timeout(EngineMsg::Request(request), limits.queue_timeout).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(EngineMsg::Request(r))) => {
                let busy = error_response(header.operation, r.request_id, ProtocolError::ServerBusy, "queue full");
                let _ = r.reply.send(busy);
            }
            Err(_) => return Ok(()), // engine stopped: the writer reports shutting_down
        }
    }
}

async fn write_replies(mut writer: OwnedWriteHalf, mut slots: mpsc::Receiver<Slot>) {
    while let Some(slot) = slots.recv().await {
        let response = match slot {
            Slot::Ready(r) => r,
            Slot::Pending(op, id, rx) => rx.await.unwrap_or_else(|_| {
                error_response(op, id, ProtocolError::ShuttingDown, "the server stopped before answering")
            }),
        };
        let closes = ProtocolError::from_code(response.status).is_some_and(|e| e.closes_connection());
        if write_response(&mut writer, &response).await.is_err() || closes {
            return;
        }
    }
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
