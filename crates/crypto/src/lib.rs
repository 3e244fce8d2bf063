//! Cryptography at the edge of a node: personal data is encrypted before it
//! reaches the log (`pii`), and requests to and from the outside are signed
//! with HMAC-SHA256 (`signing`). Pure functions over bytes and keys, plus
//! loading and rotating key files; no network and no state machine.

pub mod pii;
pub mod signing;
