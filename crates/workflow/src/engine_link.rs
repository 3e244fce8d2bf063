//! The executor's line to the engine: order commands go in through the same
//! queue as client requests (plain, no envelope: the audit trail names them
//! `WORKFLOW`), and replies come back only once durable, like every reply.
//! Commands from many orders are folded into batches so the log sees a few
//! large entries rather than many small ones.

use bursar_core::limits::BATCH_EVENTS_MAX;
use bursar_core::orders::{Order, OrderChange, OrderCommand, OrderCommandResult, OrderFilter, OrderState};
use bursar_core::records::decode_all;
use bursar_core::{EventResult, Operation};
use bursar_server::handle::{EngineError, EngineHandle, Waits};
use bursar_server::message::Response;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long a request may wait for the engine, for room in its queue and
/// again for the reply (the command may still apply when the reply is late;
/// the change feed will show it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Order-command batches in flight to the engine at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Commands queued for batching before submitters wait.
const QUEUE_DEPTH: usize = 1 << 16;

/// Why a request to the engine, or an order command, did not complete.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// The request got no answer from the state machine (stopped, full,
    /// late, or refused with a protocol error).
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{reply} reply is not whole {what}")]
    NotWhole { reply: &'static str, what: &'static str },
    #[error("a ListOrders reply: {0}")]
    Feed(#[source] bursar_core::DecodeError),
    #[error("order {order} has state {state}")]
    UnknownState { order: u128, state: u8 },
    #[error("a result names an event that was not sent")]
    StrayResult,
    #[error("unknown result code {0}")]
    UnknownResult(u32),
    #[error("the command queue stopped")]
    QueueStopped,
    #[error("the command batch was dropped")]
    BatchDropped,
}

/// For callers whose own errors are still strings (the workers a supervisor
/// runs, the event reader): `?` keeps working there.
impl From<LinkError> for String {
    fn from(e: LinkError) -> String {
        e.to_string()
    }
}

#[derive(Clone)]
pub struct EngineLink {
    engine: EngineHandle,
}

impl EngineLink {
    pub fn new(engine: &EngineHandle) -> EngineLink {
        EngineLink { engine: engine.with_waits(Waits { queue: REQUEST_TIMEOUT, reply: REQUEST_TIMEOUT }) }
    }

    /// Sends one request and waits for its durable reply.
    pub async fn request(&self, op: Operation, body: Vec<u8>) -> Result<Response, LinkError> {
        Ok(self.engine.request(op, body).await?)
    }

    /// Orders changed after `after_seq`, in change order.
    pub async fn changes(&self, after_seq: u64, limit: u32) -> Result<Vec<Order>, LinkError> {
        let filter = OrderFilter { after_seq, limit, changes: 1, ..Default::default() };
        let response = self.request(Operation::ListOrders, bytemuck::bytes_of(&filter).to_vec()).await?;
        decode_all(&response.body).ok_or(LinkError::NotWhole { reply: "a ListOrders", what: "orders" })
    }

    /// Summaries of the orders changed after `after_seq`, in change order,
    /// with the personal data of those in `pii_states` (bit `1 << state`).
    pub async fn feed(&self, after_seq: u64, limit: u32, pii_states: u16) -> Result<Vec<FeedOrder>, LinkError> {
        let filter =
            OrderFilter { after_seq, limit, changes: OrderFilter::CHANGES_SUMMARIES, pii_states, ..Default::default() };
        let response = self.request(Operation::ListOrders, bytemuck::bytes_of(&filter).to_vec()).await?;
        let page = OrderChange::decode_feed(&response.body).map_err(LinkError::Feed)?;
        page.into_iter()
            .map(|(change, pii)| {
                let state = change.state().ok_or(LinkError::UnknownState { order: change.id, state: change.state })?;
                Ok(FeedOrder { change, state, pii: pii.into() })
            })
            .collect()
    }

    /// Writes a batch of commands; the result code of each, in order.
    pub async fn order_commands(&self, commands: &[OrderCommand]) -> Result<Vec<u32>, LinkError> {
        self.order_commands_encoded(bytemuck::cast_slice(commands).to_vec()).await
    }

    /// `order_commands` with the commands already laid out as their bytes.
    async fn order_commands_encoded(&self, body: Vec<u8>) -> Result<Vec<u32>, LinkError> {
        let count = body.len() / OrderCommand::SIZE;
        let response = self.request(Operation::OrderCommands, body).await?;
        let sparse: Vec<EventResult> =
            decode_all(&response.body).ok_or(LinkError::NotWhole { reply: "an OrderCommands", what: "results" })?;
        let mut codes = vec![0u32; count];
        for r in sparse {
            *codes.get_mut(r.index as usize).ok_or(LinkError::StrayResult)? = r.code;
        }
        Ok(codes)
    }
}

/// An order as the summary feed brings it.
#[derive(Clone, Debug)]
pub struct FeedOrder {
    pub change: OrderChange,
    /// `change.state`, checked.
    pub state: OrderState,
    /// Encrypted personal data; empty unless the feed was asked for it in this state.
    pub pii: Box<[u8]>,
}

/// Boxed: a command is 256 bytes, and every waiting submitter's future
/// (one per order step in flight) would otherwise hold it more than once.
type Queued = (Box<OrderCommand>, oneshot::Sender<Result<OrderCommandResult, LinkError>>);

/// Submits order commands in batches; cheap to clone.
#[derive(Clone)]
pub struct CommandQueue {
    tx: mpsc::Sender<Queued>,
}

impl CommandQueue {
    /// Starts the batching task on the current runtime.
    pub fn start(link: EngineLink) -> CommandQueue {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run_batches(link, rx));
        CommandQueue { tx }
    }

    /// Applies one command through the log; its result once durable.
    pub async fn submit(&self, command: Box<OrderCommand>) -> Result<OrderCommandResult, LinkError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((command, tx)).await.map_err(|_| LinkError::QueueStopped)?;
        rx.await.map_err(|_| LinkError::BatchDropped)?
    }
}

async fn run_batches(link: EngineLink, mut rx: mpsc::Receiver<Queued>) {
    let permits = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let permit = permits.clone().acquire_owned().await.expect("invariant: the semaphore is never closed");
        let mut batch = Vec::with_capacity(rx.len().saturating_add(1).min(BATCH_EVENTS_MAX));
        batch.push(first);
        while batch.len() < BATCH_EVENTS_MAX {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let link = link.clone();
        tokio::spawn(async move {
            let mut body = Vec::with_capacity(batch.len() * OrderCommand::SIZE);
            for (c, _) in &batch {
                body.extend_from_slice(bytemuck::bytes_of(&**c));
            }
            let outcome = link.order_commands_encoded(body).await;
            for (i, (_, reply)) in batch.into_iter().enumerate() {
                let result = match &outcome {
                    Ok(codes) => OrderCommandResult::from_code(codes[i]).ok_or(LinkError::UnknownResult(codes[i])),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(result);
            }
            drop(permit);
        });
    }
}
