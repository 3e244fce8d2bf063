//! `bursar import FILE.csv`: bulk transfers from CSV, resumable and
//! idempotent.
//!
//! 1. **Validate** the whole file first, streaming it (never loaded whole):
//!    header, every field of every row, linked chains. Errors name the line
//!    and the column; nothing is sent if there is one. The same pass hashes
//!    the content (blake3) and counts the rows.
//! 2. **Send** it in batches to `POST /v1/transfers/batch`. Batch boundaries
//!    are a pure function of the content and the batch size (a linked chain
//!    is never split). Batch `i`'s Idempotency-Key is
//!    `bursar-import-<hash>-<size>-<i>`, so sending a batch again replays
//!    the server's record of it instead of executing it again.
//! 3. After each batch, **record** it in `FILE.csv.bursar-progress`
//!    (written to a temporary file, synced, then renamed over the old one),
//!    so a re-run skips the batches already done (`--restart` ignores it).
//!
//! Transfer ids are unique forever, so even when neither the progress file
//! nor the idempotency record helps (a different key, a different batch
//! size, an expired record), a row sent again reports `exists` and applies
//! nothing; the summary counts it as already existing, not as a failure.

use super::output;
use super::{CliError, Global};
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_http::dto::{BatchResult, TransferRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Most events in one request (the server's limit).
const BATCH_MAX: usize = BATCH_EVENTS_MAX;
const BATCH_DEFAULT: u32 = 1000;
/// A batch closes once its body passes this many bytes...
const SOFT_BYTES: usize = 3 << 20;
/// ...and never exceeds this one (the server takes 4 MiB bodies).
const HARD_BYTES: usize = (4 << 20) - (16 << 10);
/// Validation errors shown before giving up.
const ERRORS_SHOWN: usize = 20;
/// Failed rows kept (with line and code) in the summary and the progress file.
const FAILURES_KEPT: usize = 100;
const PROGRESS_VERSION: u32 = 1;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// CSV with a header row. Required columns: id, debit_account_id,
    /// credit_account_id, amount, ledger, code. Optional: flags (names
    /// separated by `|`), pending_id, timeout, user_data_128, user_data_64,
    /// user_data_32. Ids are decimal or UUIDs, amounts decimal minor units.
    pub file: PathBuf,
    /// Transfers per request, 1-8190 (default 1000, or the size an
    /// interrupted run used). A linked chain is never split: one that does
    /// not fit starts the next batch, and a longer one is a batch of its own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=BATCH_MAX as i64))]
    pub batch: Option<u32>,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
    /// Ignore the progress file and send every batch again. Nothing is
    /// applied twice: batches replay, rows report `exists`.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub global: Global,
}

// ------------------------------------------------------------------ columns

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Id,
    Debit,
    Credit,
    Amount,
    Ledger,
    Code,
    Flags,
    PendingId,
    Timeout,
    Ud128,
    Ud64,
    Ud32,
}

/// Name, column, required.
const COLUMNS: [(&str, Col, bool); 12] = [
    ("id", Col::Id, true),
    ("debit_account_id", Col::Debit, true),
    ("credit_account_id", Col::Credit, true),
    ("amount", Col::Amount, true),
    ("ledger", Col::Ledger, true),
    ("code", Col::Code, true),
    ("flags", Col::Flags, false),
    ("pending_id", Col::PendingId, false),
    ("timeout", Col::Timeout, false),
    ("user_data_128", Col::Ud128, false),
    ("user_data_64", Col::Ud64, false),
    ("user_data_32", Col::Ud32, false),
];

const TRANSFER_FLAGS: [&str; 8] = [
    "linked",
    "pending",
    "post_pending",
    "void_pending",
    "balancing_debit",
    "balancing_credit",
    "closing_debit",
    "closing_credit",
];

fn col_name(c: Col) -> &'static str {
    COLUMNS.iter().find(|(_, col, _)| *col == c).map_or("?", |(n, _, _)| n)
}

/// Where each column is in a row.
struct Layout {
    pos: [Option<usize>; COLUMNS.len()],
    width: usize,
}

