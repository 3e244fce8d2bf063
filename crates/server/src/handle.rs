//! The one in-process line to the engine. The HTTP API, the workflow
//! executor, the access recorder and the outbound relays all send requests
//! through an `EngineHandle`, so they share one set of rules: a bounded wait
//! for room in the engine's queue (a full queue is overload, not a reason to
//! pile up), a bounded wait for the reply (which the engine sends only once
//! the entry is durable), and one typed error for everything that can go
//! wrong on the way. What a caller does with an error (retry, 503, defer) is
//! its own decision.

use crate::message::{EngineMsg, OwnedEnvelope, Request, Response};
use bursar_core::Operation;
use bursar_proto::{ProtocolError, RequestOp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a caller waits for its reply by default. The engine answers
/// every request (a cluster proposal that cannot be confirmed is answered
/// `outcome_unknown`), so this only bounds a wait on a wedged engine.
pub const REPLY_WAIT_DEFAULT: Duration = Duration::from_secs(60);

/// How long a caller waits for room in the engine's queue by default.
pub const QUEUE_WAIT_DEFAULT: Duration = Duration::from_secs(30);

/// The waits of a handle made by `NodeHandle::engine_handle`.
pub const WAITS_DEFAULT: Waits = Waits { queue: QUEUE_WAIT_DEFAULT, reply: REPLY_WAIT_DEFAULT };

/// In-process request ids start here, far from the binary protocol's, so a
/// log line shows where a request came from.
const REQUEST_ID_FIRST: u64 = 1 << 62;

/// Why a request got no answer from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine's queue stayed full for {0:?}")]
    QueueFull(Duration),
    #[error("the engine stopped")]
    Stopped,
    #[error("the engine stopped before answering; the outcome is unknown")]
    Dropped,
    #[error("no reply to {operation} within {waited:?}; the outcome is unknown")]
    NoReply { operation: &'static str, waited: Duration },
    /// The engine answered with a protocol error (`status`), explained in `detail`.
    #[error("{operation} failed: {detail}")]
    Refused { operation: &'static str, status: u16, detail: String },
}

impl EngineError {
    /// The protocol error the engine answered with, if it answered.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        match self {
            EngineError::Refused { status, .. } => ProtocolError::from_code(*status),
            _ => None,
        }
    }
}

/// How long a caller is prepared to wait at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    /// For room in the engine's queue.
    pub queue: Duration,
    /// For the durable reply.
    pub reply: Duration,
}

/// A cheap-to-clone sender of requests to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    engine: mpsc::Sender<EngineMsg>,
    next_id: Arc<AtomicU64>,
    waits: Waits,
}

impl EngineHandle {
    pub fn new(engine: mpsc::Sender<EngineMsg>, waits: Waits) -> EngineHandle {
        assert!(!waits.queue.is_zero() && !waits.reply.is_zero(), "a handle must be able to wait at all");
        EngineHandle { engine, next_id: Arc::new(AtomicU64::new(REQUEST_ID_FIRST)), waits }
    }

    /// The same engine with other waits (one caller's policy).
    pub fn with_waits(&self, waits: Waits) -> EngineHandle {
        assert!(!waits.queue.is_zero() && !waits.reply.is_zero(), "a handle must be able to wait at all");
        EngineHandle { engine: self.engine.clone(), next_id: self.next_id.clone(), waits }
    }

    /// Requests waiting in the engine's queue.
    pub fn queued(&self) -> usize {
        self.engine.max_capacity() - self.engine.capacity()
    }

    /// Sends one request and returns the engine's response whatever its
    /// status (HTTP renders some statuses itself).
    pub async fn call(
        &self,
        op: RequestOp,
        body: Vec<u8>,
        envelope: Option<OwnedEnvelope>,
    ) -> Result<Response, EngineError> {
        let (reply, rx) = oneshot::channel();
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request { op, request_id, body, envelope, reply };
        match self.engine.send_timeout(EngineMsg::Request(request), self.waits.queue).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(EngineError::QueueFull(self.waits.queue)),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(EngineError::Stopped),
        }
        match tokio::time::timeout(self.waits.reply, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(EngineError::Dropped),
            Err(_) => Err(EngineError::NoReply { operation: op_name(op), waited: self.waits.reply }),
        }
    }

    /// Sends one operation (no envelope) and succeeds only on status 0.
    pub async fn request(&self, op: Operation, body: Vec<u8>) -> Result<Response, EngineError> {
        let response = self.call(RequestOp::Op(op), body, None).await?;
        if response.status != 0 {
            let detail = String::from_utf8_lossy(&response.body).into_owned();
            return Err(EngineError::Refused { operation: op.name(), status: response.status, detail });
        }
        Ok(response)
    }
}

fn op_name(op: RequestOp) -> &'static str {
    match op {
        RequestOp::Op(op) => op.name(),
        RequestOp::Ping => "ping",
        RequestOp::Authenticate => "authenticate",
    }
}

#[cfg(test)]
mod tests {
    //! Each way a request can fail to get an answer, against a stand-in
    //! engine (a channel this test reads): the handle's waits are its own
    //! logic, independent of what the engine does.
    use super::*;
    use crate::message::{error_response, ok_response};

    const SHORT: Waits = Waits { queue: Duration::from_millis(50), reply: Duration::from_millis(50) };

    fn request(engine: &EngineHandle) -> impl Future<Output = Result<Response, EngineError>> + '_ {
        engine.request(Operation::LookupAccounts, Vec::new())
    }

    #[tokio::test]
    async fn answers_pass_through_and_protocol_errors_are_refusals() {
        let (tx, mut rx) = mpsc::channel(1);
        let engine = EngineHandle::new(tx, SHORT);
        let serve = tokio::spawn(async move {
            for ok in [true, false] {
                let Some(EngineMsg::Request(r)) = rx.recv().await else { panic!("a request") };
                let response = if ok {
                    ok_response(r.op.code(), r.request_id, 0, Vec::new())
                } else {
                    error_response(r.op.code(), r.request_id, ProtocolError::ServerBusy, "busy")
                };
                r.reply.send(response).expect("the caller waits");
            }
        });
        assert_eq!(request(&engine).await.expect("answered").status, 0);
        let refused = request(&engine).await.unwrap_err();
        assert_eq!(refused.protocol_error(), Some(ProtocolError::ServerBusy));
        assert_eq!(refused.to_string(), "lookup_accounts failed: busy");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_a_silent_engine_and_a_dropped_reply_are_told_apart() {
        let (tx, mut rx) = mpsc::channel(1);
        let engine = EngineHandle::new(tx, SHORT);
        // Nobody reads: the first request waits in the queue unanswered, the second finds it full.
        assert!(matches!(request(&engine).await, Err(EngineError::NoReply { waited: d, .. }) if d == SHORT.reply));
        assert_eq!(request(&engine).await.unwrap_err(), EngineError::QueueFull(SHORT.queue));
        // The engine takes a request and drops it without answering.
        drop(rx.recv().await);
        let drop_next = tokio::spawn(async move {
            drop(rx.recv().await);
            drop(rx);
        });
        assert_eq!(request(&engine).await.unwrap_err(), EngineError::Dropped);
        drop_next.await.unwrap();
        assert_eq!(request(&engine).await.unwrap_err(), EngineError::Stopped);
    }
}
