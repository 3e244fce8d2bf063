//! Cache size is not state: three real `bursar start --cluster` replicas
//! on a 3-node NATS cluster, with block caches of 1, 8 and 256 MiB, small
//! snapshots (so history goes cold and ids move to stored tables during the
//! test) and a digest checkpoint every few positions. The replicas must
//! agree, entry for entry, on the state digest each records for the
//! divergence guard (`BURSAR_DIGESTS`, MAC checked with the cluster key),
//! also at positions where old records were read back from disk while
//! applying (posting and voiding long-cold pending transfers,
//! re-submitting old and failed ids); old lookups and account pages must
//! be identical everywhere; and the 1 MiB replica, killed with SIGKILL and
//! started again on its data dir, must come back to the same digests.
//!
//! Needs `nats-server` (fails, never skips, when it is missing).

mod cluster_common;
#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use async_nats::jetstream;
use bursar_client::Client;
use bursar_cluster::ClusterKeys;
use bursar_cluster::digest_guard::open_record;
use bursar_core::records::{BATCH_EVENTS_MAX, filter_flags, transfer_flags};
use bursar_core::{Account, AccountFilter, CreateTransferResult, Ledger, Transfer};
use bursar_testkit::nats_cluster::NatsCluster;
use cluster_common::{CLUSTER_KEY, Replica, connect, field, start, verify, wait_for};
use process_common::Proc;
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-cache-sizes-admin-key-01";
/// `--cache-mib` of replicas 1, 2 and 3.
const CACHE_MIB: [u64; 3] = [1, 8, 256];
/// Replicas record their digest at every multiple of this position.
const CHECKPOINT_EVERY: u64 = 2;
const ACCOUNTS: u128 = 64;
const BATCH: u64 = BATCH_EVENTS_MAX as u64;
/// Full batches loaded first: a bit over four transfer-arena chunks
/// (65,536 transfers each), so snapshots send at least two of them cold.
const LOAD_BATCHES: u64 = 33;
/// Transfers of the first batch with an id that is a multiple of this are
/// pending; half of them are posted and half voided once they are cold.
const PENDING_EVERY: u64 = 10;
/// Ids rejected (`debit_account_not_found`) right after the first batch;
/// their re-submission, long after, must answer `id_already_failed`.
const FAILED_IDS: std::ops::Range<u64> = 1_000_000_000..1_000_000_016;
/// Name of the divergence guard's bucket and of the log stream.
const DIGEST_BUCKET: &str = "BURSAR_DIGESTS";
const LOG_STREAM: &str = "BURSAR_LOG";

fn extra_args(replica: usize) -> Vec<String> {
    let cache = CACHE_MIB[replica].to_string();
    let every = CHECKPOINT_EVERY.to_string();
    ["--cache-mib", &cache, "--snapshot-every-mib", "1", "--cluster-checkpoint-every", &every]
        .map(String::from)
        .to_vec()
}

fn start_replica(r: &Replica, urls: &str, i: usize) -> Proc {
    let args = extra_args(i);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(r, urls, ADMIN, &args)
}

fn setup(c: &mut Client) {
    let usd = Ledger { id: 1, scale: 2, asset: Ledger::pack_asset("USD").unwrap(), ..Default::default() };
    assert!(c.create_ledgers(&[usd]).unwrap().is_empty());
    let accounts: Vec<Account> =
        (1..=ACCOUNTS).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    assert!(c.create_accounts(&accounts).unwrap().is_empty());
}

/// Transfer `id` of the load: accounts spread by id, every
/// `PENDING_EVERY`th one of the first batch pending.
fn transfer(id: u64) -> Transfer {
    let dr = 1 + u128::from(id * 7919) % ACCOUNTS;
    let cr = 1 + (dr + u128::from(id % 61)) % ACCOUNTS;
    let cr = if cr == dr { 1 + dr % ACCOUNTS } else { cr };
    let pending = id <= BATCH && id.is_multiple_of(PENDING_EVERY);
    Transfer {
        id: u128::from(id),
        debit_account_id: dr,
        credit_account_id: cr,
        amount: u128::from(1 + id % 1000),
        ledger: 1,
        code: 1,
        flags: if pending { transfer_flags::PENDING } else { 0 },
        ..Default::default()
    }
}

