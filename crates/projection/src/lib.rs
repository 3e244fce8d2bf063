//! Bursar's PostgreSQL read model (CQRS): follows the server's change stream
//! (`GET /v1/events`, docs/events.md) and keeps SQL tables of ledgers,
//! accounts with balances, transfers, orders and daily balances
//! (docs/projection.md).
//!
//! Exactly once: every batch of events is applied in one PostgreSQL
//! transaction that also moves the stored cursor, and a batch applies only
//! if the stored cursor is where it starts. After any crash the projection
//! resumes from the stored cursor. Fetching overlaps applying: a fetcher
//! thread long-polls the server and hands decoded pages to the applier over
//! a bounded channel.

pub mod apply;
pub mod events;
pub mod pg_tls;
pub mod schema;

use apply::{ApplyError, Batch, pg_error};
use events::Page;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events per page asked of the server (its maximum).
pub const PAGE_LIMIT: usize = 1000;
/// Types the read model uses; the server skips the others and still
/// advances `next_after` past them.
const TYPES: &str = "ledger,account,transfer,order";
/// Longest wait between two tries against a server or database that is down.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Config {
    /// A libpq-style connection string or `postgresql://` URL (with
    /// `sslmode` and `sslrootcert`, see [`pg_tls`]).
    pub pg_url: String,
    /// TLS options that win over the connection string's.
    pub pg_tls: pg_tls::PgTlsOptions,
    /// Base URL of the server's HTTP API.
    pub server_url: String,
    /// An API key allowed to read events (admin or unrestricted auditor).
    pub key: Option<String>,
    /// Most events applied in one transaction.
    pub batch: usize,
    /// Empty the read model and replay from the first event.
    pub rebuild: bool,
    /// Long poll of one events request, in milliseconds.
    pub wait_ms: u64,
    /// Print progress and retries to stderr.
    pub verbose: bool,
}

impl Config {
    pub fn new(pg_url: String, server_url: String, key: Option<String>) -> Config {
        Config {
            pg_url,
            pg_tls: Default::default(),
            server_url,
            key,
            batch: 100_000,
            rebuild: false,
            wait_ms: 5000,
            verbose: true,
        }
    }
}

/// Shared with the caller: ask to stop, watch the applied cursor.
#[derive(Default)]
pub struct Control {
    pub stop: AtomicBool,
    /// The last sequence number applied and committed.
    pub applied: AtomicU64,
    /// Events applied since the start of this process.
    pub events: AtomicU64,
    /// The last error met, for callers that report it.
    pub last_error: Mutex<Option<String>>,
}

