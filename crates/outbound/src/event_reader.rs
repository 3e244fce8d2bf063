//! In-process reading of the change stream, for relays that run inside the
//! node (JetStream, webhooks): pages of events straight from the engine, as
//! the same JSON bodies `GET /v1/events` serves, and a wait for new ones.
//! A page is answered only once everything in it is durable.

use bursar_api::dto_events::{EventDecodeError, EventPage, JsonEvent, decode_page, page_json};
use bursar_core::Operation;
use bursar_core::events::EventFilter;
use bursar_server::handle::{EngineError, EngineHandle};
use bursar_server::node::NodeHandle;
use tokio::sync::watch;

/// Why a page of events could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The engine did not answer the read.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine's reply did not decode (a bug, never user input).
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    /// The node stopped while waiting for new events.
    #[error("the engine stopped")]
    Stopped,
}

#[derive(Clone)]
pub struct EventReader {
    engine: EngineHandle,
    tail: watch::Receiver<u64>,
}

impl EventReader {
    pub fn new(node: &NodeHandle) -> EventReader {
        EventReader { engine: node.engine_handle(), tail: node.events_tail.clone() }
    }

    /// Up to `limit` (≤ 8190) events after `after`, of the kinds in the
    /// `kinds` mask (0: all; see `dto_events::kinds_mask`).
    pub async fn page(&self, after: u64, limit: u32, kinds: u32) -> Result<EventPage, ReadError> {
        let filter = EventFilter { after, limit, kinds, reserved: [0; 16] };
        let body = bytemuck::bytes_of(&filter).to_vec();
        let response = self.engine.request(Operation::GetEvents, body).await?;
        Ok(decode_page(&response.body)?)
    }

    /// Like [`EventReader::page`], but each event already rendered to its
    /// JSON bytes (the same bytes), for relays that only forward them.
    pub async fn json_page(&self, after: u64, limit: u32, kinds: u32) -> Result<(u64, Vec<JsonEvent>), ReadError> {
        let filter = EventFilter { after, limit, kinds, reserved: [0; 16] };
        let body = bytemuck::bytes_of(&filter).to_vec();
        let response = self.engine.request(Operation::GetEvents, body).await?;
        Ok(page_json(&response.body)?)
    }

    /// The newest event sequence applied (maybe not yet durable): the head a
    /// relay's lag is measured against.
    pub fn head(&self) -> u64 {
        *self.tail.borrow()
    }

    /// Waits until an event after `seq` is applied, or the node stops
    /// (`Err`).
    pub async fn wait_beyond(&mut self, seq: u64) -> Result<(), ReadError> {
        self.tail.wait_for(|t| *t > seq).await.map(|_| ()).map_err(|_| ReadError::Stopped)
    }
}
