//! One batch of events into PostgreSQL in one transaction: rows are streamed
//! with COPY (text format), balance changes aggregated here per account and
//! UTC day and applied with a few set-based statements, and the cursor moved
//! in the same transaction, so each event counts exactly once.

use crate::events::{Body, Event, Order, TransferKind};
use crate::schema;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;

const NANOS_PER_DAY: u64 = 86_400_000_000_000;

/// Why a batch could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("a balance delta overflows u128 in one batch")]
    DeltaOverflows,
    #[error("a daily volume overflows u128")]
    VolumeOverflows,
    #[error("a page after {after} does not continue the batch ending at {end}")]
    Discontinuous { after: u64, end: u64 },
    /// Rolled back; the caller resynchronizes from the table.
    #[error("the stored cursor is {stored}, not {expected}: another projector is writing this database")]
    Stale { stored: i64, expected: u64 },
    #[error("{}", pg_error(.0))]
    Pg(#[from] postgres::Error),
}

/// A signed amount kept as two u128 sums, so that no delta ever narrows.
#[derive(Default, Clone, Copy)]
struct Signed {
    plus: u128,
    minus: u128,
}

impl Signed {
    fn add(&mut self, v: u128) -> Result<(), ApplyError> {
        self.plus = self.plus.checked_add(v).ok_or(ApplyError::DeltaOverflows)?;
        Ok(())
    }
    fn sub(&mut self, v: u128) -> Result<(), ApplyError> {
        self.minus = self.minus.checked_add(v).ok_or(ApplyError::DeltaOverflows)?;
        Ok(())
    }
    fn write(self, out: &mut String) {
        if self.plus >= self.minus {
            let _ = write!(out, "{}", self.plus - self.minus);
        } else {
            let _ = write!(out, "-{}", self.minus - self.plus);
        }
    }
}

/// An account's changes on one UTC day within the batch.
#[derive(Default)]
struct Daily {
    debits_pending: Signed,
    debits_posted: Signed,
    credits_pending: Signed,
    credits_posted: Signed,
    debit_volume: u128,
    credit_volume: u128,
    /// The last event that touched the account that day.
    last_seq: u64,
}

/// The rows of one batch, ready to COPY.
#[derive(Default)]
pub struct Batch {
    pub from: u64,
    pub to: u64,
    pub events: u64,
    ledgers: String,
    accounts: String,
    transfers: String,
    resolutions: String,
    daily: HashMap<(u128, u64), Daily>,
    orders: Vec<(Order, u64, u64, u64, u64)>,
    order_index: HashMap<u128, usize>,
}

impl Batch {
    pub fn new(from: u64) -> Batch {
        Batch { from, to: from, ..Default::default() }
    }

    /// Adds a page; it must start where the batch ends.
    pub fn push(&mut self, after: u64, next_after: u64, events: &[Event]) -> Result<(), ApplyError> {
        if after != self.to {
            return Err(ApplyError::Discontinuous { after, end: self.to });
        }
        for e in events {
            self.add(e)?;
        }
        self.events += events.len() as u64;
        self.to = next_after;
        Ok(())
    }