/// Why the projection stopped, or why one session of it failed (then it
/// retries). Never quotes the connection string.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    #[error("--server must start with http:// or https://, not {base:?}")]
    ServerUrl { base: String },
    #[error(transparent)]
    Connect(#[from] pg_tls::PgConnectError),
    #[error("{}", pg_error(.0))]
    Pg(#[from] postgres::Error),
    #[error("the stored cursor {stored} is negative")]
    NegativeCursor { stored: i64 },
    #[error("starting the fetch thread: {0}")]
    FetchThread(#[source] std::io::Error),
    #[error("the fetch thread stopped")]
    FetchStopped,
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Why one `GET /v1/events` failed (the fetcher retries).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("GET {url}: reading the body: {source}")]
    Body {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// Not 200; `text` is the start of the body.
    #[error("GET {url}: {status}: {text}")]
    Status { url: String, status: u16, text: String },
    #[error(transparent)]
    Page(#[from] events::PageError),
}

/// Runs until `control.stop` is set, retrying with backoff whenever the
/// server or the database fails. Errors only for a configuration that can
/// never work.
pub fn run(config: &Config, control: &Control) -> Result<(), ProjectionError> {
    if config.batch == 0 {
        return Err(ProjectionError::ZeroBatch);
    }
    let source = HttpSource::new(&config.server_url, config.key.clone(), config.wait_ms)?;
    let pg = pg_tls::PgConnector::new(&config.pg_url, &config.pg_tls)?;
    let mut rebuild = config.rebuild;
    let mut backoff = Backoff::default();
    while !control.stop.load(Ordering::Acquire) {
        let mut progressed = false;
        let result = session(config, control, &pg, &source, &mut rebuild, &mut progressed);
        if progressed {
            backoff = Backoff::default();
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                let wait = backoff.next();
                if config.verbose {
                    eprintln!("project: {e}; retrying in {} ms", wait.as_millis());
                }
                if let Ok(mut last) = control.last_error.lock() {
                    *last = Some(e.to_string());
                }
                sleep_unless_stopped(wait, &control.stop);
            }
        }
    }
    Ok(())
}

/// One database connection: set up, resume from the stored cursor, apply
/// until stopped or until something fails.
fn session(
    config: &Config,
    control: &Control,
    pg: &pg_tls::PgConnector,
    source: &HttpSource,
    rebuild: &mut bool,
    progressed: &mut bool,
) -> Result<(), ProjectionError> {
    let mut client = pg.connect()?;
    // The advisory lock keeps two projectors starting at once from racing
    // on CREATE TABLE; the cursor check in every batch does the rest.
    client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock(4242001); {} COMMIT;", schema::CREATE))?;
    client.batch_execute(schema::STAGING)?;
    if *rebuild {
        client.batch_execute(&format!("BEGIN; {} COMMIT;", schema::TRUNCATE))?;
        *rebuild = false;
        if config.verbose {
            eprintln!("project: rebuild: the read model is empty, replaying from the first event");
        }
    }
    let stored: i64 = client.query_one("SELECT last_seq FROM projection_state WHERE id = 1", &[])?.get(0);
    let mut cursor = u64::try_from(stored).map_err(|_| ProjectionError::NegativeCursor { stored })?;
    control.applied.store(cursor, Ordering::Release);
    if config.verbose {
        eprintln!("project: resuming after seq {cursor}");
    }

    // Pages in flight are bounded: about two transactions' worth.
    let capacity = (2 * config.batch).div_ceil(PAGE_LIMIT).clamp(2, 64);
    let (pages_tx, pages_rx) = sync_channel::<Page>(capacity);
    let fetch_stop = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let (source, stop, verbose) = (source.clone(), fetch_stop.clone(), config.verbose);
        std::thread::Builder::new()
            .name("project-fetch".into())
            .spawn(move || fetch_loop(&source, cursor, &pages_tx, &stop, verbose))
            .map_err(ProjectionError::FetchThread)?
    };
    let result = apply_loop(config, control, &mut client, &pages_rx, &mut cursor, progressed);
    // The fetcher sees the flag, or a closed channel, within one long poll;
    // it is not waited for, so a hung server cannot hold up a reconnect.
    fetch_stop.store(true, Ordering::Release);
    drop(pages_rx);
    drop(fetcher);
    result
}

fn apply_loop(
    config: &Config,
    control: &Control,
    client: &mut postgres::Client,
    pages: &Receiver<Page>,
    cursor: &mut u64,
    progressed: &mut bool,
) -> Result<(), ProjectionError> {
    let mut last_report = (Instant::now(), control.events.load(Ordering::Relaxed));
    while !control.stop.load(Ordering::Acquire) {
        let first = match pages.recv_timeout(Duration::from_millis(200)) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(ProjectionError::FetchStopped),
        };
        let mut batch = Batch::new(*cursor);
        batch.push(first.after, first.next_after, &first.events)?;
        // Take whatever else is already fetched, up to the batch size.
        while (batch.events as usize) < config.batch {
            match pages.try_recv() {
                Ok(p) => batch.push(p.after, p.next_after, &p.events)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(ProjectionError::FetchStopped),
            }
        }
        batch.apply(client)?;
        *cursor = batch.to;
        *progressed = true;
        control.applied.store(batch.to, Ordering::Release);
        let total = control.events.fetch_add(batch.events, Ordering::AcqRel) + batch.events;
        if config.verbose && last_report.0.elapsed() >= PROGRESS_EVERY {
            let rate = (total - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            eprintln!("project: applied through seq {} ({rate:.0} events/s)", batch.to);
            last_report = (Instant::now(), total);
        }
    }
    Ok(())
}

fn fetch_loop(source: &HttpSource, mut after: u64, pages: &SyncSender<Page>, stop: &AtomicBool, verbose: bool) {
    let mut backoff = Backoff::default();
    let mut failing_since: Option<Instant> = None;
    let mut last_log: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        match source.fetch(after, PAGE_LIMIT) {
            Ok(page) => {
                backoff = Backoff::default();
                if failing_since.take().is_some() && verbose {
                    eprintln!("project: the server answers again");
                }
                if page.next_after > after {
                    after = page.next_after;
                    if pages.send(page).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                // Logged once, then every 30 s while the server stays down.
                if verbose && last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    eprintln!("project: reading events: {e} (failing for {} s)", since.elapsed().as_secs());
                    last_log = Some(Instant::now());
                }
                sleep_unless_stopped(backoff.next(), stop);
            }
        }
    }
}

/// Doubling waits between tries, capped at [`BACKOFF_MAX`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// `GET /v1/events` over HTTP(S) with ureq (rustls with ring).
#[derive(Clone)]
pub struct HttpSource {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
    wait_ms: u64,
}

/// Longest events page read (1000 events are well under 1 MiB).
const PAGE_BYTES_MAX: u64 = 32 << 20;

impl HttpSource {
    pub fn new(base: &str, key: Option<String>, wait_ms: u64) -> Result<HttpSource, ProjectionError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ProjectionError::ServerUrl { base });
        }
        let wait_ms = wait_ms.min(30_000);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The long poll plus time to render and send a full page.
            .timeout_global(Some(Duration::from_millis(wait_ms) + Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .tls_config(ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls).build())
            .user_agent(concat!("bursar-projection/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpSource { agent: config.into(), base, auth: key.map(|k| format!("Bearer {k}")), wait_ms })
    }

    /// The page of events after `after`, waiting for one if there is none yet.
    pub fn fetch(&self, after: u64, limit: usize) -> Result<Page, FetchError> {
        let url = format!("{}/v1/events?after={after}&limit={limit}&types={TYPES}&wait_ms={}", self.base, self.wait_ms);
        let mut request = self.agent.get(&url).header("accept", "application/json");
        if let Some(a) = &self.auth {
            request = request.header("authorization", a);
        }
        let mut response = request.call().map_err(|source| FetchError::Request { url: url.clone(), source })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(PAGE_BYTES_MAX)
            .read_to_vec()
            .map_err(|source| FetchError::Body { url: url.clone(), source })?;
        if status != 200 {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(FetchError::Status { url, status, text });
        }
        Ok(events::decode_page(after, &body)?)
    }
}
