//! Everything that leaves the node on its own initiative, driven by the
//! change stream: the in-process event reader (`event_reader`), the NATS
//! JetStream relay (`nats`, started with the other relays by `relays`) and
//! webhook delivery (`webhooks`). Each reads events through the engine
//! handle, keeps its place outside the engine (the broker, the webhook
//! cursors in the state), and runs under its own supervisor, so a stuck
//! destination never slows the engine. It never depends on the HTTP API.

pub mod event_reader;
pub mod nats;
pub mod relays;
pub mod webhooks;
