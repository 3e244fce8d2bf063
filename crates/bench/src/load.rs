//! Drives load through the client protocol and checks the result.

use super::workload::{BENCH_LEDGER, Distribution, Generator, Ids, Tally, account, bench_ledger};
use anyhow::{Context, bail};
use bursar_client::{Client, ClientOptions, decode_records};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_core::{Account, CreateAccountResult, CreateLedgerResult, EventResult, Operation, Transfer};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LoadParams {
    pub accounts: u64,
    pub transfers: u64,
    pub batch: usize,
    pub distribution: Distribution,
    pub clients: usize,
    pub inflight: usize,
    pub seed: u64,
    pub ids: Ids,
    /// The API key the connections authenticate with.
    pub key: Option<String>,
}

pub struct LoadOutcome {
    pub seconds: f64,
    /// Throughput of the first and of the last tenth of the transfers
    /// (does the state slow down as history grows?).
    pub first_tenth_tps: u64,
    pub last_tenth_tps: u64,
    pub latency_us: Histogram<u64>,
    pub tally: Tally,
}

fn connect(addr: &str, p: &LoadParams) -> anyhow::Result<Client> {
    let options = ClientOptions { timeout: Duration::from_secs(120), key: p.key.clone(), ..Default::default() };
    Client::connect(addr, &options).with_context(|| format!("connecting to {addr}"))
}

/// Creates the bench ledger (unless it exists) and the run's accounts.
pub fn setup(addr: &str, p: &LoadParams) -> anyhow::Result<()> {
    let mut client = connect(addr, p)?;
    let exists = client.list_ledgers(BENCH_LEDGER - 1, 1)?.first().is_some_and(|l| l.id == BENCH_LEDGER);
    if !exists {
        let created = client.create_ledgers(&[bench_ledger()]).map_err(|e| match e.protocol_error() {
            Some(bursar_proto::ProtocolError::Forbidden) => anyhow::anyhow!(
                "the bench ledger {BENCH_LEDGER} does not exist and this key may not create it: \
                 create it with an admin key (POST /v1/ledgers) or pass an admin key"
            ),
            _ => e.into(),
        })?;
        for r in created {
            if r.code != CreateLedgerResult::Exists.code() {
                bail!("creating the bench ledger failed: {:?}", CreateLedgerResult::from_code(r.code));
            }
        }
    }
    let mut start = 0;
    while start < p.accounts {
        let n = (p.accounts - start).min(BATCH_EVENTS_MAX as u64);
        let batch: Vec<Account> = (start..start + n).map(|i| account(&p.ids, i)).collect();
        if let Some(r) = client.create_accounts(&batch)?.first() {
            bail!(
                "creating account {} failed: {:?}",
                batch[r.index as usize].id,
                CreateAccountResult::from_code(r.code)
            );
        }
        start += n;
    }
    Ok(())
}