impl Layout {
    fn from_header(h: &csv::StringRecord) -> Result<Layout, RowError> {
        let mut pos = [None; COLUMNS.len()];
        let at_line = |message: String| RowError { line: 1, column: None, message, fatal: true };
        for (i, raw) in h.iter().enumerate() {
            let name = if i == 0 { raw.trim_start_matches('\u{feff}') } else { raw }.trim();
            let Some(k) = COLUMNS.iter().position(|(n, _, _)| n.eq_ignore_ascii_case(name)) else {
                let known: Vec<&str> = COLUMNS.iter().map(|(n, _, _)| *n).collect();
                return Err(at_line(format!(
                    "unknown column {name:?} in the header (columns are: {})",
                    known.join(", ")
                )));
            };
            if pos[k].is_some() {
                return Err(at_line(format!("column {name:?} appears twice in the header")));
            }
            pos[k] = Some(i);
        }
        let missing: Vec<&str> =
            COLUMNS.iter().enumerate().filter(|(k, (_, _, req))| *req && pos[*k].is_none()).map(|(_, c)| c.0).collect();
        if !missing.is_empty() {
            return Err(at_line(format!(
                "the header lacks the required column{} {} (the first row must name the columns)",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        Ok(Layout { pos, width: h.len() })
    }
}

// ------------------------------------------------------------------ rows

/// A problem with the input, at a line (and maybe a column).
#[derive(Clone, Debug)]
struct RowError {
    line: u64,
    column: Option<String>,
    message: String,
    /// The file cannot be read further (a CSV syntax or I/O error).
    fatal: bool,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column {c}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// One valid row, as the JSON the API takes.
#[derive(Debug)]
struct Row {
    line: u64,
    id: String,
    linked: bool,
    json: String,
}

fn parse_u128(s: &str, what: &str) -> Result<u128, String> {
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not {what}: use decimal digits only (no sign, point, exponent or spaces)"));
    }
    s.parse::<u128>().map_err(|_| format!("{s:?} exceeds 2^128 - 1"))
}

/// A decimal id or a UUID (read as a big-endian u128), as decimal.
fn parse_id(s: &str) -> Result<String, String> {
    if s.len() == 36 && s.as_bytes().get(8) == Some(&b'-') {
        return uuid::Uuid::try_parse(s)
            .map(|u| u.as_u128().to_string())
            .map_err(|_| format!("{s:?} is not a valid UUID"));
    }
    parse_u128(s, "an id (decimal or UUID)").map(|v| v.to_string())
}

fn parse_small<T: std::str::FromStr>(s: &str, max: u64) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number from 0 to {max}"));
    }
    s.parse::<T>().map_err(|_| format!("{s:?} is out of range (0 to {max})"))
}

fn parse_row(layout: &Layout, rec: &csv::StringRecord, line: u64) -> Result<Row, RowError> {
    let err = |c: Col, message: String| RowError { line, column: Some(col_name(c).into()), message, fatal: false };
    if rec.len() != layout.width {
        return Err(RowError {
            line,
            column: None,
            message: format!("expected {} fields as in the header, found {}", layout.width, rec.len()),
            fatal: false,
        });
    }
    let get = |c: Col| -> Option<&str> {
        let k = COLUMNS.iter().position(|(_, col, _)| *col == c)?;
        layout.pos[k].and_then(|i| rec.get(i)).map(str::trim).filter(|s| !s.is_empty())
    };
    let mut flags = Vec::new();
    if let Some(f) = get(Col::Flags) {
        for name in f.split('|').map(str::trim).filter(|n| !n.is_empty()) {
            if !TRANSFER_FLAGS.contains(&name) {
                return Err(err(
                    Col::Flags,
                    format!("unknown flag {name:?} (flags: {}, separated by |)", TRANSFER_FLAGS.join(", ")),
                ));
            }
            if flags.iter().any(|f| f == name) {
                return Err(err(Col::Flags, format!("flag {name:?} is given twice")));
            }
            flags.push(name.to_string());
        }
    }
    let has = |f: &str| flags.iter().any(|n| n == f);
    let post_or_void = has("post_pending") || has("void_pending");
    // Post and void may leave these to the pending transfer; others may not.
    let required = |c: Col| -> Result<Option<&str>, RowError> {
        match get(c) {
            Some(v) => Ok(Some(v)),
            None if post_or_void => Ok(None),
            None => Err(err(c, "is empty; only post_pending and void_pending rows may leave it empty".into())),
        }
    };
    let id = get(Col::Id).ok_or_else(|| err(Col::Id, "is empty; every row needs an id".into()))?;
    let id = parse_id(id).map_err(|m| err(Col::Id, m))?;
    let id_opt = |c: Col, v: Option<&str>| v.map(parse_id).transpose().map_err(|m| err(c, m));
    let debit = id_opt(Col::Debit, required(Col::Debit)?)?;
    let credit = id_opt(Col::Credit, required(Col::Credit)?)?;
    let amount = required(Col::Amount)?
        .map(|s| parse_u128(s, "an amount in minor units").map(|v| v.to_string()))
        .transpose()
        .map_err(|m| err(Col::Amount, m))?;
    let ledger = required(Col::Ledger)?.map(|s| parse_small::<u32>(s, u32::MAX.into())).transpose();
    let ledger = ledger.map_err(|m| err(Col::Ledger, m))?;
    let code = required(Col::Code)?.map(|s| parse_small::<u16>(s, u16::MAX.into())).transpose();
    let code = code.map_err(|m| err(Col::Code, m))?;
    let pending_id = id_opt(Col::PendingId, get(Col::PendingId))?;
    let timeout = get(Col::Timeout).map(|s| parse_small::<u32>(s, u32::MAX.into())).transpose();
    let timeout = timeout.map_err(|m| err(Col::Timeout, m))?;
    let ud128 = get(Col::Ud128).map(|s| parse_u128(s, "a decimal number").map(|v| v.to_string())).transpose();
    let ud128 = ud128.map_err(|m| err(Col::Ud128, m))?;
    let ud64 = get(Col::Ud64).map(|s| parse_small::<u64>(s, u64::MAX)).transpose();
    let ud64 = ud64.map_err(|m| err(Col::Ud64, m))?.map(|v| v.to_string());
    let ud32 = get(Col::Ud32).map(|s| parse_small::<u32>(s, u32::MAX.into())).transpose();
    let ud32 = ud32.map_err(|m| err(Col::Ud32, m))?;
    let linked = has("linked");
    let req = TransferRequest {
        id: id.clone(),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger,
        code,
        flags,
        pending_id,
        timeout,
        user_data_128: ud128,
        user_data_64: ud64,
        user_data_32: ud32,
    };
    // The server's own request checks, so a batch is never refused whole.
    if let Err(p) = req.to_record() {
        return Err(RowError { line, column: p.field.clone(), message: p.detail, fatal: false });
    }
    let json = serde_json::to_string(&req).map_err(|e| RowError {
        line,
        column: None,
        message: format!("cannot encode: {e}"),
        fatal: false,
    })?;
    Ok(Row { line, id, linked, json })
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The rows of a CSV file, streamed.
struct CsvRows {
    reader: csv::Reader<Hashing<std::fs::File>>,
    layout: Layout,
    record: csv::StringRecord,
}

impl CsvRows {
    fn open(path: &Path) -> Result<CsvRows, CliError> {
        let file =
            std::fs::File::open(path).map_err(|e| CliError::Other(format!("cannot open {}: {e}", path.display())))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(Hashing { inner: file, hasher: blake3::Hasher::new() });
        let mut header = csv::StringRecord::new();
        let at = |e: RowError| CliError::Other(format!("{}: {e}", path.display()));
        match reader.read_record(&mut header) {
            Ok(true) => {}
            Ok(false) => {
                return Err(at(RowError {
                    line: 1,
                    column: None,
                    message: "the file is empty; it needs a header row naming the columns".into(),
                    fatal: true,
                }));
            }
            Err(e) => return Err(at(csv_error(&e))),
        }
        let layout = Layout::from_header(&header).map_err(at)?;
        Ok(CsvRows { reader, layout, record: csv::StringRecord::new() })
    }

    fn next_row(&mut self) -> Option<Result<Row, RowError>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some(parse_row(&self.layout, &self.record, line))
            }
            Err(e) => Some(Err(csv_error(&e))),
        }
    }

    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    /// The content hash; call after the last row.
    fn hash(self) -> String {
        self.reader.into_inner().hasher.finalize().to_hex().to_string()
    }
}

