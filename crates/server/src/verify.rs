//! `bursar verify`: an offline check of a data directory. Reads and checks
//! every log entry, replays the whole log from the beginning (or from the
//! oldest snapshot the log continues from if older entries are not here),
//! compares the replayed state with every snapshot at the same position,
//! checks every invariant, and reports the state's digest: the same
//! `Machine::digest` the cluster's divergence guard compares at its
//! checkpoints. `verify_until` stops the replay at an earlier position.

use crate::recovery::{RecoveryError, replay};
use bursar_core::machine::Machine;
use bursar_core::{AuditFault, DecodeError, InvariantError, Ledger, LedgerTotals};
use bursar_log::{FileLog, FileLogOptions, LogError, OpenReport, SnapshotStore};
use std::path::{Path, PathBuf};

/// What `verify` or `verify_audit` found wrong; each names the position,
/// snapshot or audit record concerned.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{} holds no Bursar log", .0.display())]
    NoLog(PathBuf),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("position {end} is beyond the log's end at position {last}")]
    BeyondEnd { end: u64, last: u64 },
    #[error(
        "position {end} is before this directory's log, which starts at position {first}: \
         the entries up to {base} are not here, so the state at {end} cannot be rebuilt from it"
    )]
    BeforeLog { end: u64, first: u64, base: u64 },
    #[error("the log starts at position {first} and there is no snapshot to start the replay from")]
    NoStartSnapshot { first: u64 },
    #[error(
        "position {end} is before the oldest snapshot kept that the log continues from (at position {oldest}; \
         the log starts at {first}): the state at {end} cannot be rebuilt from this directory"
    )]
    BeforeOldestSnapshot { end: u64, oldest: u64, first: u64 },
    #[error("the snapshot at position {position} does not match the log's hash chain there")]
    ChainMismatch { position: u64 },
    #[error("the snapshot at position {position} is inconsistent: {source}")]
    SnapshotInconsistent {
        position: u64,
        #[source]
        source: DecodeError,
    },
    #[error("the snapshot at position {position} restores to a state with a different digest")]
    DigestMismatch { position: u64 },
    #[error("the snapshot at position {position} differs from the replayed state there")]
    ReplayDiffers { position: u64 },
    #[error("invariant broken after replay: {0}")]
    Invariant(#[source] InvariantError),
    #[error("audit record {record} (and any after it) is in damaged log entry {position}: {source}")]
    DamagedEntry {
        record: u64,
        position: u64,
        #[source]
        source: LogError,
    },
    #[error("audit record {seq} {fault}")]
    Audit { seq: u64, fault: AuditFault },
    #[error("snapshot at position {position}: {source}")]
    SnapshotUnreadable {
        position: u64,
        #[source]
        source: LogError,
    },
    #[error("snapshot at position {position}: {source}")]
    SnapshotUnrestorable {
        position: u64,
        #[source]
        source: DecodeError,
    },
    #[error("the snapshot at position {position} holds audit records that differ from the log's")]
    AuditDiffers { position: u64 },
}

pub struct VerifyReport {
    /// The log's last position: every entry up to it was read and checked
    /// (also with `until`, which only stops the replay).
    pub entries: u64,
    /// The position of the replayed state everything below describes: the
    /// log's end, or `until`.
    pub position: u64,
    /// `Machine::digest` of the state at `position`.
    pub digest: [u8; 32],
    pub accounts: usize,
    pub transfers: usize,
    pub ledgers: Vec<(Ledger, LedgerTotals)>,
    pub snapshots_checked: usize,
    pub torn_tail_bytes: u64,
    pub audit_records: u64,
    /// Cluster entries the replicas refused (forged, damaged, replayed).
    pub refused_entries: u64,
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
            "verify: ok entries={} accounts={} transfers={} audit_records={} refused_entries={} snapshots_checked={} torn_tail_bytes={} position={} digest={} ledgers=[{}]",
            self.entries,
            self.accounts,
            self.transfers,
            self.audit_records,
            self.refused_entries,
            self.snapshots_checked,
            self.torn_tail_bytes,
            self.position,
            hex(&self.digest),
            ledgers.join(",")
        )
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies the whole data directory: `verify_until(data_dir, None)`.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, VerifyError> {
    verify_until(data_dir, None)
}