/// Runs the transfers on `clients` connections; prints progress to stderr
/// every second when `progress` is set.
pub fn run(addr: &str, p: &LoadParams, progress: bool) -> anyhow::Result<LoadOutcome> {
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reporter = progress.then(|| {
        let (acked, done) = (acked.clone(), done.clone());
        std::thread::spawn(move || report_progress(&acked, &done))
    });
    let started = Instant::now();
    let tenths = {
        let (acked, done, total) = (acked.clone(), done.clone(), p.transfers);
        std::thread::spawn(move || watch_tenths(&acked, &done, total, started))
    };
    let per_client = p.transfers.div_ceil(p.clients as u64);
    let handles: Vec<_> = (0..p.clients as u64)
        .map(|c| {
            let (addr, p, acked) = (addr.to_string(), p.clone(), acked.clone());
            let first = (c * per_client).min(p.transfers);
            let last = ((c + 1) * per_client).min(p.transfers);
            std::thread::spawn(move || client_loop(&addr, &p, c, first..last, &acked))
        })
        .collect();
    let mut tally = Tally::new(p.accounts);
    let mut latency = new_histogram();
    let mut failure = None;
    for h in handles {
        match h.join().expect("client threads do not panic") {
            Ok((t, l)) => {
                tally.merge(&t);
                latency.add(&l).expect("histograms share bounds");
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    let marks = tenths.join().expect("the tenths watcher does not panic");
    if let Some(e) = failure {
        return Err(e);
    }
    let tenth_tps = |k: usize| {
        let (from, to) = (marks[k], marks[k + 1]);
        let transfers = tenth_boundary(p.transfers, k + 1) - tenth_boundary(p.transfers, k);
        (transfers as f64 / (to - from).as_secs_f64().max(1e-6)) as u64
    };
    Ok(LoadOutcome { seconds, first_tenth_tps: tenth_tps(0), last_tenth_tps: tenth_tps(9), latency_us: latency, tally })
}

/// The number of transfers at the end of tenth `k` (0 to 10).
fn tenth_boundary(total: u64, k: usize) -> u64 {
    total * k as u64 / 10
}

/// When the acknowledged count passed each tenth of `total`: 11 instants
/// (the start, then the end of each tenth), sampled every 5 ms; tenths not
/// reached by the end (a failed run) get the end time.
fn watch_tenths(acked: &AtomicU64, done: &AtomicBool, total: u64, started: Instant) -> Vec<Duration> {
    let mut marks = vec![Duration::ZERO];
    while marks.len() < 11 {
        let finished = done.load(Ordering::Acquire);
        let now = acked.load(Ordering::Relaxed);
        while marks.len() < 11 && now >= tenth_boundary(total, marks.len()) {
            marks.push(started.elapsed());
        }
        if finished {
            marks.resize(11, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    marks
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

type ClientResult = anyhow::Result<(Tally, Histogram<u64>)>;

fn client_loop(
    addr: &str,
    p: &LoadParams,
    client: u64,
    range: std::ops::Range<u64>,
    acked: &AtomicU64,
) -> ClientResult {
    let mut conn = connect(addr, p)?;
    let mut generator =
        Generator::new(p.distribution, p.accounts, p.seed.wrapping_mul(0x9E37_79B9).wrapping_add(client));
    let mut tally = Tally::new(p.accounts);
    let mut latency = new_histogram();
    let mut in_flight: VecDeque<(Instant, Vec<Transfer>)> = VecDeque::new();
    let mut spare: Vec<Vec<Transfer>> = (0..p.inflight).map(|_| Vec::with_capacity(p.batch)).collect();
    let mut next = range.start;
    while next < range.end || !in_flight.is_empty() {
        while in_flight.len() < p.inflight && next < range.end {
            let count = (range.end - next).min(p.batch as u64) as usize;
            let mut batch = spare.pop().unwrap_or_default();
            generator.fill(&p.ids, next, count, &mut batch);
            conn.send(Operation::CreateTransfers as u8, bytemuck_bytes(&batch), count as u32)?;
            in_flight.push_back((Instant::now(), batch));
            next += count as u64;
        }
        let reply = conn.receive()?;
        let (sent, batch) = in_flight.pop_front().expect("a reply answers a request in flight");
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        let results: Vec<EventResult> = decode_records(&reply)?;
        tally.record(&p.ids, &batch, &results);
        acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
        spare.push(batch);
    }
    Ok((tally, latency))
}

fn bytemuck_bytes(batch: &[Transfer]) -> &[u8] {
    bursar_core::records::encode_all(batch)
}

pub(super) fn report_progress(acked: &AtomicU64, done: &AtomicBool) {
    let mut last = 0;
    let mut last_time = Instant::now();
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if last_time.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let now = acked.load(Ordering::Relaxed);
        let tps = (now - last) as f64 / last_time.elapsed().as_secs_f64();
        eprintln!("progress: acked={now} tps={}", tps as u64);
        last = now;
        last_time = Instant::now();
    }
}

/// Looks every account of the run up and compares it with the tally.
pub fn check_balances(addr: &str, p: &LoadParams, tally: &Tally) -> anyhow::Result<()> {
    let mut client = connect(addr, p)?;
    let mut accounts = Vec::with_capacity(p.accounts as usize);
    let mut start = 0;
    while start < p.accounts {
        let n = (p.accounts - start).min(BATCH_EVENTS_MAX as u64);
        let ids: Vec<u128> = (start..start + n).map(|i| p.ids.account(i)).collect();
        accounts.extend(client.lookup_accounts(&ids)?);
        start += n;
    }
    tally.check(&p.ids, &accounts).map_err(|e| anyhow::anyhow!("balance check failed: {e}"))
}