fn csv_error(e: &csv::Error) -> RowError {
    let line = e.position().map_or(0, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 (field {})", err.field() + 1),
        csv::ErrorKind::Io(io) => format!("cannot read the file: {io}"),
        _ => format!("not valid CSV: {e}"),
    };
    RowError { line, column: None, message, fatal: true }
}

// ------------------------------------------------------------------ batches

/// A batch of rows; `index` counts from 0 in the file.
struct Batch {
    index: u64,
    rows: Vec<Row>,
    bytes: usize,
}

/// Cuts rows into batches: at most `size` rows (unless one linked chain is
/// longer), never more than the server takes, never through a chain.
struct Batcher {
    size: usize,
    current: Vec<Row>,
    current_bytes: usize,
    chain: Vec<Row>,
    chain_bytes: usize,
    next_index: u64,
}

impl Batcher {
    fn new(size: u32) -> Batcher {
        Batcher {
            size: size as usize,
            current: Vec::new(),
            current_bytes: 0,
            chain: Vec::new(),
            chain_bytes: 0,
            next_index: 0,
        }
    }

    fn cut(&mut self) -> Option<Batch> {
        if self.current.is_empty() {
            return None;
        }
        let b = Batch {
            index: self.next_index,
            rows: std::mem::take(&mut self.current),
            bytes: std::mem::take(&mut self.current_bytes),
        };
        self.next_index += 1;
        Some(b)
    }

