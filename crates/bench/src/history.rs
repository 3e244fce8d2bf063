//! `bursar bench history --data-dir DIR`: how fast a server holding a long
//! history answers reads of its old part, which lives on disk (cold
//! snapshot chunks read through the block cache, stored index tables).
//!
//! The data directory is one an earlier run wrote (`bursar bench
//! --data-dir`, `bursar bench recovery --data-dir`); it is opened by an
//! embedded node, so `rss_mb` is the memory of a server holding all of it.
//! Ids differ per run, so the bench finds its own: it samples transfers at
//! random positions of the first half of the change journal (the oldest
//! history), one `GetEvents` read each. Those reads pull the sampled
//! records' blocks into the block cache, so the node is then restarted with
//! an empty cache and only then are the reads timed, one request at a time
//! over the binary protocol, as a client sees them:
//! - single-id lookups of the sampled transfers;
//! - pages of 100 of an account's transfers, starting at a sampled
//!   transfer of that account (a random point of its history).
//!
//! Every answer is checked: a lookup returns the transfer asked for; a page
//! starts at the sampled transfer, is ordered by time and holds only the
//! account's transfers.

use anyhow::{Context, bail, ensure};
use bursar_client::{Client, ClientOptions};
use bursar_core::events::{EventFilter, WIRE_HEADER, kind};
use bursar_core::records::filter_flags as FF;
use bursar_core::service::keys::Role;
use bursar_core::{AccountFilter, Operation, Transfer};
use bursar_server::limits::{CACHE_BYTES_DEFAULT, CACHE_MIB_MAX, CACHE_MIB_MIN};
use bursar_server::{Node, NodeConfig};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most timed lookups (one request each, one at a time).
const LOOKUPS_MAX: u64 = 1_000_000;
/// Most timed account pages.
const PAGES_MAX: u64 = 100_000;
/// Transfers per timed account page (the target is for 100).
const PAGE_TRANSFERS: u32 = 100;
/// Sampling reads per wanted sample before giving up: a read that lands
/// where no transfer follows within the engine's scan bound finds none.
const SAMPLE_ATTEMPTS_PER_SAMPLE_MAX: usize = 4;
/// The change-journal kinds that name a transfer as created (an expiry
/// names one created earlier, so it is left out).
const TRANSFER_KINDS: u32 = (1 << kind::TRANSFER_POSTED) | (1 << kind::TRANSFER_PENDING) | (1 << kind::TRANSFER_VOIDED);

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// A data directory written by an earlier run (`bursar bench
    /// --data-dir DIR`, or `bursar bench recovery --data-dir DIR`).
    #[arg(long)]
    data_dir: PathBuf,
    /// MiB of block cache of the embedded server (as `bursar start --cache-mib`).
    #[arg(long, default_value_t = CACHE_BYTES_DEFAULT >> 20,
          value_parser = clap::value_parser!(u64).range(CACHE_MIB_MIN..=CACHE_MIB_MAX))]
    cache_mib: u64,
    /// Single-id lookups of random old transfers to time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=LOOKUPS_MAX))]
    lookups: u64,
    /// Pages of 100 of an account's transfers to time.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=PAGES_MAX))]
    pages: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A transfer found in the old history, and one of its two accounts.
#[derive(Clone, Copy, Debug)]
struct Sample {
    id: u128,
    timestamp: u64,
    account: u128,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<()> {
    // A node would create an empty data directory where none is: refuse
    // instead of timing reads of nothing.
    ensure!(
        args.data_dir.join("log").is_dir(),
        "{} holds no Bursar log: pass a data directory written by `bursar bench --data-dir`",
        args.data_dir.display()
    );
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let node = start(&args)?;
    let transfers = node.report().transfers;
    let sampled = sample(&node, (args.lookups + args.pages) as usize, &mut rng);
    node.shutdown();
    let sampled = sampled?;
    let (lookup_samples, page_samples) = sampled.split_at(args.lookups as usize);

    // Restarted: the block cache is empty again, so the sampling reads do
    // not make the timed ones cache hits.
    let restarted = Instant::now();
    let node = start(&args)?;
    let recovery_seconds = restarted.elapsed().as_secs_f64();
    ensure!(
        node.report().transfers == transfers,
        "the data directory held {transfers} transfers, then {} after a restart",
        node.report().transfers
    );
    let timed = time_reads(&node, lookup_samples, page_samples);
    let rss_mb = super::peak_rss_mb();
    node.shutdown();
    let (lookups, pages) = timed?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "history: transfers={transfers} lookup_p99_ms={:.3} account_page_p99_ms={:.3} rss_mb={rss_mb} \
         lookup_p50_ms={:.3} account_page_p50_ms={:.3} lookup_max_ms={:.3} account_page_max_ms={:.3} \
         lookups={} pages={} cache_mib={} recovery_seconds={recovery_seconds:.2}",
        ms(&lookups, 0.99),
        ms(&pages, 0.99),
        ms(&lookups, 0.50),
        ms(&pages, 0.50),
        lookups.max() as f64 / 1000.0,
        pages.max() as f64 / 1000.0,
        lookups.len(),
        pages.len(),
        args.cache_mib,
    );
    Ok(())
}

