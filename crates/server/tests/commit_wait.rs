//! A replica's requests do not wait forever for their entry: if the
//! replicated log confirmed a proposal but never delivers it back, the
//! requests learn after `commit_wait_max` that the outcome is unknown, and
//! the entry still applies normally if it arrives later.
//!
//! Also: an entry the log delivers twice applies once, and a proposal the
//! state refuses (from an older run of the replica) answers its requests
//! with `not_applied`, after which the replica proposes as a newer run.
//!
//! The replicated log here is an in-memory one in this test (the engine,
//! the node and the protocol are the real ones): it can hold entries back,
//! duplicate them or age them, which a real JetStream follower does only
//! when something is broken or someone replays messages.

use bursar_client::{Client, ClientOptions};
use bursar_core::entry::{EntryHeader, Origin};
use bursar_core::{Account, Ledger};
use bursar_proto::ProtocolError;
use bursar_server::message::Committed;
use bursar_server::message::EngineMsg;
use bursar_server::replication::{ReplicaLink, Replicator, ReplicatorError};
use bursar_server::{Node, NodeConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const COMMIT_WAIT_MAX: Duration = Duration::from_millis(500);

/// Commits every proposal in arrival order; while `holding`, committed
/// entries are kept back instead of delivered.
#[derive(Clone, Default)]
struct MemoryLog {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    holding: bool,
    /// Deliver every entry a second time, at the next position.
    duplicating: bool,
    /// Before the next proposal, deliver an empty entry from a newer run
    /// of this replica's node id (as after a restart with the clock set back).
    newer_run_first: bool,
    held: Vec<Committed>,
    engine: Option<mpsc::Sender<EngineMsg>>,
}

impl MemoryLog {
    fn hold(&self) {
        self.inner.lock().unwrap().holding = true;
    }

    /// Delivers what was held back, in order, and stops holding.
    fn release(&self) {
        let mut state = self.inner.lock().unwrap();
        state.holding = false;
        let engine = state.engine.clone().unwrap();
        for c in state.held.drain(..) {
            engine.blocking_send(EngineMsg::Committed(c)).unwrap();
        }
    }
}

impl Replicator for MemoryLog {
    fn start(
        &mut self,
        runtime: &tokio::runtime::Handle,
        after: u64,
        engine: mpsc::Sender<EngineMsg>,
    ) -> Result<ReplicaLink, ReplicatorError> {
        assert_eq!(after, 0, "the test starts from an empty data dir");
        let (proposals, mut rx) = mpsc::channel::<bursar_server::message::Proposal>(16);
        self.inner.lock().unwrap().engine = Some(engine.clone());
        let inner = self.inner.clone();
        runtime.spawn(async move {
            let mut position = 0;
            while let Some(p) = rx.recv().await {
                let (duplicating, newer_run_first) = {
                    let mut state = inner.lock().unwrap();
                    (state.duplicating, std::mem::take(&mut state.newer_run_first))
                };
                if newer_run_first {
                    position += 1;
                    let header = EntryHeader::Origin(Origin { key_id: 1, boot: p.origin.boot + 1, ..p.origin });
                    let c = Committed { position, timestamp: p.timestamp, header, body: bytes::Bytes::new() };
                    engine.send(EngineMsg::Committed(c)).await.unwrap();
                }
                let origin = Origin { key_id: 1, ..p.origin };
                let body = bytes::Bytes::from(p.body);
                for _ in 0..if duplicating { 2 } else { 1 } {
                    position += 1;
                    let header = EntryHeader::Origin(origin);
                    let c = Committed { position, timestamp: p.timestamp, header, body: body.clone() };
                    let deliver = {
                        let mut state = inner.lock().unwrap();
                        if state.holding {
                            state.held.push(c);
                            None
                        } else {
                            Some(c)
                        }
                    };
                    if let Some(c) = deliver {
                        engine.send(EngineMsg::Committed(c)).await.unwrap();
                    }
                }
            }
        });
        Ok(ReplicaLink {
            node_id: 1,
            proposals,
            log_end: 0,
            lease_held: watch::channel(true).1,
            checkpoints: None,
            snapshot_written: None,
            commit_wait_max: COMMIT_WAIT_MAX,
        })
    }
}

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Default::default() }
}

/// A replica on `log` in `dir`, and a client that created ledger 1 through it.
fn start(dir: &tempfile::TempDir, log: &MemoryLog) -> (Node, Client) {
    let mut config = NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.admin_key = Some("commit-wait-admin-key-0123456789abcdef".into());
    let node = Node::start_with(config, Some(Box::new(log.clone()))).expect("the replica starts");
    let key = Some("commit-wait-admin-key-0123456789abcdef".to_string());
    let options = ClientOptions { timeout: Duration::from_secs(30), key, ..Default::default() };
    let mut c = Client::connect(node.local_addr(), &options).unwrap();
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty(), "delivered entries answer normally");
    (node, c)
}

#[test]
fn a_confirmed_entry_never_delivered_gives_outcome_unknown_and_still_applies_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::default();
    let (node, mut c) = start(&dir, &log);

    log.hold();
    let asked = Instant::now();
    let err = c.create_accounts(&[account(2)]).expect_err("an entry never delivered cannot be answered");
    let waited = asked.elapsed();
    assert_eq!(err.protocol_error(), Some(ProtocolError::OutcomeUnknown), "{err}");
    assert!(err.to_string().contains("not seen committed"), "{err}");
    assert!(waited >= COMMIT_WAIT_MAX, "answered after {waited:?}, before the deadline");
    assert_eq!(c.lookup_accounts(&[2]).unwrap().len(), 0, "not applied while held back");

    log.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.lookup_accounts(&[2]).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the late entry was never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.create_accounts(&[account(3)]).unwrap().is_empty(), "the replica serves on");
    node.shutdown();
}

#[test]
fn a_duplicated_entry_applies_once_and_a_stale_run_gets_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::default();
    let (node, mut c) = start(&dir, &log);

    // A replayed copy of a proposal is refused by the state, so the second
    // copy of an account creation neither applies nor answers again.
    log.inner.lock().unwrap().duplicating = true;
    assert!(c.create_accounts(&[account(2)]).unwrap().is_empty(), "the first copy answers");
    log.inner.lock().unwrap().duplicating = false;
    assert_eq!(c.lookup_accounts(&[2]).unwrap().len(), 1);

    // A newer run of this node id reaches the log first: this run's
    // proposal is stale, refused by the state, and its request told so.
    log.inner.lock().unwrap().newer_run_first = true;
    let err = c.create_accounts(&[account(3)]).expect_err("a stale run's entry is refused");
    assert_eq!(err.protocol_error(), Some(ProtocolError::NotApplied), "{err}");
    assert!(!err.is_indefinite(), "nothing was applied: retrying is safe");
    assert_eq!(c.lookup_accounts(&[3]).unwrap().len(), 0, "not applied");
    assert!(c.create_accounts(&[account(3)]).unwrap().is_empty(), "the replica proposes as a newer run");
    assert_eq!(c.lookup_accounts(&[3]).unwrap().len(), 1);
    node.shutdown();

    // The log holds the decisions: a restart replays them to the same state.
    let report = bursar_server::verify::verify(dir.path()).unwrap();
    assert_eq!(report.accounts, 2, "{}", report.summary());
    assert_eq!(report.refused_entries, 2, "the duplicate and the stale entry: {}", report.summary());
}