    /// Adds a row; returns the batches it completed (zero to two).
    fn push(&mut self, row: Row, out: &mut Vec<Batch>) -> Result<(), RowError> {
        self.chain_bytes += row.json.len() + 1;
        let linked = row.linked;
        self.chain.push(row);
        if self.chain.len() > BATCH_MAX || self.chain_bytes > HARD_BYTES {
            let start = self.chain[0].line;
            let line = self.chain.last().map_or(start, |r| r.line);
            self.chain.clear();
            self.chain_bytes = 0;
            return Err(RowError {
                line,
                column: Some("flags".into()),
                message: format!(
                    "the linked chain that starts at line {start} is longer than one request can hold \
                     ({BATCH_MAX} transfers, 4 MiB)"
                ),
                fatal: false,
            });
        }
        if linked {
            return Ok(()); // the chain goes on
        }
        // A chain that does not fit the current batch starts the next one.
        if self.current.len() + self.chain.len() > self.size || self.current_bytes + self.chain_bytes > HARD_BYTES {
            out.extend(self.cut());
        }
        self.current.append(&mut self.chain);
        self.current_bytes += std::mem::take(&mut self.chain_bytes);
        if self.current.len() >= self.size || self.current_bytes >= SOFT_BYTES {
            out.extend(self.cut());
        }
        Ok(())
    }

    /// The last batch, at the end of the file.
    fn finish(&mut self, out: &mut Vec<Batch>) -> Result<(), RowError> {
        if let Some(last) = self.chain.last() {
            let line = last.line;
            self.chain.clear();
            return Err(RowError {
                line,
                column: Some("flags".into()),
                message: "the last row has the linked flag, so its chain is never closed (the last transfer of a \
                          chain must not be linked)"
                    .into(),
                fatal: false,
            });
        }
        out.extend(self.cut());
        Ok(())
    }
}

// ------------------------------------------------------------------ progress

/// A failed row.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Failure {
    line: u64,
    id: String,
    code: String,
    detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// What the progress file records: the batches done (always a prefix of
/// the file's batches) and what they did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    version: u32,
    file: String,
    content_hash: String,
    url: String,
    batch: u32,
    batches_done: u64,
    rows_done: u64,
    /// Rows whose transfer was created by this import (in any run).
    ok: u64,
    /// Rows whose transfer already existed.
    existed: u64,
    failed: u64,
    failed_by_code: BTreeMap<String, u64>,
    /// The first failures, with line and code.
    failures: Vec<Failure>,
}

fn progress_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".bursar-progress");
    PathBuf::from(s)
}

fn read_progress(path: &Path) -> Result<Option<Progress>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Progress>(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a progress file of this version ({e}); ignoring it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}; ignoring it", path.display())),
    }
}

