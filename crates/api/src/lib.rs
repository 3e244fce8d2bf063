//! The public JSON contract of Bursar (docs/api.md, docs/events.md): the
//! bodies the HTTP API accepts and returns, the event bodies the change
//! stream, the relays and webhooks carry, and problem+json errors, each with
//! its OpenAPI schema. Conversions between these shapes and the core's
//! records live here too, so every door renders a record the same way.
//! No routes, no I/O.

pub mod dto;
pub mod dto_events;
pub mod dto_orders;
pub mod problem;
