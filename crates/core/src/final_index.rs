//! The stored index of final orders, as the state reads it: tables the
//! engine's indexer builds on disk (see `orders::finals`). Its own module
//! because both the orders and the state's snapshot plumbing
//! (`state::StoredIndexes`) name it.

use crate::arena::ChunkReadError;

/// Final orders below [`StoredOrders::covered`] (indexes into the final
/// orders), held in tables on disk.
pub trait StoredOrders: Send + Sync {
    /// Every final order below this index is in the tables.
    fn covered(&self) -> u64;

    /// The index of final order `id` among the covered ones.
    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError>;

    /// (id, index) of final orders with ids above `after`, in `state` (0:
    /// any), ascending, at most `limit`. May also name orders at or past
    /// `covered` (the tables can be ahead of what was installed); those
    /// agree with what RAM holds.
    fn page(&self, state: u8, after: u128, limit: usize) -> Result<Vec<(u128, u64)>, ChunkReadError>;

    /// Bytes of RAM the tables hold (filters, sparse indexes), for gauges.
    fn memory_bytes(&self) -> u64;
}

/// Tables that cover no final order (a state or a test that keeps none on
/// disk).
pub struct NoStoredOrders;

impl StoredOrders for NoStoredOrders {
    fn covered(&self) -> u64 {
        0
    }

    fn find(&self, _: u128) -> Result<Option<u64>, ChunkReadError> {
        Ok(None)
    }

    fn page(&self, _: u8, _: u128, _: usize) -> Result<Vec<(u128, u64)>, ChunkReadError> {
        Ok(Vec::new())
    }

    fn memory_bytes(&self) -> u64 {
        0
    }
}