/// Verifies `data_dir` and reports the state after the entry at `until`
/// (the log's end if `None`). Every log entry is checked either way; the
/// replay starts where it does without `until` (at position 1 if the log
/// holds it, else from the oldest snapshot the log continues from) and
/// stops at `until`, checking the snapshots up to there. A position past
/// the log's end, or before the state the replay can start from, is an
/// error.
pub fn verify_until(data_dir: &Path, until: Option<u64>) -> Result<VerifyReport, VerifyError> {
    if !data_dir.join("log").is_dir() {
        return Err(VerifyError::NoLog(data_dir.to_path_buf()));
    }
    let options = FileLogOptions { dir: data_dir.to_path_buf(), segment_bytes: u64::MAX };
    let (log, open) = FileLog::open_read_only(options)?;
    let store = SnapshotStore::open_read_only(data_dir)?;
    let snapshots = store.list()?;
    let end = until.unwrap_or(open.last_position);
    if end > open.last_position {
        return Err(VerifyError::BeyondEnd { end, last: open.last_position });
    }
    let mut checked = 0;
    let mut sm = if open.first_position <= 1 {
        Machine::default()
    } else {
        checked += 1;
        start_from_snapshot(&store, &log, &open, &snapshots, end)?
    };
    let mut pending_checks: Vec<u64> = snapshots.iter().copied().filter(|p| *p > sm.position() && *p <= end).collect();
    pending_checks.reverse();
    replay(&log, &mut sm, end, |sm| {
        if pending_checks.last() == Some(&sm.position()) {
            let position = pending_checks.pop().expect("checked above");
            let s = store.load(position)?;
            if s.digest != sm.digest() {
                return Err(VerifyError::ReplayDiffers { position });
            }
            checked += 1;
        }
        Ok(())
    })?;
    sm.check_invariants_deep().map_err(VerifyError::Invariant)?;
    Ok(VerifyReport {
        entries: open.last_position,
        position: sm.position(),
        digest: sm.digest(),
        accounts: sm.ledger().account_count(),
        transfers: sm.ledger().transfer_count(),
        ledgers: sm.ledger().ledger_totals().map(|(l, t)| (*l, *t)).collect(),
        audit_records: sm.audit().len(),
        refused_entries: sm.proposers().refused(),
        snapshots_checked: checked,
        torn_tail_bytes: open.truncated_bytes,
    })
}

/// The state a replay to `end` starts from when the log does not start at
/// position 1: the oldest snapshot the log continues from, checked against
/// the log's chain there and against its own digest.
fn start_from_snapshot(
    store: &SnapshotStore,
    log: &FileLog,
    open: &OpenReport,
    snapshots: &[u64],
    end: u64,
) -> Result<Machine, VerifyError> {
    let position = start_snapshot(open, snapshots, end)?;
    let s = store.load(position)?;
    if log.chain_at(position)? != s.chain {
        return Err(VerifyError::ChainMismatch { position });
    }
    let sm = Machine::restore(bursar_core::Limits::default(), s.chunks)
        .map_err(|source| VerifyError::SnapshotInconsistent { position, source })?;
    if sm.digest() != s.digest {
        return Err(VerifyError::DigestMismatch { position });
    }
    Ok(sm)
}

/// The snapshot a replay to `end` starts from when the log does not start
/// at position 1 (older segments removed, or a log seeded after a
/// snapshot): the oldest one the log continues from, which must not be
/// after `end`.
fn start_snapshot(open: &OpenReport, snapshots: &[u64], end: u64) -> Result<u64, VerifyError> {
    let first = open.first_position;
    let base = first - 1;
    if end < base {
        return Err(VerifyError::BeforeLog { end, first, base });
    }
    match snapshots.iter().copied().find(|p| *p >= base) {
        None => Err(VerifyError::NoStartSnapshot { first }),
        Some(oldest) if oldest > end => Err(VerifyError::BeforeOldestSnapshot { end, oldest, first }),
        Some(oldest) => Ok(oldest),
    }
}

/// What `bursar audit verify` found.
pub struct AuditReport {
    pub records: u64,
    pub head: [u8; 32],
    pub snapshots_checked: usize,
    /// Older log segments were removed: the records up to this snapshot's
    /// position come from it (their chain checked, not re-derived).
    pub from_snapshot: Option<u64>,
}

impl AuditReport {
    pub fn summary(&self) -> String {
        let from = self.from_snapshot.map(|p| format!(" from_snapshot={p}")).unwrap_or_default();
        format!(
            "audit: ok records={} head={} snapshots_checked={}{from}",
            self.records,
            hex(&self.head),
            self.snapshots_checked
        )
    }
}