    fn add(&mut self, e: &Event) -> Result<(), ApplyError> {
        let at = timestamptz(e.timestamp);
        match &e.body {
            Body::Ledger(l) => {
                let _ = writeln!(
                    self.ledgers,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    l.id,
                    escape(&l.asset),
                    l.scale,
                    l.timestamp,
                    timestamptz(l.timestamp),
                    e.seq
                );
            }
            Body::Account(a) => {
                let _ = writeln!(
                    self.accounts,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t0\t0\t0\t0\t{}",
                    a.id,
                    a.ledger,
                    a.code,
                    array(&a.flags),
                    a.user_data_128,
                    a.user_data_64,
                    a.user_data_32,
                    a.timestamp,
                    timestamptz(a.timestamp),
                    e.seq,
                    e.seq
                );
            }
            Body::Transfer(t) => {
                let day = e.timestamp / NANOS_PER_DAY;
                let (debit, credit) = (t.debit_account_id, t.credit_account_id);
                let seq = e.seq;
                let mut both = |f: &mut DailyUpdate<'_>| -> Result<(), ApplyError> {
                    let d = self.daily.entry((debit, day)).or_default();
                    d.last_seq = seq;
                    f(d, true)?;
                    let c = self.daily.entry((credit, day)).or_default();
                    c.last_seq = seq;
                    f(c, false)
                };
                match t.kind {
                    TransferKind::Single => both(&mut |d, is_debit| post(d, is_debit, t.amount))?,
                    TransferKind::Pending => both(&mut |d, is_debit| pending(d, is_debit, t.amount, true))?,
                    TransferKind::Post => both(&mut |d, is_debit| {
                        pending(d, is_debit, t.pending_amount, false)?;
                        post(d, is_debit, t.amount)
                    })?,
                    TransferKind::Void | TransferKind::Expire => {
                        both(&mut |d, is_debit| pending(d, is_debit, t.pending_amount, false))?
                    }
                }
                let resolution = match t.kind {
                    TransferKind::Post => Some("posted"),
                    TransferKind::Void => Some("voided"),
                    TransferKind::Expire => Some("expired"),
                    TransferKind::Single | TransferKind::Pending => None,
                };
                if let Some(r) = resolution {
                    // An expiry names the pending transfer itself.
                    let pending_id = if t.kind == TransferKind::Expire { t.id } else { t.pending_id };
                    let _ = writeln!(self.resolutions, "{pending_id}\t{r}\t{}\t{at}", e.seq);
                }
                if t.kind != TransferKind::Expire {
                    let opt = |v: u128, present: bool| if present { v.to_string() } else { "\\N".to_string() };
                    let has_pending = t.pending_id != 0;
                    let _ = writeln!(
                        self.transfers,
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        t.id,
                        e.seq,
                        t.kind.name(),
                        t.debit_account_id,
                        t.credit_account_id,
                        t.amount,
                        opt(t.pending_id, has_pending),
                        opt(t.pending_amount, has_pending),
                        t.ledger,
                        t.code,
                        array(&t.flags),
                        t.timeout,
                        t.user_data_128,
                        t.user_data_64,
                        t.user_data_32,
                        t.timestamp,
                        timestamptz(t.timestamp),
                    );
                }
            }
            Body::Order(o) => match self.order_index.get(&o.id) {
                Some(&i) => {
                    let (prev, _, updated_at, _, updated_seq) = &mut self.orders[i];
                    prev.state.clone_from(&o.state);
                    prev.target_amount = o.target_amount.or(prev.target_amount);
                    prev.rate_ppb = o.rate_ppb.or(prev.rate_ppb);
                    prev.quote_id = o.quote_id.or(prev.quote_id);
                    (*updated_at, *updated_seq) = (e.timestamp, e.seq);
                }
                None => {
                    self.order_index.insert(o.id, self.orders.len());
                    self.orders.push((o.clone(), e.timestamp, e.timestamp, e.seq, e.seq));
                }
            },
            Body::Other => {}
        }
        Ok(())
    }

    /// Applies the batch in one transaction, checking that the stored cursor
    /// is still where the batch starts (another projector, or a stale
    /// session, cannot apply it twice).
    pub fn apply(&self, client: &mut postgres::Client) -> Result<(), ApplyError> {
        let mut tx = client.transaction()?;
        let row = tx.query_one("SELECT last_seq FROM projection_state WHERE id = 1 FOR UPDATE", &[])?;
        let stored: i64 = row.get(0);
        if stored != seq_i64(self.from) {
            // Rolled back on drop; the caller resynchronizes from the table.
            return Err(ApplyError::Stale { stored, expected: self.from });
        }
        copy(&mut tx, "COPY ledgers (id, asset, scale, timestamp, created_at, seq) FROM STDIN", &self.ledgers)?;
        copy(
            &mut tx,
            "COPY accounts (id, ledger, code, flags, user_data_128, user_data_64, user_data_32, timestamp, created_at, \
             seq, debits_pending, debits_posted, credits_pending, credits_posted, updated_seq) FROM STDIN",
            &self.accounts,
        )?;
        copy(
            &mut tx,
            "COPY transfers (id, seq, kind, debit_account_id, credit_account_id, amount, pending_id, pending_amount, \
             ledger, code, flags, timeout, user_data_128, user_data_64, user_data_32, timestamp, created_at) FROM STDIN",
            &self.transfers,
        )?;
        if !self.resolutions.is_empty() {
            copy(&mut tx, "COPY stage_resolutions FROM STDIN", &self.resolutions)?;
            tx.execute(schema::APPLY_RESOLUTIONS, &[])?;
        }
        if !self.daily.is_empty() {
            let mut rows = String::with_capacity(self.daily.len() * 96);
            for ((account, day), d) in &self.daily {
                let _ = write!(rows, "{account}\t{}\t", date(*day));
                for s in [d.debits_pending, d.debits_posted, d.credits_pending, d.credits_posted] {
                    s.write(&mut rows);
                    rows.push('\t');
                }
                let _ = writeln!(rows, "{}\t{}\t{}", d.debit_volume, d.credit_volume, d.last_seq);
            }
            copy(&mut tx, "COPY stage_daily FROM STDIN", &rows)?;
            tx.execute(schema::APPLY_DAILY, &[])?;
            tx.execute(schema::APPLY_ACCOUNTS, &[])?;
        }
        if !self.orders.is_empty() {
            let mut rows = String::with_capacity(self.orders.len() * 160);
            let opt = |v: Option<u128>| v.map_or_else(|| "\\N".to_string(), |v| v.to_string());
            for (o, created, updated, created_seq, updated_seq) in &self.orders {
                let _ = writeln!(
                    rows,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{created_seq}\t{updated_seq}",
                    o.id,
                    o.customer_id,
                    o.source_ledger,
                    o.target_ledger,
                    o.source_amount,
                    o.fee_amount,
                    opt(o.target_amount),
                    opt(o.rate_ppb),
                    opt(o.quote_id),
                    escape(&o.state),
                    timestamptz(*created),
                    timestamptz(*updated),
                );
            }
            copy(&mut tx, "COPY stage_orders FROM STDIN", &rows)?;
            tx.execute(schema::APPLY_ORDERS, &[])?;
        }
        tx.execute(
            "UPDATE projection_state SET last_seq = $1, events = events + $2 WHERE id = 1",
            &[&seq_i64(self.to), &(self.events as i64)],
        )?;
        Ok(tx.commit()?)
    }
}

