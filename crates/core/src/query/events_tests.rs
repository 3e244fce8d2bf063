//! The journal through a real `Machine`: gapless sequences, linked-chain
//! rollback, pending lifecycles, kind filters, snapshots and replay.

use super::*;
use crate::command::{Command, LogCommand, Operation};
use crate::limits::EVENTS_PAGE_MAX;
use crate::records::{Ledger, NANOS_PER_SECOND, Transfer, encode_all, transfer_flags as TF};
use crate::state::{Limits, Snapshot, SnapshotChunks};

/// Entries applied so far, to replay them on a second machine.
#[derive(Default)]
struct H {
    m: Machine,
    log: Vec<(u64, Operation, Vec<u8>)>,
}

impl H {
    fn new() -> H {
        let mut h = H::default();
        let ledger = [Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() }];
        h.apply(Operation::CreateLedgers, encode_all(&ledger));
        let accounts: Vec<Account> =
            (1..=3).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        h.apply(Operation::CreateAccounts, encode_all(&accounts));
        h
    }

    fn apply(&mut self, op: Operation, events: &[u8]) -> Vec<crate::codes::EventResult> {
        let time = (self.log.len() as u64 + 1) * NANOS_PER_SECOND;
        self.log.push((time, op, events.to_vec()));
        let c = Command { operation: op, events };
        let mut out = self.m.apply_entry(self.log.len() as u64, time, &[LogCommand::Plain(c)]);
        out.pop().unwrap().1
    }

    fn tick(&mut self, seconds: u64) {
        let time = self.log.last().map_or(0, |e| e.0) + seconds * NANOS_PER_SECOND;
        self.log.push((time, Operation::CreateTransfers, Vec::new()));
        self.m.apply_entry(self.log.len() as u64, time, &[]);
    }
}

fn t(id: u128, amount: u128, flags: u16) -> Transfer {
    Transfer { id, debit_account_id: 1, credit_account_id: 2, amount, ledger: 1, code: 1, flags, ..Default::default() }
}

/// (seq, timestamp, kind, payload) of one wire event.
type Wire = (u64, u64, u8, Vec<u8>);

/// The cursor and every event of a page body.
fn parse(body: &[u8]) -> (u64, Vec<Wire>) {
    let next = u64::from_le_bytes(body[..8].try_into().unwrap());
    let mut rest = &body[8..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let w = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().unwrap());
        let len = u32::from_le_bytes(rest[20..24].try_into().unwrap()) as usize;
        out.push((w(0), w(8), rest[16], rest[WIRE_HEADER..WIRE_HEADER + len].to_vec()));
        rest = &rest[WIRE_HEADER + len..];
    }
    (next, out)
}

fn all(m: &Machine) -> Vec<Wire> {
    parse(&m.events_page(&EventFilter { limit: EVENTS_PAGE_MAX as u32, ..Default::default() }).body).1
}

fn kinds(m: &Machine) -> Vec<u8> {
    all(m).iter().map(|e| e.2).collect()
}

#[test]
fn sequences_are_gapless_and_failed_chains_leave_no_events() {
    let mut h = H::new();
    use kind::*;
    assert_eq!(
        kinds(&h.m),
        [LEDGER_CREATED, AUDIT_RECORDED, ACCOUNT_CREATED, ACCOUNT_CREATED, ACCOUNT_CREATED, AUDIT_RECORDED]
    );
    // A chain whose second transfer fails (unknown account) is rolled back
    // with its journal slots; the plain transfer after it stays.
    let bad = Transfer { credit_account_id: 99, ..t(11, 5, 0) };
    let r = h.apply(Operation::CreateTransfers, encode_all(&[t(10, 5, TF::LINKED), bad, t(12, 7, 0)]));
    assert_eq!(r.len(), 2, "both chain members fail: {r:?}");
    let events = all(&h.m);
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=events.len() as u64).collect::<Vec<_>>());
    let transfers: Vec<_> = events.iter().filter(|e| e.2 == TRANSFER_POSTED).collect();
    assert_eq!(transfers.len(), 1);
    let stored: Transfer = bytemuck::pod_read_unaligned(&transfers[0].3[..Transfer::SIZE]);
    assert_eq!((stored.id, stored.amount), (12, 7));
    assert_eq!(h.m.events_len(), events.len() as u64);
}

