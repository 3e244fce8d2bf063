//! On-disk storage for state that outgrows memory. Bursar's log stays the
//! write-ahead log; what this crate stores is derived from it at
//! checkpoints, so a crash never loses anything the log holds: recovery
//! opens the newest intact checkpoint and replays the log after it.
//!
//! The pieces, each usable alone and knowing nothing of ledgers:
//!
//! - `block`: every byte on disk lives in a fixed-size block that carries
//!   its kind, its address (file and index) and a checksum over the whole
//!   block, so a flipped bit, a torn write or a block read from the wrong
//!   place is detected and named, never used.
//! - `records`: append-only files of fixed-size records addressed by
//!   position (transfers, balance records, change-journal slots: all
//!   written once, in apply order), read through the cache.
//! - `table`: immutable sorted tables of fixed-size keys and values, with a
//!   sparse index and a filter in memory, so a key that is absent almost
//!   never costs a disk read. The building block of the indexes (id to
//!   position, account to transfers).
//! - `manifest`: the commit point of a checkpoint (its log position, its
//!   files and the caller's body), written atomically; older checkpoints
//!   are retained so a damaged newest one falls back, and files no retained
//!   checkpoint names are garbage.
//! - `cache`: a bounded cache of blocks, shared by all files, with hit and
//!   miss counts.
//! - `files`: every file and directory created is the owner's only.
//!
//! Architecture invariant: no Bursar dependency; no clock, randomness or
//! threads of its own. Callers decide when to write and when to sync.

pub mod block;
pub mod cache;
pub mod error;
pub mod files;
pub mod limits;
pub mod manifest;
pub mod records;
pub mod table;
pub mod tiers;

pub use error::{Fault, StoreError};