/// Writes `batches` full batches, ids from `*next`; after the first batch
/// of all, the ids in `FAILED_IDS` are rejected once.
fn load(c: &mut Client, batches: u64, next: &mut u64) {
    for _ in 0..batches {
        let batch: Vec<Transfer> = (*next..*next + BATCH).map(transfer).collect();
        let results = c.create_transfers(&batch).unwrap();
        assert!(results.is_empty(), "valid transfers were rejected: {:?}", &results[..results.len().min(3)]);
        if *next == 1 {
            let bad: Vec<Transfer> =
                FAILED_IDS.map(|id| Transfer { debit_account_id: 999_999, ..transfer(id) }).collect();
            let results = c.create_transfers(&bad).unwrap();
            let not_found = CreateTransferResult::DebitAccountNotFound as u32;
            assert!(results.len() == bad.len() && results.iter().all(|r| r.code == not_found), "{results:?}");
        }
        *next += BATCH;
    }
}

/// Once the first batch is cold: posts half of its pending transfers,
/// voids the other half, re-submits old transfers and failed ids. Applying
/// these reads old records and ids back from disk on every replica.
fn settle_old(c: &mut Client, next: &mut u64) {
    let pending: Vec<u64> = (PENDING_EVERY..=BATCH).step_by(PENDING_EVERY as usize).collect();
    let settle: Vec<Transfer> = pending
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let void = i % 2 == 1;
            let flags = if void { transfer_flags::VOID_PENDING } else { transfer_flags::POST_PENDING };
            let amount = if void { 0 } else { u128::MAX };
            Transfer {
                id: u128::from(*next + i as u64),
                pending_id: u128::from(p),
                amount,
                flags,
                ..Default::default()
            }
        })
        .collect();
    *next += settle.len() as u64;
    let results = c.create_transfers(&settle).unwrap();
    assert!(results.is_empty(), "settling cold pending transfers failed: {:?}", &results[..results.len().min(3)]);

    let again: Vec<Transfer> = (1..=200).filter(|id: &u64| !id.is_multiple_of(PENDING_EVERY)).map(transfer).collect();
    let results = c.create_transfers(&again).unwrap();
    let exists = CreateTransferResult::Exists as u32;
    assert!(results.len() == again.len() && results.iter().all(|r| r.code == exists), "{results:?}");
    let failed: Vec<Transfer> = FAILED_IDS.map(|id| Transfer { debit_account_id: 999_999, ..transfer(id) }).collect();
    let results = c.create_transfers(&failed).unwrap();
    let already = CreateTransferResult::IdAlreadyFailed as u32;
    assert!(results.len() == failed.len() && results.iter().all(|r| r.code == already), "{results:?}");
}

