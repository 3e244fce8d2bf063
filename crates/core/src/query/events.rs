//! The change journal rendered for readers: `GetEvents` pages in the wire
//! format of `docs/events.md`. Only immutable data is rendered, so an event
//! reads the same whenever it is read.

use crate::events::{EventFilter, EventRef, OrderEventRef, WIRE_HEADER, kind};
use crate::limits::{EVENTS_PAGE_MAX, EVENTS_SCAN_MAX};
use crate::machine::Machine;
use crate::orders::records::OrderState;
use crate::records::Account;

/// A page as `GetEvents` returns it: `count` events, then `next_after`, the
/// sequence to continue after (past skipped events too).
pub struct EventsPage {
    pub body: Vec<u8>,
    pub count: usize,
    pub next_after: u64,
}

impl Machine {
    /// Events after `filter.after`, rendered to the wire format:
    /// `next_after: u64`, then per event a header (`seq: u64`,
    /// `timestamp: u64`, `kind: u8`, 3 reserved bytes, `len: u32`) and `len`
    /// bytes of payload (see `docs/events.md`).
    pub fn events_page(&self, filter: &EventFilter) -> EventsPage {
        let journal = self.ledger().journal();
        let limit = (filter.limit as usize).clamp(1, EVENTS_PAGE_MAX);
        let total = journal.len() as u64;
        let mut seq = filter.after.min(total);
        let scan_end = total.min(seq + EVENTS_SCAN_MAX as u64);
        let mut body = vec![0; 8];
        let mut count = 0;
        while seq < scan_end && count < limit {
            let r = journal.get(seq as usize);
            seq += 1;
            if filter.kinds != 0 && filter.kinds & (1 << r.kind) == 0 {
                continue;
            }
            self.render_event(seq, &r, &mut body);
            count += 1;
        }
        body[..8].copy_from_slice(&seq.to_le_bytes());
        EventsPage { body, count, next_after: seq }
    }

    fn render_event(&self, seq: u64, r: &EventRef, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&[r.kind, 0, 0, 0]);
        out.extend_from_slice(&[0; 4]);
        let timestamp = self.render_payload(r, out);
        out[start + 8..start + 16].copy_from_slice(&timestamp.to_le_bytes());
        let len = u32::try_from(out.len() - start - WIRE_HEADER).expect("invariant: one event's payload is small");
        out[start + 20..start + 24].copy_from_slice(&len.to_le_bytes());
    }

    /// Appends the payload and returns the event's timestamp.
    fn render_payload(&self, r: &EventRef, out: &mut Vec<u8>) -> u64 {
        let ledger = self.ledger();
        match r.kind {
            kind::LEDGER_CREATED => {
                let l = ledger.ledger(r.aux as u32).expect("invariant: a journaled ledger exists");
                out.extend_from_slice(bytemuck::bytes_of(l));
                l.timestamp
            }
            kind::ACCOUNT_CREATED => {
                let a = ledger.account_at(
                    u32::try_from(r.index()).expect("invariant: an account slot fits u32 (accounts are u32-addressed)"),
                );
                // Balances change later; the event carries the account as created.
                let created =
                    Account { debits_pending: 0, debits_posted: 0, credits_pending: 0, credits_posted: 0, ..a };
                out.extend_from_slice(bytemuck::bytes_of(&created));
                a.timestamp
            }
            kind::TRANSFER_POSTED | kind::TRANSFER_PENDING | kind::TRANSFER_VOIDED | kind::TRANSFER_EXPIRED => {
                let t = ledger.transfer_at(r.index());
                let pending_amount = if r.kind == kind::TRANSFER_EXPIRED {
                    t.amount
                } else if t.pending_id != 0 {
                    ledger.transfer(t.pending_id).expect("invariant: a posted or voided pending transfer exists").amount
                } else {
                    0
                };
                out.extend_from_slice(bytemuck::bytes_of(&t));
                out.extend_from_slice(&pending_amount.to_le_bytes());
                if r.kind == kind::TRANSFER_EXPIRED { r.aux } else { t.timestamp }
            }
            kind::ORDER => self.render_order(ledger.order_event_at(r.index()), out),
            kind::KEY_CREATED | kind::KEY_REVOKED => {
                let k = self.keys().get(r.aux).expect("invariant: a journaled key exists");
                out.extend_from_slice(&k.id.to_le_bytes());
                out.extend_from_slice(&k.created_at.to_le_bytes());
                let revoked_at = if r.kind == kind::KEY_REVOKED { k.revoked_at } else { 0 };
                out.extend_from_slice(&revoked_at.to_le_bytes());
                let name = &k.name.as_bytes()[..k.name.len().min(u8::MAX as usize)];
                out.extend_from_slice(&[k.role as u8, k.ledgers.len() as u8, name.len() as u8, 0]);
                for l in &k.ledgers {
                    out.extend_from_slice(&l.to_le_bytes());
                }
                out.extend_from_slice(name);
                if r.kind == kind::KEY_REVOKED { k.revoked_at } else { k.created_at }
            }
            kind::AUDIT_RECORDED => {
                let a = self.audit().get(r.aux).expect("invariant: a journaled audit record exists");
                out.extend_from_slice(&a.encode());
                a.timestamp
            }
            other => panic!("journal holds unknown event kind {other}"),
        }
    }

    /// Order payload: the order's immutable facts, the quote (only on the
    /// `fx_locked` transition, when it is set once), then the timeline entry.
    fn render_order(&self, r: OrderEventRef, out: &mut Vec<u8>) -> u64 {
        let entry = self.orders().get(r.order_id).expect("invariant: a journaled order exists");
        let o = &entry.order;
        let e = &entry.timeline[r.timeline as usize];
        let locked = e.to == OrderState::FxLocked as u8;
        let quote = |v: u128| if locked { v } else { 0 };
        for v in [o.id, o.customer_id, o.source_amount, o.fee_amount] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [o.target_amount, o.rate_ppb, o.quote_id] {
            out.extend_from_slice(&quote(v).to_le_bytes());
        }
        out.extend_from_slice(&o.source_ledger.to_le_bytes());
        out.extend_from_slice(&o.target_ledger.to_le_bytes());
        e.encode(out);
        e.timestamp
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