/// Opens the data directory with an embedded node (binary protocol on a
/// free local port, no HTTP).
fn start(args: &HistoryArgs) -> anyhow::Result<Node> {
    let mut config = NodeConfig::new(args.data_dir.clone(), "127.0.0.1:0".parse()?);
    config.cache_bytes = args.cache_mib << 20;
    let node =
        Node::start(config).with_context(|| format!("starting an embedded server in {}", args.data_dir.display()))?;
    eprintln!(
        "history: embedded server on {} holding {} transfers (data dir {}, started in {:.1} s)",
        node.local_addr(),
        node.report().transfers,
        args.data_dir.display(),
        node.report().recovery.as_secs_f64()
    );
    Ok(node)
}

/// `count` transfers from random positions of the first half of the change
/// journal, each with one of its accounts picked at random.
fn sample(node: &Node, count: usize, rng: &mut SmallRng) -> anyhow::Result<Vec<Sample>> {
    let handle = node.handle();
    let engine = handle.engine_handle();
    let events = |after: u64| -> anyhow::Result<(u64, Option<Transfer>)> {
        let filter = EventFilter { after, limit: 1, kinds: TRANSFER_KINDS, reserved: [0; 16] };
        let body = bytemuck::bytes_of(&filter).to_vec();
        let response = handle.runtime.block_on(engine.request(Operation::GetEvents, body))?;
        first_transfer(&response.body, response.count)
    };
    // After the last event, the page is empty and `next_after` is the
    // journal's length.
    let (journal_len, _) = events(u64::MAX)?;
    let half = journal_len / 2;
    ensure!(half > 0, "the data directory's change journal is empty: it holds no history to read");
    let mut out = Vec::with_capacity(count);
    let attempts_max = count * SAMPLE_ATTEMPTS_PER_SAMPLE_MAX;
    for _ in 0..attempts_max {
        if out.len() == count {
            break;
        }
        let Some(t) = events(rng.random_range(0..half))?.1 else { continue };
        let account = if rng.random_bool(0.5) { t.debit_account_id } else { t.credit_account_id };
        out.push(Sample { id: t.id, timestamp: t.timestamp, account });
    }
    ensure!(
        out.len() == count,
        "found {} of {count} transfers in {attempts_max} reads of the first half of a journal of {journal_len} events",
        out.len()
    );
    eprintln!("history: sampled {count} transfers from the first {half} of {journal_len} events");
    Ok(out)
}

/// The page's `next_after` and its first transfer, from a `GetEvents`
/// reply of at most one event (see `Machine::events_page`).
fn first_transfer(body: &[u8], count: u32) -> anyhow::Result<(u64, Option<Transfer>)> {
    ensure!(body.len() >= 8, "an events reply of {} bytes has no next_after", body.len());
    let next_after = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    if count == 0 {
        return Ok((next_after, None));
    }
    let payload = body.get(8 + WIRE_HEADER..).unwrap_or_default();
    ensure!(payload.len() >= Transfer::SIZE, "a transfer event of {} payload bytes", payload.len());
    Ok((next_after, Some(bytemuck::pod_read_unaligned(&payload[..Transfer::SIZE]))))
}