/// Replaces the progress file atomically: a temporary file, synced, renamed.
fn write_progress(path: &Path, p: &Progress) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Other(format!("cannot write the progress file {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec_pretty(p).map_err(|e| CliError::Other(format!("encoding progress: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(&body).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

// ------------------------------------------------------------------ run

/// What this run did.
#[derive(Default, Serialize)]
struct Summary {
    file: String,
    rows: u64,
    batches: u64,
    batch_size: u32,
    batches_sent: u64,
    batches_replayed: u64,
    batches_skipped: u64,
    created: u64,
    already_existing: u64,
    failed: u64,
    failed_by_code: BTreeMap<String, u64>,
    failures: Vec<Failure>,
}

impl Summary {
    fn fail(&mut self, f: Failure) {
        self.failed += 1;
        *self.failed_by_code.entry(f.code.clone()).or_default() += 1;
        if self.failures.len() < FAILURES_KEPT {
            self.failures.push(f);
        }
    }

    fn print(&self, progress_file: &Path) {
        output::line(&format!(
            "import {}: {} rows in {} batches of up to {} transfers",
            self.file, self.rows, self.batches, self.batch_size
        ));
        let w = [self.created, self.already_existing, self.failed, self.batches_sent, self.batches_skipped]
            .iter()
            .map(|n| n.to_string().len())
            .max()
            .unwrap_or(1);
        output::line(&format!(
            "  batches sent      {:>w$}  ({} replayed: done before with the same Idempotency-Key)",
            self.batches_sent, self.batches_replayed
        ));
        output::line(&format!(
            "  batches skipped   {:>w$}  (already done per {})",
            self.batches_skipped,
            progress_file.display()
        ));
        output::line(&format!("  created           {:>w$}", self.created));
        output::line(&format!(
            "  already existing  {:>w$}  (already done: skipped, replayed or `exists`; nothing applied twice)",
            self.already_existing
        ));
        output::line(&format!("  failed            {:>w$}", self.failed));
        if self.failed > 0 {
            output::line("failed by code:");
            for (code, n) in &self.failed_by_code {
                output::line(&format!("  {code:<40} {n}"));
            }
            let shown = self.failures.len().min(ERRORS_SHOWN);
            output::line(&format!("failed rows (first {shown} of {}):", self.failed));
            for f in self.failures.iter().take(shown) {
                let field = f.field.as_ref().map(|x| format!(" (field {x})")).unwrap_or_default();
                output::line(&format!("  line {}  id {}  {}: {}{field}", f.line, f.id, f.code, f.detail));
            }
        }
    }
}

fn bar(len: u64, quiet: bool, template: &str) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        let rate = |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", s.per_sec());
        };
        b.set_style(style.progress_chars("=> ").with_key("rate", rate));
    }
    b
}

