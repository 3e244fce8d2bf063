//! Final orders leave the open book. Method: drive thousands of orders to
//! final states (and keep some open), record what every read answers
//! (lookups, timelines, pages by id and by state, the change feed, the
//! digest), then move the final orders step by step further from RAM
//! (cold chunks, stored tables, a lazy restore, a restore in the format
//! from before final orders left the book) and require identical answers
//! after each step.

use super::*;
use crate::arena::testing::MemDisk;
use crate::arena::{ChunkReadError, StoredChunk};
use crate::machine::{MachineSnapshot, SERVICE_SECTIONS};
use crate::query::Reply;
use crate::state::{COLD_SECTIONS, OnDisk, SectionChunk, StoredIds, StoredIndexes, StoredLists};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Stored tables in memory over the first `covered` final orders, keyed as
/// the engine's indexer keys them: (0, id) and (state, id) → index.
struct Tables {
    by_key: BTreeMap<(u8, u128), u64>,
    covered: u64,
}

impl StoredOrders for Tables {
    fn covered(&self) -> u64 {
        self.covered
    }
    fn find(&self, id: u128) -> Result<Option<u64>, ChunkReadError> {
        Ok(self.by_key.get(&(0, id)).copied())
    }
    fn page(&self, state: u8, after: u128, limit: usize) -> Result<Vec<(u128, u64)>, ChunkReadError> {
        let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
        Ok(self.by_key.range((state, first)..=(state, u128::MAX)).take(limit).map(|((_, id), i)| (*id, *i)).collect())
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

/// Ledger tables that cover nothing.
struct Nothing;

impl StoredIds for Nothing {
    fn covered(&self) -> u64 {
        0
    }
    fn find(&self, _: u128) -> Result<Option<u64>, ChunkReadError> {
        Ok(None)
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

impl StoredLists for Nothing {
    fn covered(&self) -> u64 {
        0
    }
    fn range(&self, _: u128, _: u64, _: u64, _: bool, _: usize) -> Result<Vec<(u64, u8)>, ChunkReadError> {
        Ok(Vec::new())
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

fn indexes(m: &Machine, covered: u64) -> StoredIndexes {
    let finals = m.orders().finals();
    let mut by_key = BTreeMap::new();
    for i in 0..covered {
        let o = finals.order(i);
        by_key.insert((0, o.id), i);
        by_key.insert((o.state, o.id), i);
    }
    StoredIndexes {
        transfers: Arc::new(Nothing),
        failed: Arc::new(Nothing),
        account_transfers: Arc::new(Nothing),
        account_history: Arc::new(Nothing),
        orders: Arc::new(Tables { by_key, covered }),
    }
}

/// Stores the cold sections' chunks as a snapshot store would.
fn store_cold(disk: &MemDisk, snap: &MachineSnapshot) -> Vec<Vec<StoredChunk>> {
    let placeholder = |n| vec![StoredChunk { hash: [0; 32], len: 0 }; n];
    let sections = snap.sections();
    sections
        .iter()
        .map(
            |s| {
                if COLD_SECTIONS.contains(&s.name) { disk.store_chunks(&s.chunks) } else { placeholder(s.chunks.len()) }
            },
        )
        .collect()
}

/// Applies one entry of many commands of one operation, without the deep
/// checks of `H::apply` (they read every final order).
fn bulk<T: bytemuck::Pod>(h: &mut H, operation: Operation, events: &[T]) {
    h.position += 1;
    h.time += SEC;
    let c = Command { operation, events: encode_all(events) };
    h.m.apply_entry(h.position, h.time, &[LogCommand::Plain(c)]);
}

/// Every read's answer, through `Machine::query` as the API reads.
fn reads(m: &Machine, ids: &[u128]) -> Vec<Reply> {
    let q = |op, body: Vec<u8>| m.query(op, &body).unwrap();
    let ids_body = |ids: &[u128]| ids.iter().flat_map(|id| id.to_le_bytes()).collect::<Vec<u8>>();
    let filter = |f: OrderFilter| bytemuck::bytes_of(&f).to_vec();
    let mut out = vec![q(Operation::LookupOrders, ids_body(ids))];
    out.extend(ids.iter().map(|id| q(Operation::GetOrderEvents, ids_body(&[*id]))));
    for after_id in [0, 5, 1_000, 2_999] {
        for state in [0, OrderState::Created as u8, OrderState::Cancelled as u8, OrderState::Expired as u8] {
            out.push(q(
                Operation::ListOrders,
                filter(OrderFilter { after_id, state, limit: 700, ..Default::default() }),
            ));
        }
    }
    for after_seq in [0, 17, 2_500, 5_000] {
        for changes in [OrderFilter::CHANGES_ORDERS, OrderFilter::CHANGES_SUMMARIES] {
            let f = OrderFilter { after_seq, changes, pii_states: u16::MAX, limit: 900, ..Default::default() };
            out.push(q(Operation::ListOrders, filter(f)));
        }
    }
    out
}

/// `n` orders: the first third expire, the rest are cancelled but every
/// seventh, which stays open. Returns the ids read back.
fn many_orders(h: &mut H, n: u128) -> Vec<u128> {
    let expiring: Vec<_> = (1..=n / 3).map(new_order).collect();
    bulk(h, Operation::CreateOrders, &expiring);
    h.tick(120);
    let rest: Vec<_> = (n / 3 + 1..=n).map(new_order).collect();
    bulk(h, Operation::CreateOrders, &rest);
    let cancels: Vec<_> = (n / 3 + 1..=n).filter(|id| id % 7 != 0).map(|id| exec(id, CommandKind::Cancel)).collect();
    bulk(h, Operation::OrderCommands, &cancels);
    vec![1, 2, n / 3, n / 3 + 1, 7 * (n / 7), n, n + 1]
}

/// The executor's feed: a final order's summary comes from its ref (id,
/// state, change) without reading its record; an open one's is whole.
fn summaries_of_final_orders_come_from_refs(m: &Machine, orders: usize) {
    let feed = OrderFilter { changes: OrderFilter::CHANGES_SUMMARIES, limit: 8_000, ..Default::default() };
    let (body, count) = m.orders().encode_list(&feed);
    let summaries = OrderChange::decode_feed(&body).unwrap();
    assert_eq!(count, orders);
    for (s, _) in &summaries {
        let whole = m.orders().get(s.id).unwrap().order;
        assert_eq!((s.state, s.change_seq), (whole.state, whole.change_seq));
        let final_ = whole.state().is_terminal();
        assert_eq!(s.source_amount, if final_ { 0 } else { whole.source_amount }, "order {}", s.id);
    }
}

#[test]
fn final_orders_read_the_same_from_ram_cold_chunks_stored_tables_and_a_lazy_restore() {
    let n: u128 = 6_000;
    let mut h = H::new();
    let disk = Arc::new(MemDisk::default());
    h.m.set_chunk_reader(disk.clone());
    let ids = many_orders(&mut h, n);
    let open = ((n / 3 + 1)..=n).filter(|id| id % 7 == 0).count();
    assert_eq!(h.m.orders().open_len(), open, "only open orders stay in the open book");
    assert_eq!(h.m.orders().finals().len(), n as u64 - open as u64);
    h.m.check_invariants_deep().unwrap();
    let (before, digest) = (reads(&h.m, &ids), h.m.digest());
    summaries_of_final_orders_come_from_refs(&h.m, n as usize);

    // Cold chunks.
    let view = h.m.snapshot();
    h.m.release_stored(&view, &store_cold(&disk, &view));
    drop(view);
    assert!(h.m.orders().cold_chunks() >= 2, "final orders' full chunks went cold");
    let reads_before = disk.reads();
    assert_eq!(reads(&h.m, &ids), before);
    assert!(disk.reads() > reads_before, "the answers came from cold chunks");
    assert_eq!(h.m.digest(), digest, "digests are over chunk hashes, hot or cold");

    // Stored tables cover two thirds: those leave the RAM maps.
    let covered = h.m.orders().finals().len() * 2 / 3;
    h.m.install_stored_ids(indexes(&h.m, covered));
    assert_eq!(h.m.orders().finals().recent_len() as u64, h.m.orders().finals().len() - covered);
    assert_eq!(h.m.stored_covered()[4], covered);
    assert_eq!(reads(&h.m, &ids), before);
    h.m.check_invariants_deep().unwrap();

    // A lazy restore with the same tables.
    let snap = h.m.snapshot();
    let stored = store_cold(&disk, &snap);
    let sections = snap
        .sections()
        .iter()
        .zip(&stored)
        .map(|(s, on_disk)| match COLD_SECTIONS.contains(&s.name) {
            true => on_disk.iter().map(|c| SectionChunk::Stored(*c)).collect(),
            false => s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect(),
        })
        .collect();
    let chunks = SnapshotChunks { header: snap.header(), sections };
    let on_disk = OnDisk { chunks: Some(disk.clone()), ids: Some(indexes(&h.m, covered)) };
    let mut restored = Machine::restore_with(Limits::default(), chunks, on_disk).unwrap();
    assert!(restored.orders().cold_chunks() >= 2);
    assert_eq!(restored.orders().finals().recent_len(), h.m.orders().finals().recent_len());
    assert_eq!(restored.digest(), digest);
    assert_eq!(reads(&restored, &ids), before);
    restored.check_invariants_deep().unwrap();

    // A final order, read back from disk, refuses commands and stays as it is.
    let mut h2 = H { m: std::mem::take(&mut restored), position: h.position, time: h.time };
    let timeline = h2.m.orders().get(n).unwrap().timeline.clone();
    assert_eq!(h2.cmd(exec(n, CommandKind::Cancel)), OrderCommandResult::OrderIsCancelled);
    assert_eq!(h2.cmd(funds(1, 10_000)), OrderCommandResult::OrderIsExpired);
    assert_eq!(h2.m.orders().get(n).unwrap().timeline, timeline);
    assert_eq!(h2.create(new_order(n)), CreateOrderResult::Exists.code(), "final ids stay taken");
}

#[test]
fn a_snapshot_from_before_final_orders_left_the_book_restores_to_the_same_state() {
    let mut h = H::new();
    let ids = many_orders(&mut h, 90);
    let snap = h.m.snapshot();
    let mut sections: Vec<Vec<SectionChunk>> =
        snap.sections().iter().map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect()).collect();
    // The old "orders" section held every order, in id order; there were
    // no final-order sections.
    let mut all: Vec<_> = (1..=90).map(|id| h.m.orders().get(id).unwrap()).collect();
    all.sort_by_key(|e| e.order.id);
    let mut old = h.m.orders().last_change().to_le_bytes().to_vec();
    old.extend_from_slice(&(all.len() as u64).to_le_bytes());
    for e in &all {
        finals::encode_entry(e, &mut old);
    }
    let ledger_sections = crate::state::SECTIONS.len();
    let orders_at = ledger_sections + SERVICE_SECTIONS.iter().position(|s| *s == "orders").unwrap();
    sections[orders_at] = vec![old.into()];
    sections.truncate(ledger_sections + SERVICE_SECTIONS.len() - 2);
    let restored = Machine::restore(Limits::default(), SnapshotChunks { header: snap.header(), sections }).unwrap();
    assert_eq!(restored.digest(), h.m.digest(), "final orders moved out in change order, as they were");
    assert_eq!(reads(&restored, &ids), reads(&h.m, &ids));
    restored.check_invariants_deep().unwrap();
}

#[test]
fn stored_tables_ahead_of_the_final_orders_are_refused() {
    let mut h = H::new();
    many_orders(&mut h, 30);
    let snap = h.m.snapshot();
    let sections =
        snap.sections().iter().map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect()).collect();
    let mut ids = indexes(&h.m, 0);
    let finals = h.m.orders().finals().len();
    ids.orders = Arc::new(Tables { by_key: BTreeMap::new(), covered: finals + 1 });
    let chunks = SnapshotChunks { header: snap.header(), sections };
    let err = Machine::restore_with(Limits::default(), chunks, OnDisk { chunks: None, ids: Some(ids) }).err().unwrap();
    assert!(matches!(err, crate::error::DecodeError::StoredIdsAhead { what: "final order", .. }), "{err}");
}