/// The value of a gauge on replica `r`'s `/metrics` (0 if absent or unreachable).
fn gauge(r: &Replica, name: &str) -> f64 {
    let http = r.http.as_deref().expect("the replicas serve HTTP");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let text = agent
        .get(format!("http://{http}/metrics"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .call()
        .ok()
        .and_then(|mut resp| resp.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Waits until replica `r` holds history on disk: at least two chunks cold
/// and the ids of the first chunk in stored tables.
fn wait_history_on_disk(r: &Replica, procs: &mut [Proc]) {
    wait_for(&format!("replica {}: history cold and ids stored", r.node), Duration::from_secs(120), || {
        assert_running(procs);
        gauge(r, "bursar_state_cold_chunks") >= 2.0 && gauge(r, "bursar_state_ids_stored_below") >= 65_536.0
    });
    eprintln!(
        "replica {} (--cache-mib {}): cold_chunks={} ids_stored_below={} {}",
        r.node,
        CACHE_MIB[r.node as usize - 1],
        gauge(r, "bursar_state_cold_chunks"),
        gauge(r, "bursar_state_ids_stored_below"),
        cache_line(r),
    );
}

/// Replica `r`'s block cache figures, for the test's output.
fn cache_line(r: &Replica) -> String {
    format!(
        "cache_misses={} cache_evictions={} cache_hit_ratio={:.3}",
        gauge(r, "bursar_block_cache_misses_total"),
        gauge(r, "bursar_block_cache_evictions_total"),
        gauge(r, "bursar_block_cache_hit_ratio"),
    )
}

/// Resident memory of a replica process in MiB (Linux), for the output.
fn rss_mib(proc: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.child.id())).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok());
    kib.unwrap_or(0u64) >> 10
}

/// The test's view of the divergence guard's records and the log stream.
struct Digests {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    keys: ClusterKeys,
}

impl Digests {
    fn new(urls: &str) -> Digests {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let js = rt.block_on(bursar_testkit::jetstream::connect_pinned(urls, Duration::from_secs(5)));
        Digests { rt, js, keys: ClusterKeys::parse(CLUSTER_KEY).unwrap() }
    }

    /// The log's last committed position (the stream's last sequence).
    fn log_end(&self) -> u64 {
        self.rt.block_on(async {
            let mut stream = self.js.get_stream(LOG_STREAM).await.expect("the log stream exists");
            stream.info().await.expect("the log stream's info").state.last_sequence
        })
    }

    /// What each replica recorded at `position` (`None`: nothing yet). A
    /// record whose MAC does not verify fails the test.
    fn at(&self, position: u64) -> [Option<[u8; 32]>; 3] {
        self.rt.block_on(async {
            let kv = match self.js.get_key_value(DIGEST_BUCKET).await {
                Ok(kv) => kv,
                Err(_) => return [None; 3],
            };
            let mut out = [None; 3];
            for (node, slot) in (1..=3).zip(out.iter_mut()) {
                let key = format!("d.{position:020}.{node}");
                if let Ok(Some(value)) = kv.get(&key).await {
                    let digest = open_record(&self.keys, DIGEST_BUCKET, &key, &value)
                        .unwrap_or_else(|why| panic!("{key}: the record does not verify: {why}"));
                    *slot = Some(digest);
                }
            }
            out
        })
    }

    /// Waits until all three replicas recorded a digest at a checkpoint
    /// after `after` (failing if one exits), then asserts that at every
    /// checkpoint all three recorded, their digests are equal. Returns the
    /// newest such position and how many beyond `after` were compared.
    fn assert_equal_after(&self, after: u64, procs: &mut [Proc]) -> (u64, usize) {
        let first = (after / CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY;
        assert!(self.log_end() >= first, "the test must write at least {CHECKPOINT_EVERY} entries after {after}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.at(first).iter().all(Option::is_some) {
            assert_running(procs);
            let recorded = show(&self.at(first));
            assert!(Instant::now() < deadline, "not every replica recorded a digest at {first} in 120 s: {recorded}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let (mut newest, mut compared) = (first, 0);
        let mut position = CHECKPOINT_EVERY;
        while position <= self.log_end() {
            let digests = self.at(position);
            if let [Some(a), Some(b), Some(c)] = digests {
                assert!(
                    a == b && b == c,
                    "replicas record different digests at position {position}: {}",
                    show(&digests)
                );
                if position >= first {
                    (newest, compared) = (position, compared + 1);
                }
            }
            position += CHECKPOINT_EVERY;
        }
        (newest, compared)
    }
}

fn show(digests: &[Option<[u8; 32]>; 3]) -> String {
    let hex = |d: &[u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let each =
        digests.iter().enumerate().map(|(i, d)| format!("node {}: {}", i + 1, d.as_ref().map_or("-".into(), hex)));
    each.collect::<Vec<_>>().join(", ")
}

/// What every replica must answer identically: the first transfers and a
/// sample across history, account 1's oldest page and its newest.
fn old_reads(c: &mut Client) -> (Vec<Transfer>, Vec<Transfer>, Vec<Transfer>) {
    let ids: Vec<u128> = (1..=1000).chain((1001..LOAD_BATCHES * BATCH).step_by(997)).map(u128::from).collect();
    let found = c.lookup_transfers(&ids).unwrap();
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), ids, "every old transfer is found, in order");
    let page = |flags| AccountFilter {
        account_id: 1,
        limit: 1000,
        flags: filter_flags::DEBITS | filter_flags::CREDITS | flags,
        ..Default::default()
    };
    let oldest = c.get_account_transfers(&page(0)).unwrap();
    let newest = c.get_account_transfers(&page(filter_flags::REVERSED)).unwrap();
    assert_eq!(oldest.len(), 1000, "account 1 has more than a page of old transfers");
    (found, oldest, newest)
}

/// Every account's balances, by id.
fn balances(c: &mut Client) -> Vec<[u128; 4]> {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = c.lookup_accounts(&ids).unwrap();
    assert_eq!(accounts.len(), ACCOUNTS as usize);
    accounts.iter().map(|a| [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]).collect()
}

/// Replica `r` (client `c`) answers exactly what replica 2 (`reference`)
/// does, once it has caught up with its balances.
fn assert_same_reads(r: &Replica, c: &mut Client, reference: &mut Client) {
    let expected = balances(reference);
    wait_for(&format!("replica {} has replica 2's balances", r.node), Duration::from_secs(60), || {
        balances(c) == expected
    });
    assert!(expected.iter().all(|b| b[0] == 0 && b[2] == 0), "every pending transfer was settled");
    let (want, got) = (old_reads(reference), old_reads(c));
    assert!(want.0 == got.0, "replica {}: old lookups differ from replica 2's", r.node);
    assert!(want.1 == got.1, "replica {}: account 1's oldest page differs from replica 2's", r.node);
    assert!(want.2 == got.2, "replica {}: account 1's newest page differs from replica 2's", r.node);
}

/// Fails, with the end of its log, if a replica exited (code 76: the
/// divergence guard stopped it).
fn assert_running(procs: &mut [Proc]) {
    for (i, proc) in procs.iter_mut().enumerate() {
        if let Some(status) = proc.child.try_wait().unwrap() {
            let text = proc.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            panic!("replica {} exited with {status} (76: a divergence); the end of its log:\n{tail}", i + 1);
        }
    }
}

#[test]
fn replicas_with_1_8_and_256_mib_caches_record_equal_state_digests() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(&tmp.path().join("nats"), 3)
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let urls = nats.urls();
    let replicas: Vec<Replica> = (1..=3).map(|node| Replica::new(tmp.path(), node, true)).collect();
    let mut procs: Vec<Proc> = replicas.iter().enumerate().map(|(i, r)| start_replica(r, &urls, i)).collect();
    let digests = Digests::new(&urls);
    // Writes go through replica 2, which stays up.
    let mut c2 = connect(&replicas[1].addr, ADMIN).unwrap();
    setup(&mut c2);
    let mut next = 1;
    load(&mut c2, LOAD_BATCHES, &mut next);
    replicas.iter().for_each(|r| wait_history_on_disk(r, &mut procs));
    eprintln!("loaded {} transfers, history on disk everywhere after {:?}", next - 1, started.elapsed());

    // Every replica's state now has cold chunks and stored ids; what is
    // applied from here on reads them back, each through its own cache.
    let cold_from = digests.log_end();
    settle_old(&mut c2, &mut next);
    load(&mut c2, 2, &mut next);
    let (at, compared) = digests.assert_equal_after(cold_from, &mut procs);
    eprintln!("equal digests at {compared} checkpoints after position {cold_from} (up to {at})");
    for r in &replicas {
        let mut c = connect(&r.addr, ADMIN).unwrap();
        assert_same_reads(r, &mut c, &mut c2);
        eprintln!("replica {}: old lookups and account pages equal; {}", r.node, cache_line(r));
    }
    assert_running(&mut procs);

    // SIGKILL the 1 MiB replica and write on without it; started again on
    // its data dir it recovers from its own snapshot (history on disk
    // again) and the log, catches up from the stream and must record the
    // digests the others record.
    procs.remove(0).kill_hard();
    load(&mut c2, 2, &mut next);
    procs.insert(0, start_replica(&replicas[0], &urls, 0));
    let log = std::fs::read_to_string(&replicas[0].log).unwrap();
    assert!(!log.contains("bootstrapped from the cluster's snapshot"), "replica 1 recovers from its own data dir");
    let back_from = digests.log_end();
    load(&mut c2, 2 * CHECKPOINT_EVERY, &mut next);
    wait_history_on_disk(&replicas[0], &mut procs);
    let (at, compared) = digests.assert_equal_after(back_from, &mut procs);
    eprintln!("after the restart: equal digests at {compared} checkpoints after position {back_from} (up to {at})");
    let mut c1 = connect(&replicas[0].addr, ADMIN).unwrap();
    assert_same_reads(&replicas[0], &mut c1, &mut c2);
    assert_running(&mut procs);
    for (r, proc) in replicas.iter().zip(&procs) {
        let digest_s = gauge(r, "bursar_cluster_digest_seconds_sum");
        let mib = CACHE_MIB[r.node as usize - 1];
        eprintln!("replica {} (--cache-mib {mib}): rss_mib={} digest_seconds={digest_s:.3}", r.node, rss_mib(proc));
    }

    // Offline, each stopped replica's data dir replays (its whole log, with
    // the default cache) to the very digest the running replicas recorded.
    procs.into_iter().for_each(Proc::stop_clean);
    let recorded = digests.at(at)[0].expect("recorded above");
    let hex: String = recorded.iter().map(|b| format!("{b:02x}")).collect();
    for r in &replicas {
        let summary = verify(&r.dir, Some(at));
        assert_eq!(
            field(&summary, "digest"),
            hex,
            "replica {}: bursar verify --until {at} differs from the guard",
            r.node
        );
    }
    eprintln!("{} transfers; done in {:?}", next - 1, started.elapsed());
}