pub fn run(a: ImportArgs) -> Result<(), CliError> {
    let api = a.global.api()?;
    let progress_file = progress_path(&a.file);
    let display = a.file.display().to_string();

    // An earlier run's progress (its batch size is the default).
    let mut earlier = None;
    if !a.restart {
        match read_progress(&progress_file) {
            Ok(p) => earlier = p,
            Err(m) => output::err_line(&format!("warning: {m}")),
        }
    }
    let batch_size = a.batch.or(earlier.as_ref().map(|p| p.batch).filter(|b| (1..=BATCH_MAX as u32).contains(b)));
    let batch_size = batch_size.unwrap_or(BATCH_DEFAULT);

    // 1. Validate everything, count, hash.
    let file_len = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let check_bar = bar(file_len, a.quiet, "checking {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})");
    let mut rows_in = CsvRows::open(&a.file)?;
    let mut batcher = Batcher::new(batch_size);
    let mut errors: Vec<RowError> = Vec::new();
    let mut error_count = 0u64;
    let (mut rows, mut batches) = (0u64, 0u64);
    let mut cut = Vec::new();
    let mut note = |e: RowError, errors: &mut Vec<RowError>| {
        error_count += 1;
        if errors.len() < ERRORS_SHOWN {
            errors.push(e);
        }
    };
    while let Some(r) = rows_in.next_row() {
        match r {
            Ok(row) => {
                rows += 1;
                if let Err(e) = batcher.push(row, &mut cut) {
                    note(e, &mut errors);
                }
            }
            Err(e) => {
                let fatal = e.fatal;
                note(e, &mut errors);
                if fatal {
                    break;
                }
            }
        }
        batches += cut.drain(..).count() as u64;
        if rows % 4096 == 0 {
            check_bar.set_position(rows_in.bytes_read());
        }
    }
    if let Err(e) = batcher.finish(&mut cut) {
        note(e, &mut errors);
    }
    batches += cut.drain(..).count() as u64;
    check_bar.finish_and_clear();
    if !errors.is_empty() {
        for e in &errors {
            output::err_line(&format!("error: {display}: {e}"));
        }
        if error_count > errors.len() as u64 {
            output::err_line(&format!("error: … and {} more", error_count - errors.len() as u64));
        }
        output::err_line(&format!(
            "error: {display} has {error_count} invalid row{}; nothing was imported",
            if error_count == 1 { "" } else { "s" }
        ));
        return Err(CliError::Reported);
    }
    let hash = rows_in.hash();

    // The earlier run's progress counts only for this content, server and
    // batch size.
    let mut progress = Progress {
        version: PROGRESS_VERSION,
        file: display.clone(),
        content_hash: hash.clone(),
        url: a.global.conn.url.clone(),
        batch: batch_size,
        ..Default::default()
    };
    if let Some(p) = earlier {
        let why = if p.version != PROGRESS_VERSION {
            Some("it is of another version")
        } else if p.content_hash != hash {
            Some("the file's content changed since")
        } else if p.url.trim_end_matches('/') != a.global.conn.url.trim_end_matches('/') {
            Some("it is for another server URL")
        } else if p.batch != batch_size {
            Some("it used another --batch size")
        } else if p.batches_done > batches {
            Some("it records more batches than the file has")
        } else {
            None
        };
        match why {
            Some(why) => output::err_line(&format!(
                "warning: ignoring {} ({why}); sending every batch (rows already imported will report `exists`)",
                progress_file.display()
            )),
            None => progress = p,
        }
    }

    let mut summary = Summary {
        file: display.clone(),
        rows,
        batches,
        batch_size,
        batches_skipped: progress.batches_done,
        already_existing: progress.ok + progress.existed,
        failed: progress.failed,
        failed_by_code: progress.failed_by_code.clone(),
        failures: progress.failures.clone(),
        ..Default::default()
    };
    if progress.batches_done > 0 && progress.batches_done < batches {
        output::err_line(&format!(
            "resuming: {} of {batches} batches were done by an earlier run (per {})",
            progress.batches_done,
            progress_file.display()
        ));
    }

    // 2. Send the batches not done yet.
    let send_bar =
        bar(rows, a.quiet, "{spinner} {elapsed_precise} {bar:30} {human_pos}/{human_len} rows ({rate}, eta {eta})");
    let key_prefix = format!("bursar-import-{}-{batch_size}", &hash[..32]);
    let mut rows_in = CsvRows::open(&a.file)?;
    let mut batcher = Batcher::new(batch_size);
    let mut cut = Vec::new();
    let mut ended = false;
    while !ended {
        match rows_in.next_row() {
            Some(Ok(row)) => batcher.push(row, &mut cut).map_err(|e| changed(&display, e))?,
            Some(Err(e)) => return Err(changed(&display, e)),
            None => {
                batcher.finish(&mut cut).map_err(|e| changed(&display, e))?;
                ended = true;
            }
        }
        for batch in cut.drain(..) {
            let n = batch.rows.len() as u64;
            if batch.index < progress.batches_done {
                send_bar.inc(n);
                continue;
            }
            let key = format!("{key_prefix}-{}", batch.index);
            let outcome = send_batch(&api, &batch, &key);
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    send_bar.finish_and_clear();
                    let (first, last) = (batch.rows[0].line, batch.rows.last().map_or(0, |r| r.line));
                    output::err_line(&format!("error: {}", with_line(&e, &batch)));
                    output::err_line(&format!(
                        "error: the import stopped at batch {} of {batches} (lines {first}-{last}); {} batches \
                         done are recorded in {}: fix the cause and run the same command again to resume",
                        batch.index + 1,
                        progress.batches_done,
                        progress_file.display()
                    ));
                    return Err(CliError::Reported);
                }
            };
            summary.batches_sent += 1;
            if outcome.replayed {
                summary.batches_replayed += 1;
                summary.already_existing += outcome.ok;
            } else {
                summary.created += outcome.ok;
            }
            summary.already_existing += outcome.existed;
            progress.batches_done = batch.index + 1;
            progress.rows_done += n;
            progress.ok += outcome.ok;
            progress.existed += outcome.existed;
            for f in outcome.failures {
                progress.failed += 1;
                *progress.failed_by_code.entry(f.code.clone()).or_default() += 1;
                if progress.failures.len() < FAILURES_KEPT {
                    progress.failures.push(f.clone());
                }
                summary.fail(f);
            }
            write_progress(&progress_file, &progress)?;
            send_bar.inc(n);
        }
    }
    send_bar.finish_and_clear();
    if rows_in.hash() != hash {
        output::err_line(&format!(
            "error: {display} changed while it was being imported; run the import again (rows already imported \
             will report `exists`)"
        ));
        return Err(CliError::Reported);
    }

    if a.global.conn.json {
        output::json_value(&serde_json::to_value(&summary).unwrap_or_default());
    } else {
        summary.print(&progress_file);
    }
    if summary.failed > 0 {
        output::err_line(&format!(
            "error: {} of {} rows failed (see above); the rest are imported",
            summary.failed, summary.rows
        ));
        return Err(CliError::Reported);
    }
    Ok(())
}