/// Recomputes the audit trail from the log, entry by entry, and checks
/// every record's hash and link, and that every snapshot holds the same
/// records. Damage names the first audit record it affects.
pub fn verify_audit(data_dir: &Path) -> Result<AuditReport, VerifyError> {
    if !data_dir.join("log").is_dir() {
        return Err(VerifyError::NoLog(data_dir.to_path_buf()));
    }
    let options = FileLogOptions { dir: data_dir.to_path_buf(), segment_bytes: u64::MAX };
    // A damaged log fails this open: the scan below then names the damage.
    if let Ok((log, open)) = FileLog::open_read_only(options)
        && open.first_position > 1
    {
        return verify_audit_from_snapshot(data_dir, &log, &open);
    }
    let mut sm = Machine::default();
    // `scan` stops with the callback's error (as `ScanError::Callback`).
    let scanned = bursar_log::scan(data_dir, |entry| {
        crate::recovery::apply_logged(&mut sm, entry.position, entry.timestamp, &entry.body)?;
        Ok(())
    });
    if let Err(stop) = scanned {
        // Damage past the last acknowledged entry is a torn tail from a
        // crash, not tampering: the log opens. Anything else is damage.
        let options = FileLogOptions { dir: data_dir.to_path_buf(), segment_bytes: u64::MAX };
        if let Err(source) = FileLog::open_read_only(options) {
            return Err(VerifyError::DamagedEntry { record: sm.audit().len() + 1, position: stop.position, source });
        }
    }
    sm.audit().verify().map_err(|(seq, fault)| VerifyError::Audit { seq, fault })?;
    let store = SnapshotStore::open_read_only(data_dir)?;
    let mut checked = 0;
    for position in store.list()? {
        let loaded = store.load(position).map_err(|source| VerifyError::SnapshotUnreadable { position, source })?;
        let snap = Machine::restore(bursar_core::Limits::default(), loaded.chunks)
            .map_err(|source| VerifyError::SnapshotUnrestorable { position, source })?;
        let n = snap.audit().len();
        if n > sm.audit().len() || snap.audit().head() != sm.audit().get(n).map_or([0; 32], |r| r.hash) {
            return Err(VerifyError::AuditDiffers { position });
        }
        checked += 1;
    }
    Ok(AuditReport {
        records: sm.audit().len(),
        head: sm.audit().head(),
        snapshots_checked: checked,
        from_snapshot: None,
    })
}

