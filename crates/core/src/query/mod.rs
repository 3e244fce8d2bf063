//! Reads: a query operation and its request body in, the encoded reply out.
//!
//! The reply formats belong here, beside the state they render, so that the
//! server only moves bytes: it frames `Reply::body` with `Reply::count`.
//! Every reply is rendered from the applied state only (no clock, no I/O).

pub mod events;

use crate::command::{AuditFilter, Operation};
use crate::limits::{AUDIT_PAGE_MAX, DEAD_LETTERS_PAGE_MAX};
use crate::machine::Machine;
use crate::orders::records::OrderFilter;
use crate::records::{AccountFilter, LedgerFilter, decode_at};
use crate::service::access::AccessFilter;
use crate::service::webhooks::{DeadLetter, WebhookFilter};
use crate::state::{QueryError, QueryErrorKind};
use bytemuck::Pod;

pub use events::EventsPage;

/// A query's answer: `count` records (or events) encoded in `body`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub body: Vec<u8>,
    pub count: usize,
}

impl Reply {
    fn records<T: Pod>(v: &[T]) -> Reply {
        Reply { body: bytemuck::cast_slice(v).to_vec(), count: v.len() }
    }
}

impl Machine {
    /// Answers the read `operation` with `body` as its request (a filter, or
    /// 16-byte ids for lookups), from the applied state.
    pub fn query(&self, operation: Operation, body: &[u8]) -> Result<Reply, QueryError> {
        let ledger = self.ledger();
        match operation {
            Operation::ListLedgers => ledger.list_ledgers(&filter::<LedgerFilter>(body)?).map(|v| Reply::records(&v)),
            Operation::LookupAccounts => Ok(Reply::records(&ledger.lookup_accounts(ids(body)))),
            Operation::LookupTransfers => Ok(Reply::records(&ledger.lookup_transfers(ids(body)))),
            Operation::GetAccountTransfers => {
                ledger.account_transfers(&filter::<AccountFilter>(body)?).map(|v| Reply::records(&v))
            }
            Operation::GetAccountBalances => {
                ledger.account_balances(&filter::<AccountFilter>(body)?).map(|v| Reply::records(&v))
            }
            Operation::ListAudit => Ok(self.audit_page(&filter(body)?)),
            Operation::LookupOrders => {
                let orders = self.orders();
                let v: Vec<_> = ids(body).filter_map(|id| orders.get(id).map(|e| e.order)).collect();
                Ok(Reply::records(&v))
            }
            Operation::ListOrders => {
                let (body, count) = self.orders().encode_list(&filter::<OrderFilter>(body)?);
                Ok(Reply { body, count })
            }
            Operation::GetOrderEvents => Ok(match ids(body).next().and_then(|id| self.orders().get(id)) {
                Some(e) => Reply { body: e.encode_timeline(), count: e.timeline.len() },
                None => Reply::default(),
            }),
            Operation::GetEvents => {
                let page = self.events_page(&filter(body)?);
                Ok(Reply { body: page.body, count: page.count })
            }
            Operation::ListWebhooks => Ok(self.webhooks_page(&filter(body)?)),
            Operation::ListDeadLetters => Ok(self.dead_letters_page(&filter(body)?)),
            Operation::ListAccess => Ok(self.access_page(&filter(body)?)),
            Operation::CreateLedgers
            | Operation::CreateAccounts
            | Operation::CreateTransfers
            | Operation::CreateKeys
            | Operation::RevokeKeys
            | Operation::RotateKeys
            | Operation::CreateOrders
            | Operation::OrderCommands
            | Operation::CreateWebhooks
            | Operation::DeleteWebhooks
            | Operation::WebhookProgress
            | Operation::WebhookDeadLetters
            | Operation::ReplayDeadLetters
            | Operation::RecordAccess => Err(QueryError {
                kind: QueryErrorKind::NotARead,
                detail: format!("{operation:?} is a write: it is applied through the log"),
            }),
        }
    }

    /// Audit records after `after_seq`, each as `len: u32` then its bytes.
    fn audit_page(&self, filter: &AuditFilter) -> Reply {
        let page = self.audit().page(filter.after_seq, (filter.limit as usize).min(AUDIT_PAGE_MAX));
        let mut body = Vec::new();
        for rec in &page {
            let bytes = rec.encode();
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(&bytes);
        }
        Reply { body, count: page.len() }
    }

    /// `next_id: u64`, then the records: the HTTP edge seals a new webhook's
    /// secret for the id it will get.
    fn webhooks_page(&self, filter: &WebhookFilter) -> Reply {
        let hooks = self.webhooks();
        let mut body = hooks.next_id().to_le_bytes().to_vec();
        let mut count = 0;
        for w in hooks.iter().filter(|w| filter.id == 0 || w.id == filter.id) {
            body.extend_from_slice(bytemuck::bytes_of(w));
            count += 1;
        }
        Reply { body, count }
    }

    /// A webhook's dead letters, or (with `redeliveries` set) the sequences
    /// queued for redelivery as dead letters with only `seq` set.
    fn dead_letters_page(&self, filter: &WebhookFilter) -> Reply {
        let limit = (filter.limit as usize).clamp(1, DEAD_LETTERS_PAGE_MAX);
        let hooks = self.webhooks();
        let v = if filter.redeliveries == 0 {
            hooks.dead_letters(filter.id, filter.after, limit)
        } else {
            let seqs = hooks.redeliveries(filter.id).into_iter().filter(|s| *s > filter.after).take(limit);
            seqs.map(|seq| DeadLetter { seq, ..Default::default() }).collect()
        };
        Reply::records(&v)
    }

    /// `scanned_to: u64`, then the records: a kind filter may stop before
    /// `limit` matches, and the reader resumes there.
    fn access_page(&self, filter: &AccessFilter) -> Reply {
        let (page, scanned_to) = self.access().page(filter);
        let mut body = scanned_to.to_le_bytes().to_vec();
        body.extend_from_slice(bytemuck::cast_slice(&page));
        Reply { body, count: page.len() }
    }
}

/// The ids of a lookup body (whole 16-byte chunks; a trailing partial one
/// is ignored, as the protocol layer never lets one through).
fn ids(body: &[u8]) -> impl Iterator<Item = u128> + '_ {
    body.chunks_exact(16).map(|b| u128::from_le_bytes(b.try_into().expect("invariant: chunks_exact yields 16 bytes")))
}

/// The filter at the start of `body`; a shorter body is refused rather than
/// read past its end.
fn filter<T: Pod>(body: &[u8]) -> Result<T, QueryError> {
    let size = std::mem::size_of::<T>();
    if body.len() < size {
        return Err(QueryError {
            kind: QueryErrorKind::InvalidFilter,
            detail: format!("the filter is {size} bytes, the body {}", body.len()),
        });
    }
    Ok(decode_at(body, 0))
}

#[cfg(test)]
mod tests;