fn changed(file: &str, e: RowError) -> CliError {
    CliError::Other(format!("{file}: {e} (the file changed after it was checked?)"))
}

/// Names the line of a batch item a request-level problem is about
/// (`transfers[12].amount`).
fn with_line(e: &CliError, batch: &Batch) -> String {
    if let CliError::Api(p) = e
        && let Some(f) = &p.field
        && let Some(rest) = f.strip_prefix("transfers[")
        && let Some((i, _)) = rest.split_once(']')
        && let Ok(i) = i.parse::<usize>()
        && let Some(row) = batch.rows.get(i)
    {
        return format!("{e} at line {}", row.line);
    }
    e.to_string()
}

/// What one batch did.
struct Outcome {
    replayed: bool,
    ok: u64,
    existed: u64,
    failures: Vec<Failure>,
}

fn send_batch(api: &super::client::Api, batch: &Batch, key: &str) -> Result<Outcome, CliError> {
    let mut body = Vec::with_capacity(batch.bytes + 16);
    body.extend_from_slice(b"{\"transfers\":[");
    for (i, row) in batch.rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(row.json.as_bytes());
    }
    body.extend_from_slice(b"]}");
    let reply = api.post("/v1/transfers/batch", &body, key)?;
    let result: BatchResult = reply.json()?;
    let n = batch.rows.len();
    let mut codes: Vec<Option<(String, String, Option<String>)>> = vec![None; n];
    for r in result.results {
        let Some(slot) = codes.get_mut(r.index as usize) else {
            return Err(CliError::Other(format!("the server reported a result for event {} of {n}", r.index)));
        };
        *slot = Some((r.code, r.detail, r.field));
    }
    // A chain that failed only because one of its transfers already exists
    // reports `linked_event_failed` for the others: look those up.
    let mut exists_by_chain = vec![false; n];
    let mut start = 0;
    for i in 0..n {
        if batch.rows[i].linked && i + 1 < n {
            continue;
        }
        let chain = start..=i;
        let causes: Vec<&str> = chain
            .clone()
            .filter_map(|k| codes[k].as_ref().map(|c| c.0.as_str()))
            .filter(|c| *c != "linked_event_failed")
            .collect();
        if causes == ["exists"] && i > start {
            for k in chain {
                exists_by_chain[k] = true;
            }
        }
        start = i + 1;
    }
    let mut out = Outcome { replayed: reply.replayed, ok: 0, existed: 0, failures: Vec::new() };
    for (k, c) in codes.into_iter().enumerate() {
        let row = &batch.rows[k];
        match c {
            None => out.ok += 1,
            Some((code, _, _)) if code == "exists" => out.existed += 1,
            Some((code, _, _))
                if code == "linked_event_failed" && exists_by_chain[k] && transfer_exists(api, &row.id)? =>
            {
                out.existed += 1
            }
            Some((code, detail, field)) => {
                out.failures.push(Failure { line: row.line, id: row.id.clone(), code, detail, field })
            }
        }
    }
    Ok(out)
}

