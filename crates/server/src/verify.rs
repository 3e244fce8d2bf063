//! `bursar verify`: an offline check of a data directory. Reads and checks
//! every log entry, replays the whole log from the beginning (or from the
//! oldest snapshot if older segments are gone), compares the replayed state
//! with the snapshot at the same position, and checks every invariant.

use crate::recovery::replay;
use bursar_core::machine::Machine;
use bursar_core::{Ledger, LedgerTotals};
use bursar_log::{FileLog, FileLogOptions, SnapshotStore};
use std::path::Path;

pub struct VerifyReport {
    pub entries: u64,
    pub accounts: usize,
    pub transfers: usize,
    pub ledgers: Vec<(Ledger, LedgerTotals)>,
    pub snapshots_checked: usize,
    pub torn_tail_bytes: u64,
    pub audit_records: u64,
}

impl VerifyReport {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        let ledgers: Vec<String> = self
            .ledgers
            .iter()
            .map(|(l, t)| {
                format!(
                    "{}:{}:debits_posted={}:credits_posted={}:debits_pending={}:credits_pending={}",
                    l.id,
                    l.asset_str().unwrap_or("?"),
                    t.debits_posted,
                    t.credits_posted,
                    t.debits_pending,
                    t.credits_pending
                )
            })
            .collect();
        format!(
            "verify: ok entries={} accounts={} transfers={} audit_records={} snapshots_checked={} torn_tail_bytes={} ledgers=[{}]",
            self.entries,
            self.accounts,
            self.transfers,
            self.audit_records,
            self.snapshots_checked,
            self.torn_tail_bytes,
            ledgers.join(",")
        )
    }
}

pub fn verify(data_dir: &Path) -> Result<VerifyReport, String> {
    if !data_dir.join("log").is_dir() {
        return Err(format!("{} holds no Bursar log", data_dir.display()));
    }
    let options = FileLogOptions { dir: data_dir.to_path_buf(), segment_bytes: u64::MAX };
    let (log, open) = FileLog::open_read_only(options).map_err(|e| e.to_string())?;
    let store = SnapshotStore::open_read_only(data_dir).map_err(|e| e.to_string())?;
    let snapshots = store.list().map_err(|e| e.to_string())?;
    let mut checked = 0;
    let mut sm = if open.first_position <= 1 {
        Machine::default()
    } else {
        let oldest = snapshots.first().ok_or("older log segments are gone and there is no snapshot")?;
        let s = store.load(*oldest).map_err(|e| e.to_string())?;
        checked += 1;
        Machine::restore(bursar_core::Limits::default(), s.chunks)?
    };
    let mut pending_checks: Vec<u64> = snapshots.iter().copied().filter(|p| *p > sm.position()).collect();
    pending_checks.reverse();
    replay(&log, &mut sm, open.last_position, |sm| {
        if pending_checks.last() == Some(&sm.position()) {
            let position = pending_checks.pop().expect("checked above");
            let s = store.load(position).map_err(|e| e.to_string())?;
            if s.digest != sm.digest() {
                return Err(format!("the snapshot at position {position} differs from the replayed state there"));
            }
            checked += 1;
        }
        Ok(())
    })?;
    sm.check_invariants_deep().map_err(|e| format!("invariant broken after replay: {e}"))?;
    Ok(VerifyReport {
        entries: open.last_position,
        accounts: sm.ledger().account_count(),
        transfers: sm.ledger().transfer_count(),
        ledgers: sm.ledger().ledger_totals().map(|(l, t)| (*l, *t)).collect(),
        audit_records: sm.audit().len(),
        snapshots_checked: checked,
        torn_tail_bytes: open.truncated_bytes,
    })
}

/// What `bursar audit verify` found.
pub struct AuditReport {
    pub records: u64,
    pub head: [u8; 32],
    pub snapshots_checked: usize,
}

impl AuditReport {
    pub fn summary(&self) -> String {
        let head: String = self.head.iter().map(|b| format!("{b:02x}")).collect();
        format!("audit: ok records={} head={head} snapshots_checked={}", self.records, self.snapshots_checked)
    }
}

/// Recomputes the audit trail from the log, entry by entry, and checks
/// every record's hash and link, and that every snapshot holds the same
/// records. Damage names the first audit record it affects.
pub fn verify_audit(data_dir: &Path) -> Result<AuditReport, String> {
    if !data_dir.join("log").is_dir() {
        return Err(format!("{} holds no Bursar log", data_dir.display()));
    }
    let mut sm = Machine::default();
    let scanned = bursar_log::scan(data_dir, |entry| {
        let commands = bursar_core::command::decode_body(&entry.body)
            .map_err(|e| format!("log entry {} has an invalid body: {e}", entry.position))?;
        sm.apply_entry(entry.position, entry.timestamp, &commands);
        Ok(())
    });
    if let Err(stop) = scanned {
        // Damage past the last acknowledged entry is a torn tail from a
        // crash, not tampering: the log opens. Anything else is damage.
        let options = FileLogOptions { dir: data_dir.to_path_buf(), segment_bytes: u64::MAX };
        if let Err(e) = FileLog::open_read_only(options) {
            return Err(format!(
                "audit record {} (and any after it) is in damaged log entry {}: {e}",
                sm.audit().len() + 1,
                stop.position
            ));
        }
    }
    sm.audit().verify().map_err(|(seq, why)| format!("audit record {seq} {why}"))?;
    let store = SnapshotStore::open_read_only(data_dir).map_err(|e| e.to_string())?;
    let mut checked = 0;
    for position in store.list().map_err(|e| e.to_string())? {
        let loaded = store.load(position).map_err(|e| format!("snapshot at position {position}: {e}"))?;
        let snap = Machine::restore(bursar_core::Limits::default(), loaded.chunks)
            .map_err(|e| format!("snapshot at position {position}: {e}"))?;
        let n = snap.audit().len();
        if n > sm.audit().len() || snap.audit().head() != sm.audit().get(n).map_or([0; 32], |r| r.hash) {
            return Err(format!("the snapshot at position {position} holds audit records that differ from the log's"));
        }
        checked += 1;
    }
    Ok(AuditReport { records: sm.audit().len(), head: sm.audit().head(), snapshots_checked: checked })
}