/// One side's change to a daily volume row (`true`: the debit side).
type DailyUpdate<'a> = dyn FnMut(&mut Daily, bool) -> Result<(), ApplyError> + 'a;

/// A PostgreSQL error with the server's message when there is one.
pub fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgresql: {}: {}", db.code().code(), db.message()),
        None => format!("postgresql: {e}"),
    }
}

fn post(d: &mut Daily, is_debit: bool, amount: u128) -> Result<(), ApplyError> {
    if is_debit {
        d.debits_posted.add(amount)?;
        d.debit_volume = d.debit_volume.checked_add(amount).ok_or(ApplyError::VolumeOverflows)?;
    } else {
        d.credits_posted.add(amount)?;
        d.credit_volume = d.credit_volume.checked_add(amount).ok_or(ApplyError::VolumeOverflows)?;
    }
    Ok(())
}

fn pending(d: &mut Daily, is_debit: bool, amount: u128, reserve: bool) -> Result<(), ApplyError> {
    let s = if is_debit { &mut d.debits_pending } else { &mut d.credits_pending };
    if reserve { s.add(amount) } else { s.sub(amount) }
}

fn copy(tx: &mut postgres::Transaction<'_>, statement: &str, rows: &str) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut w = tx.copy_in(statement)?;
    // A write error here is the connection's; finish() reports it as a
    // postgres::Error, so only the result of finish() is kept.
    let _ = w.write_all(rows.as_bytes());
    w.finish()?;
    Ok(())
}

/// Sequence numbers are u64 on the wire and bigint in PostgreSQL; one
/// beyond i64::MAX would take 292 years at a billion events per second.
pub fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Escapes a value for COPY's text format.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A text[] literal in COPY's text format (flag names are plain words, but
/// they are quoted anyway).
fn array(items: &[String]) -> String {
    let inner: Vec<String> =
        items.iter().map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    escape(&format!("{{{}}}", inner.join(",")))
}

/// Nanoseconds since 1970 as a UTC timestamptz literal (microseconds, as
/// PostgreSQL keeps them; the exact value is in the `timestamp` columns).
pub fn timestamptz(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1000;
    let (day, rem) = (secs / 86_400, secs % 86_400);
    format!("{} {:02}:{:02}:{:02}.{micros:06}+00", date(day), rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
pub fn date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(timestamptz(1_795_274_379_247_094_105), "2026-11-21 15:19:39.247094+00");
    }

    #[test]
    fn copy_text_escapes() {
        assert_eq!(escape("a\tb\\c\n"), "a\\tb\\\\c\\n");
        assert_eq!(array(&["pending".into(), "linked".into()]), "{\"pending\",\"linked\"}");
        assert_eq!(array(&[]), "{}");
    }
}