#[test]
fn pending_lifecycle_events_carry_the_pending_amount() {
    let mut h = H::new();
    let start = h.m.events_len();
    h.apply(Operation::CreateTransfers, encode_all(&[t(1, 100, TF::PENDING), t(2, 50, TF::PENDING)]));
    let post = Transfer { pending_id: 1, amount: 60, ..t(3, 0, TF::POST_PENDING) };
    let void = Transfer { pending_id: 2, ..t(4, 0, TF::VOID_PENDING) };
    h.apply(Operation::CreateTransfers, encode_all(&[post, void]));
    h.apply(Operation::CreateTransfers, encode_all(&[Transfer { timeout: 1, ..t(5, 30, TF::PENDING) }]));
    h.tick(5);
    let page = h.m.events_page(&EventFilter { after: start, limit: 100, ..Default::default() });
    let (next, events) = parse(&page.body);
    let moves: Vec<(u8, u128, u128, u128)> = events
        .iter()
        .filter(|e| e.2 != kind::AUDIT_RECORDED)
        .map(|e| {
            let tr: Transfer = bytemuck::pod_read_unaligned(&e.3[..Transfer::SIZE]);
            (e.2, tr.id, tr.amount, u128::from_le_bytes(e.3[Transfer::SIZE..].try_into().unwrap()))
        })
        .collect();
    use kind::*;
    assert_eq!(
        moves,
        [
            (TRANSFER_PENDING, 1, 100, 0),
            (TRANSFER_PENDING, 2, 50, 0),
            (TRANSFER_POSTED, 3, 60, 100),
            (TRANSFER_VOIDED, 4, 50, 50),
            (TRANSFER_PENDING, 5, 30, 0),
            (TRANSFER_EXPIRED, 5, 30, 30),
        ]
    );
    let expired = events.last().unwrap();
    assert!(expired.1 > 4 * NANOS_PER_SECOND, "an expiry is stamped with the entry that swept it");
    assert_eq!(next, h.m.events_len());
}

#[test]
fn kind_filters_skip_events_but_advance_the_cursor() {
    let mut h = H::new();
    h.apply(Operation::CreateTransfers, encode_all(&[t(1, 1, 0), t(2, 2, 0)]));
    let only = EventFilter { limit: 10, kinds: 1 << kind::TRANSFER_POSTED, ..Default::default() };
    let page = h.m.events_page(&only);
    let (next, events) = parse(&page.body);
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [7, 8]);
    assert_eq!(next, h.m.events_len(), "the trailing audit event is skipped and passed");
    let after = h.m.events_page(&EventFilter { after: next, ..only });
    assert_eq!((after.count, after.next_after), (0, next));
    // A limit stops the page early; the cursor is the last event returned.
    let one = h.m.events_page(&EventFilter { limit: 1, ..Default::default() });
    assert_eq!((one.count, one.next_after), (1, 1));
}

#[test]
fn snapshots_and_replays_give_the_same_events() {
    let mut h = H::new();
    h.apply(Operation::CreateTransfers, encode_all(&[t(1, 100, TF::PENDING), t(2, 3, 0)]));
    let snap = h.m.snapshot();
    let stored = SnapshotChunks {
        header: snap.header(),
        sections: snap
            .sections()
            .iter()
            .map(|s| s.chunks.iter().map(|c| c.bytes().to_vec().into()).collect())
            .collect(),
    };
    let restored = Machine::restore(Limits::default(), stored).unwrap();
    assert_eq!(all(&restored), all(&h.m));
    let mut replayed = Machine::default();
    for (i, (time, op, events)) in h.log.iter().enumerate() {
        let c = Command { operation: *op, events };
        let commands = if events.is_empty() { vec![] } else { vec![LogCommand::Plain(c)] };
        replayed.apply_entry(i as u64 + 1, *time, &commands);
    }
    assert_eq!(all(&replayed), all(&h.m));
    assert_eq!(replayed.digest(), h.m.digest());
}