fn transfer_exists(api: &super::client::Api, id: &str) -> Result<bool, CliError> {
    match api.get(&format!("/v1/transfers/{}", super::client::encode(id)), &[]) {
        Ok(_) => Ok(true),
        Err(CliError::Api(p)) if p.status == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "import_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(h: &[&str]) -> Layout {
        Layout::from_header(&csv::StringRecord::from(h.to_vec())).unwrap()
    }

    const HEADER: [&str; 7] = ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags"];

    fn row(fields: &[&str]) -> Result<Row, RowError> {
        parse_row(&layout(&HEADER), &csv::StringRecord::from(fields.to_vec()), 2)
    }

    #[test]
    fn rows_parse_and_errors_name_the_column() {
        let r = row(&["7", "1", "2", "100", "1", "1", ""]).unwrap();
        assert_eq!(
            r.json,
            r#"{"id":"7","debit_account_id":"1","credit_account_id":"2","amount":"100","ledger":1,"code":1,"flags":[]}"#
        );
        let r = row(&["00000000-0000-0000-0000-00000000002a", "1", "2", "100", "1", "1", "linked|pending"]).unwrap();
        assert!(r.linked && r.id == "42");
        let e = row(&["7", "1", "2", "12.5", "1", "1", ""]).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("amount"));
        assert!(e.to_string().starts_with("line 2, column amount: \"12.5\""), "{e}");
        assert_eq!(row(&["7", "", "2", "1", "1", "1", ""]).unwrap_err().column.as_deref(), Some("debit_account_id"));
        assert_eq!(row(&["7", "1", "2", "1", "1", "70000", ""]).unwrap_err().column.as_deref(), Some("code"));
        assert_eq!(row(&["7", "1", "2", "1", "1", "1", "nope"]).unwrap_err().column.as_deref(), Some("flags"));
        assert!(row(&["7", "1", "2"]).unwrap_err().to_string().contains("expected 7 fields"));
        // Post and void may leave the accounts, amount, ledger and code out.
        let h = ["id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags", "pending_id"];
        let post =
            parse_row(&layout(&h), &csv::StringRecord::from(vec!["9", "", "", "", "", "", "post_pending", "8"]), 3);
        assert!(post.is_ok());
    }

    #[test]
    fn headers_are_checked() {
        let missing = Layout::from_header(&csv::StringRecord::from(vec!["id", "amount"])).err().unwrap();
        assert!(missing.to_string().contains("debit_account_id, credit_account_id, ledger, code"), "{missing}");
        let unknown = Layout::from_header(&csv::StringRecord::from(vec!["id", "amont"])).err().unwrap();
        assert!(unknown.to_string().contains("unknown column \"amont\""));
        assert!(Layout::from_header(&csv::StringRecord::from(vec!["\u{feff}id"])).is_err()); // still lacks columns
    }

    fn r(line: u64, linked: bool) -> Row {
        Row { line, id: line.to_string(), linked, json: "{}".into() }
    }

    #[test]
    fn batches_never_split_chains() {
        let mut b = Batcher::new(3);
        let mut out = Vec::new();
        for (i, linked) in [false, false, true, true, false, false, false].into_iter().enumerate() {
            b.push(r(i as u64 + 2, linked), &mut out).unwrap();
        }
        b.finish(&mut out).unwrap();
        let sizes: Vec<usize> = out.iter().map(|b| b.rows.len()).collect();
        assert_eq!(sizes, [2, 3, 2]);
        assert_eq!(out.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 1, 2]);
        // A chain longer than the batch size is a batch of its own.
        let mut b = Batcher::new(3);
        let mut out = Vec::new();
        for (i, linked) in [false, true, true, true, true, false, false].into_iter().enumerate() {
            b.push(r(i as u64 + 2, linked), &mut out).unwrap();
        }
        b.finish(&mut out).unwrap();
        assert_eq!(out.iter().map(|b| b.rows.len()).collect::<Vec<_>>(), [1, 5, 1]);
        let mut b = Batcher::new(3);
        b.push(r(2, true), &mut out).unwrap();
        assert!(b.finish(&mut out).is_err());
        let mut b = Batcher::new(10);
        let mut out = Vec::new();
        for i in 0..BATCH_MAX as u64 - 1 {
            b.push(r(i, i == 100), &mut out).unwrap();
        }
        for i in 0..5 {
            b.push(r(9000 + i, i < 4), &mut out).unwrap();
        }
        b.finish(&mut out).unwrap();
        assert!(out.iter().all(|b| b.rows.len() <= 10 && !b.rows.last().unwrap().linked));
    }
}