/// Times the lookups, then the pages, one request at a time.
fn time_reads(node: &Node, lookups: &[Sample], pages: &[Sample]) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let key = node.create_key(Role::Operator, &[], "bench history")?;
    let options = ClientOptions { timeout: Duration::from_secs(120), key: Some(key), ..Default::default() };
    let addr = node.local_addr();
    let mut client = Client::connect(addr, &options).with_context(|| format!("connecting to {addr}"))?;
    let mut lookup_us = new_histogram();
    for s in lookups {
        let started = Instant::now();
        let found = client.lookup_transfers(&[s.id])?;
        lookup_us.saturating_record(started.elapsed().as_micros() as u64);
        check_lookup(s, &found)?;
    }
    let mut page_us = new_histogram();
    for s in pages {
        let filter = AccountFilter {
            account_id: s.account,
            timestamp_min: s.timestamp,
            limit: PAGE_TRANSFERS,
            flags: FF::DEBITS | FF::CREDITS,
            ..Default::default()
        };
        let started = Instant::now();
        let page = client.get_account_transfers(&filter)?;
        page_us.saturating_record(started.elapsed().as_micros() as u64);
        check_page(s, &page)?;
    }
    Ok((lookup_us, page_us))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A lookup of a sampled id returns that transfer, as it was sampled.
fn check_lookup(s: &Sample, found: &[Transfer]) -> anyhow::Result<()> {
    match found {
        [t] if t.id == s.id && t.timestamp == s.timestamp => Ok(()),
        [t] => bail!(
            "looking up transfer {:#x} (timestamp {}) returned transfer {:#x} (timestamp {})",
            s.id,
            s.timestamp,
            t.id,
            t.timestamp
        ),
        _ => bail!("looking up transfer {:#x} returned {} transfers, not 1", s.id, found.len()),
    }
}

/// A page from a sampled transfer's timestamp starts with that transfer,
/// holds only the account's transfers, in strictly increasing time, and at
/// most a page's worth.
fn check_page(s: &Sample, page: &[Transfer]) -> anyhow::Result<()> {
    let what = || format!("the page of account {:#x} from timestamp {}", s.account, s.timestamp);
    let Some(first) = page.first() else { bail!("{} is empty", what()) };
    ensure!(first.id == s.id, "{} starts with transfer {:#x}, not {:#x}", what(), first.id, s.id);
    ensure!(page.len() <= PAGE_TRANSFERS as usize, "{} holds {} transfers", what(), page.len());
    for pair in page.windows(2) {
        ensure!(pair[0].timestamp < pair[1].timestamp, "{} is not in time order at {:#x}", what(), pair[1].id);
    }
    if let Some(t) = page.iter().find(|t| t.debit_account_id != s.account && t.credit_account_id != s.account) {
        bail!("{} holds transfer {:#x}, which does not move the account's money", what(), t.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u128, timestamp: u64, debit: u128, credit: u128) -> Transfer {
        Transfer { id, timestamp, debit_account_id: debit, credit_account_id: credit, ..Default::default() }
    }

    #[test]
    fn pages_are_checked_for_start_order_and_account() {
        let s = Sample { id: 1, timestamp: 10, account: 7 };
        assert!(check_page(&s, &[transfer(1, 10, 7, 8), transfer(2, 11, 9, 7)]).is_ok());
        assert!(check_page(&s, &[]).is_err());
        assert!(check_page(&s, &[transfer(2, 11, 7, 8)]).is_err());
        assert!(check_page(&s, &[transfer(1, 10, 7, 8), transfer(2, 10, 7, 8)]).is_err());
        assert!(check_page(&s, &[transfer(1, 10, 7, 8), transfer(2, 11, 8, 9)]).is_err());
    }

    #[test]
    fn lookups_are_checked_for_the_id_asked() {
        let s = Sample { id: 1, timestamp: 10, account: 7 };
        assert!(check_lookup(&s, &[transfer(1, 10, 7, 8)]).is_ok());
        assert!(check_lookup(&s, &[transfer(2, 10, 7, 8)]).is_err());
        assert!(check_lookup(&s, &[]).is_err());
    }

    #[test]
    fn an_events_reply_decodes_to_its_transfer() {
        let t = transfer(5, 99, 1, 2);
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; WIRE_HEADER]);
        body.extend_from_slice(bytemuck::bytes_of(&t));
        body.extend_from_slice(&[0; 16]);
        let (next, found) = first_transfer(&body, 1).unwrap();
        assert_eq!((next, found.map(|t| (t.id, t.timestamp))), (42, Some((5, 99))));
        assert_eq!(first_transfer(&body[..8], 0).unwrap().1.map(|t| t.id), None);
        assert!(first_transfer(&body[..40], 1).is_err());
        assert!(first_transfer(&[], 0).is_err());
    }
}