/// `verify_audit` of a log whose older segments were removed (or that was
/// seeded after a snapshot): the records up to the oldest snapshot the log
/// continues from are that snapshot's, whose hash chain is checked record
/// by record (and the snapshot against the log's chain and its digest);
/// every later record is re-derived from the log, and every later snapshot
/// must hold the same records. Only `--log-retain` lets the earlier records
/// be re-derived too.
fn verify_audit_from_snapshot(data_dir: &Path, log: &FileLog, open: &OpenReport) -> Result<AuditReport, VerifyError> {
    let store = SnapshotStore::open_read_only(data_dir)?;
    let snapshots = store.list()?;
    let mut sm = start_from_snapshot(&store, log, open, &snapshots, open.last_position)?;
    let from = sm.position();
    sm.audit().verify().map_err(|(seq, fault)| VerifyError::Audit { seq, fault })?;
    let mut later: Vec<u64> = snapshots.iter().copied().filter(|p| *p > from).collect();
    later.reverse();
    let mut checked = 1;
    replay(log, &mut sm, open.last_position, |sm| {
        if later.last() == Some(&sm.position()) {
            let position = later.pop().expect("checked above");
            let loaded = store.load(position).map_err(|source| VerifyError::SnapshotUnreadable { position, source })?;
            let snap = Machine::restore(bursar_core::Limits::default(), loaded.chunks)
                .map_err(|source| VerifyError::SnapshotUnrestorable { position, source })?;
            if snap.audit().len() != sm.audit().len() || snap.audit().head() != sm.audit().head() {
                return Err(VerifyError::AuditDiffers { position });
            }
            checked += 1;
        }
        Ok(())
    })?;
    sm.audit().verify().map_err(|(seq, fault)| VerifyError::Audit { seq, fault })?;
    Ok(AuditReport {
        records: sm.audit().len(),
        head: sm.audit().head(),
        snapshots_checked: checked,
        from_snapshot: Some(from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::command::{Command, Operation, decode_body, encode_command};
    use bursar_core::records::encode_all;
    use bursar_core::{Account, Transfer};

    const ENTRIES: u64 = 14;

    /// Log entry bodies for positions 1..=ENTRIES: a ledger, accounts, then
    /// transfers, with an empty entry (a tick) every fourth position.
    fn bodies() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let body = |operation, events: &[u8]| {
            let mut body = Vec::new();
            encode_command(&mut body, &Command { operation, events });
            body
        };
        let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
        out.push(body(Operation::CreateLedgers, encode_all(&[usd])));
        let accounts: Vec<Account> =
            (1..=20).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        out.push(body(Operation::CreateAccounts, encode_all(&accounts)));
        for position in 3..=ENTRIES {
            if position % 4 == 0 {
                out.push(Vec::new());
                continue;
            }
            let transfers: Vec<Transfer> = (0..5)
                .map(|i| {
                    let id = u128::from(position) * 100 + i;
                    Transfer {
                        id,
                        debit_account_id: 1 + id % 20,
                        credit_account_id: 1 + (id + 3) % 20,
                        amount: id,
                        ledger: 1,
                        code: 1,
                        ..Default::default()
                    }
                })
                .collect();
            out.push(body(Operation::CreateTransfers, encode_all(&transfers)));
        }
        out
    }

    fn timestamp(position: u64) -> u64 {
        1_700_000_000_000_000_000 + position * 1_000_000
    }

    /// What the engine computes, entry by entry, in memory: the digest and
    /// the log chain after every position (index 0: the empty state).
    struct Reference {
        digests: Vec<[u8; 32]>,
        chains: Vec<[u8; 32]>,
    }

    /// Writes the entries after `seed` (0: from position 1; else the log is
    /// seeded after a snapshot at `seed`, as a bootstrapped replica's is)
    /// into `dir`, taking a snapshot at every position in `snapshot_at`.
    /// The reference digests come from a machine applying every entry as
    /// the engine does, not from reading `dir` back.
    fn write_dir(dir: &Path, seed: u64, seed_chain: [u8; 32], snapshot_at: &[u64]) -> Reference {
        let options = FileLogOptions::new(dir);
        let (mut log, _) =
            if seed == 0 { FileLog::open(options) } else { FileLog::open_after(options, seed, seed_chain) }.unwrap();
        let mut store = SnapshotStore::open(dir).unwrap();
        let mut m = Machine::default();
        let mut reference = Reference { digests: vec![m.digest()], chains: vec![[0; 32]] };
        for (i, body) in bodies().iter().enumerate() {
            let position = i as u64 + 1;
            m.apply_entry(position, timestamp(position), &decode_body(body).unwrap());
            let chain = if position <= seed {
                if position == seed { seed_chain } else { [0; 32] }
            } else {
                assert_eq!(log.append(timestamp(position), &[body]).unwrap(), position);
                log.last_chain()
            };
            if position == seed || snapshot_at.contains(&position) {
                store.write(&m.snapshot(), chain).unwrap();
            }
            reference.digests.push(m.digest());
            reference.chains.push(chain);
        }
        log.close().unwrap();
        reference
    }

    fn until(dir: &Path, position: u64) -> VerifyReport {
        verify_until(dir, Some(position)).unwrap_or_else(|e| panic!("verify --until {position}: {e}"))
    }

    #[test]
    fn until_reports_the_state_and_digest_at_that_position() {
        let dir = tempfile::tempdir().unwrap();
        let reference = write_dir(dir.path(), 0, [0; 32], &[6, 10]);
        let full = verify(dir.path()).unwrap();
        assert_eq!((full.entries, full.position, full.snapshots_checked), (ENTRIES, ENTRIES, 2));
        assert_eq!(full.digest, reference.digests[ENTRIES as usize], "the end's digest is the engine's");
        let line = full.summary();
        assert!(line.contains(&format!(" position={ENTRIES} digest={} ", hex(&full.digest))), "{line}");
        assert_eq!(until(dir.path(), ENTRIES).summary(), line, "--until the end is plain verify");
        for position in 1..ENTRIES {
            let r = until(dir.path(), position);
            assert_eq!((r.entries, r.position), (ENTRIES, position));
            assert_eq!(r.digest, reference.digests[position as usize], "position {position}");
            assert_ne!(r.digest, full.digest, "position {position} is an older state than the end");
            assert_eq!(r.snapshots_checked, [6, 10].iter().filter(|s| **s <= position).count(), "position {position}");
        }
        // Transfers written after position 5 are not in the state at 5.
        let (at5, at13) = (until(dir.path(), 5), until(dir.path(), 13));
        assert!(
            at5.transfers < at13.transfers && at13.transfers < full.transfers,
            "{} {}",
            at5.summary(),
            at13.summary()
        );
    }

    #[test]
    fn a_replica_seeded_after_a_snapshot_has_the_same_digests() {
        let full = tempfile::tempdir().unwrap();
        let reference = write_dir(full.path(), 0, [0; 32], &[]);
        let seeded = tempfile::tempdir().unwrap();
        write_dir(seeded.path(), 6, reference.chains[6], &[9]);
        for position in 6..=ENTRIES {
            let (a, b) = (until(full.path(), position), until(seeded.path(), position));
            assert_eq!(a.digest, b.digest, "position {position}");
            assert_eq!(a.digest, reference.digests[position as usize], "position {position}");
            assert_eq!(b.snapshots_checked, if position >= 9 { 2 } else { 1 }, "position {position}");
        }
        assert_eq!(verify(seeded.path()).unwrap().digest, verify(full.path()).unwrap().digest);
    }

    #[test]
    fn positions_the_directory_cannot_rebuild_are_errors() {
        let full = tempfile::tempdir().unwrap();
        let reference = write_dir(full.path(), 0, [0; 32], &[6]);
        let err = verify_until(full.path(), Some(ENTRIES + 1)).err().unwrap().to_string();
        assert!(
            err.contains(&format!("position {} is beyond the log's end at position {ENTRIES}", ENTRIES + 1)),
            "{err}"
        );
        // A log starting at 1 needs no snapshot, even before the oldest one.
        assert_eq!(until(full.path(), 2).digest, reference.digests[2]);

        let seeded = tempfile::tempdir().unwrap();
        write_dir(seeded.path(), 6, reference.chains[6], &[9, 12]);
        let err = verify_until(seeded.path(), Some(5)).err().unwrap().to_string();
        assert!(err.contains("position 5 is before this directory's log, which starts at position 7"), "{err}");
        assert_eq!(until(seeded.path(), 6).digest, reference.digests[6]);
        // The snapshot it was seeded from is pruned (two are kept): the
        // replay starts at the oldest one kept, and nothing before it can
        // be rebuilt.
        SnapshotStore::open(seeded.path()).unwrap().prune(2).unwrap();
        for position in [6, 8] {
            let err = verify_until(seeded.path(), Some(position)).err().unwrap().to_string();
            assert!(err.contains(&format!("position {position} is before the oldest snapshot")), "{err}");
            assert!(err.contains("at position 9"), "{err}");
        }
        let r = until(seeded.path(), 10);
        assert_eq!((r.digest, r.snapshots_checked), (reference.digests[10], 1));
        assert_eq!(verify(seeded.path()).unwrap().digest, reference.digests[ENTRIES as usize]);
        for position in [9, 12] {
            std::fs::remove_file(seeded.path().join(format!("snapshots/snapshot-{position:020}.manifest"))).unwrap();
        }
        let err = verify_until(seeded.path(), Some(10)).err().unwrap().to_string();
        assert!(err.contains("no snapshot to start the replay from"), "{err}");
    }

    #[test]
    fn a_snapshot_from_another_history_is_refused() {
        let full = tempfile::tempdir().unwrap();
        let reference = write_dir(full.path(), 0, [0; 32], &[]);
        let seeded = tempfile::tempdir().unwrap();
        write_dir(seeded.path(), 6, reference.chains[6], &[]);
        // Replace the snapshot with one of a different state at the same position.
        let mut store = SnapshotStore::open(seeded.path()).unwrap();
        let mut other = Machine::default();
        for position in 1..=6 {
            other.apply_entry(position, timestamp(position), &[]);
        }
        std::fs::remove_file(seeded.path().join(format!("snapshots/snapshot-{:020}.manifest", 6))).unwrap();
        store.write(&other.snapshot(), [7; 32]).unwrap();
        let err = verify_until(seeded.path(), Some(10)).err().unwrap().to_string();
        assert!(err.contains("the snapshot at position 6 does not match the log's hash chain"), "{err}");
    }
}
