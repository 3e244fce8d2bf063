//! The HTTP command-line client against a real server process: ledgers,
//! keys, accounts and transfers (tables, `--json`, errors), HTTPS with a
//! self-signed certificate, and the CSV import: idempotent re-runs, resume
//! after a kill, rows that fail, and malformed files.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-key-for-the-cli-tests-0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_bursar");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[], "http")
    }

    fn start_with(extra: &[&str], scheme: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .arg("start")
            // Order ledgers would appear in the ledger listings checked here.
            .arg("--no-orders")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--addr", &format!("127.0.0.1:{}", free_port()), "--http", &http])
            .args(extra)
            .env("BURSAR_ADMIN_KEY", ADMIN)
            .env("BURSAR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the bursar binary starts");
        let mut server = Server { child, url: format!("{scheme}://{http}"), dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited with {status}: {}", server.log());
            }
            if std::net::TcpStream::connect(&http).is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "server not ready in 60 s: {}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `bursar args...` against this server with `key`.
    fn run(&self, key: &str, args: &[&str]) -> Run {
        run_in(&self.url, key, args, None)
    }

    /// Runs and insists on success.
    fn ok(&self, key: &str, args: &[&str]) -> Run {
        let r = self.run(key, args);
        assert!(r.success(), "bursar {args:?} failed: {}\n{}\nserver log: {}", r.stdout, r.stderr, self.log());
        r
    }

    fn json(&self, key: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.ok(key, &a);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bursar {args:?} --json: {e}: {}", r.stdout))
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn run_in(url: &str, key: &str, args: &[&str], cwd: Option<&Path>) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).env("BURSAR_URL", url).env("BURSAR_KEY", key).env_remove("BURSAR_LOG").stdin(Stdio::null());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out: Output = c.output().expect("bursar runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A ledger, an operator key (its secret from `--json`) and accounts.
fn setup(s: &Server, accounts: &[u32]) -> String {
    s.ok(ADMIN, &["ledger", "create", "--id", "1", "--asset", "USD", "--scale", "2"]);
    let key = s.json(ADMIN, &["keys", "create", "--role", "operator", "--ledgers", "1", "--name", "ops"]);
    let secret = key["secret"].as_str().expect("a new key's secret is in the response").to_string();
    for id in accounts {
        s.ok(&secret, &["account", "create", "--id", &id.to_string(), "--ledger", "1", "--code", "10"]);
    }
    secret
}

/// debits_posted and credits_posted of an account, read with the CLI.
fn balance(s: &Server, key: &str, id: u32) -> (u128, u128) {
    let a = s.json(key, &["account", "get", &id.to_string()]);
    let n = |f: &str| a[f].as_str().unwrap().parse::<u128>().unwrap();
    (n("debits_posted"), n("credits_posted"))
}

/// The value after a label in the import summary, e.g. `created`.
fn summary_count(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            l.trim_start().strip_prefix(label).map(|rest| rest.split_whitespace().next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn ledgers_keys_accounts_transfers_and_errors() {
    let s = Server::start();
    // Ledger: table output, then the same request again is "exists" (200).
    let r = s.ok(ADMIN, &["ledger", "create", "--id", "1", "--asset", "USD", "--scale", "2"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["id", "asset", "scale", "timestamp"]);
    assert_eq!(lines[1].split_whitespace().take(3).collect::<Vec<_>>(), ["1", "USD", "2"]);
    s.ok(ADMIN, &["ledger", "create", "--id", "2", "--asset", "EUR", "--scale", "2"]);
    let again = s.ok(ADMIN, &["ledger", "create", "--id", "1", "--asset", "USD", "--scale", "2"]);
    assert!(again.stderr.contains("already existed"), "{}", again.stderr);
    let list = s.json(ADMIN, &["ledger", "list"]);
    let ids: Vec<u64> = list["data"].as_array().unwrap().iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2]);
    let table = s.ok(ADMIN, &["ledger", "list", "--limit", "1"]).stdout; // two pages followed
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(2).unwrap().contains("EUR"));
    // A different asset for the same id is a conflict.
    let r = s.run(ADMIN, &["ledger", "create", "--id", "1", "--asset", "EUR", "--scale", "2"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.starts_with("error: exists_with_different_asset: "), "{}", r.stderr);
    assert!(r.stderr.contains("(field asset)"), "{}", r.stderr);

    // Keys: the secret is printed once, clearly, and works.
    let created = s.ok(ADMIN, &["keys", "create", "--role", "operator", "--ledgers", "1", "--name", "ops"]);
    let secret_line = created.stdout.lines().find(|l| l.starts_with("secret")).expect("the secret is printed");
    let op = secret_line.split_whitespace().nth(1).unwrap().to_string();
    assert!(created.stderr.contains("shown only this once"), "{}", created.stderr);
    let auditor = s.json(ADMIN, &["keys", "create", "--role", "auditor"]);
    let aud = auditor["secret"].as_str().unwrap().to_string();
    let keys = s.ok(ADMIN, &["keys", "list"]).stdout;
    assert!(keys.lines().any(|l| l.contains("operator") && l.contains("ops") && l.contains("yes")), "{keys}");
    assert!(!keys.contains(&op), "secrets are never listed");
    let listed = s.json(ADMIN, &["keys", "list"]);
    assert_eq!(listed["data"].as_array().unwrap().len(), 3); // admin, operator, auditor

    // Accounts.
    let r = s.ok(&op, &["account", "create", "--id", "100", "--ledger", "1", "--code", "10", "--flags", "history"]);
    assert!(r.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["flags", "history"]), "{}", r.stdout);
    let created = s.json(
        &op,
        &[
            "account",
            "create",
            "--id",
            "200",
            "--ledger",
            "1",
            "--code",
            "10",
            "--user-data-128",
            "77",
            "--user-data-32",
            "5",
        ],
    );
    assert_eq!((created["id"].as_str(), created["user_data_128"].as_str()), (Some("200"), Some("77")));
    s.ok(
        &op,
        &[
            "account",
            "create",
            "--id",
            "300",
            "--ledger",
            "1",
            "--code",
            "10",
            "--flags",
            "debits_must_not_exceed_credits",
        ],
    );

    // Transfers: plain, pending then post; read back as table and JSON.
    let r = s.ok(
        &op,
        &[
            "transfer", "create", "--id", "1", "--debit", "100", "--credit", "200", "--amount", "1050", "--ledger",
            "1", "--code", "1",
        ],
    );
    assert!(r.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["amount", "1050"]), "{}", r.stdout);
    s.ok(
        &op,
        &[
            "transfer",
            "create",
            "--id",
            "2",
            "--debit",
            "100",
            "--credit",
            "200",
            "--amount",
            "500",
            "--ledger",
            "1",
            "--code",
            "1",
            "--flags",
            "pending",
            "--timeout",
            "3600",
        ],
    );
    let post = s.json(
        &op,
        &[
            "transfer",
            "create",
            "--id",
            "3",
            "--pending-id",
            "2",
            "--amount",
            "200",
            "--ledger",
            "1",
            "--flags",
            "post_pending",
        ],
    );
    assert_eq!((post["amount"].as_str(), post["debit_account_id"].as_str()), (Some("200"), Some("100")));
    let t = s.json(&aud, &["transfer", "get", "2"]);
    assert_eq!((t["amount"].as_str(), t["timeout"].as_u64()), (Some("500"), Some(3600)));
    assert_eq!(t["flags"], serde_json::json!(["pending"]));
    let table = s.ok(&aud, &["transfer", "get", "1"]).stdout;
    for (k, v) in
        [("id", "1"), ("debit_account_id", "100"), ("credit_account_id", "200"), ("amount", "1050"), ("flags", "-")]
    {
        assert!(table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [k, v]), "{k} {v} in\n{table}");
    }
    let a = s.json(&aud, &["account", "get", "100"]);
    assert_eq!(a["debits_posted"], "1250");
    assert_eq!(a["debits_pending"], "0");
    let table = s.ok(&aud, &["account", "get", "200"]).stdout;
    assert!(table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["credits_posted", "1250"]), "{table}");

    // The account's transfers: a page, paging with --all, sides, order.
    let page = s.json(&aud, &["account", "transfers", "100", "--limit", "2"]);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());
    let all = s.json(&aud, &["account", "transfers", "100", "--limit", "1", "--all", "--order", "desc"]);
    let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "2", "1"]);
    let credits = s.json(&aud, &["account", "transfers", "100", "--side", "credits"]);
    assert!(credits["data"].as_array().unwrap().is_empty());
    let table = s.ok(&aud, &["account", "transfers", "100", "--limit", "1"]);
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);
    assert!(
        table.stdout.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>()[..4] == ["1", "100", "200", "1050"]
    );
    assert!(table.stderr.contains("--cursor"), "a hint names the next page: {}", table.stderr);
    // Balances (account 100 keeps history): after t1, t2 (pending), t3 (post).
    let b = s.json(&aud, &["account", "balances", "100", "--all"]);
    let posted: Vec<&str> =
        b["data"].as_array().unwrap().iter().map(|r| r["debits_posted"].as_str().unwrap()).collect();
    assert_eq!(posted, ["1050", "1050", "1250"]);
    let table = s.ok(&aud, &["account", "balances", "100"]).stdout;
    assert_eq!(table.lines().count(), 4, "{table}");

    // Errors: a rejected transfer, with its code, detail and field.
    let r = s.run(
        &op,
        &[
            "transfer", "create", "--id", "4", "--debit", "300", "--credit", "200", "--amount", "1", "--ledger", "1",
            "--code", "1",
        ],
    );
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("error: exceeds_credits: ") && r.stderr.trim_end().ends_with("(field amount)"),
        "{}",
        r.stderr
    );
    // The same id again with another amount: a conflict.
    let r = s.run(
        &op,
        &[
            "transfer", "create", "--id", "1", "--debit", "100", "--credit", "200", "--amount", "9", "--ledger", "1",
            "--code", "1",
        ],
    );
    assert!(r.stderr.starts_with("error: exists_with_different_amount: "), "{}", r.stderr);
    // The same exactly: exists, nothing applied.
    let r = s.ok(
        &op,
        &[
            "transfer", "create", "--id", "1", "--debit", "100", "--credit", "200", "--amount", "1050", "--ledger",
            "1", "--code", "1",
        ],
    );
    assert!(r.stderr.contains("already existed"), "{}", r.stderr);
    assert_eq!(s.json(&aud, &["account", "get", "100"])["debits_posted"], "1250");
    // Bad input caught by the server, wrong role, unknown things, bad keys.
    let r = s.run(
        &op,
        &[
            "transfer", "create", "--id", "5", "--debit", "100", "--credit", "200", "--amount", "1.5", "--ledger", "1",
            "--code", "1",
        ],
    );
    assert!(r.stderr.starts_with("error: invalid_field: ") && r.stderr.contains("(field amount)"), "{}", r.stderr);
    let r = s.run(&op, &["ledger", "create", "--id", "3", "--asset", "GBP", "--scale", "2"]);
    assert!(r.stderr.starts_with("error: forbidden: "), "{}", r.stderr);
    let r = s.run(&op, &["account", "create", "--id", "400", "--ledger", "2", "--code", "10"]);
    assert!(r.stderr.starts_with("error: forbidden: "), "a key for ledger 1 acts on ledger 2: {}", r.stderr);
    let r = s.run(&aud, &["account", "get", "999"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.starts_with("error: not_found: "), "{}", r.stderr);
    let r = s.run("not-a-valid-key-at-all-0000", &["ledger", "list"]);
    assert!(r.stderr.starts_with("error: unauthorized: "), "{}", r.stderr);

    // Idempotency keys: a given key replays; the same key with another body is refused.
    let args = [
        "transfer",
        "create",
        "--id",
        "6",
        "--debit",
        "100",
        "--credit",
        "200",
        "--amount",
        "5",
        "--ledger",
        "1",
        "--code",
        "1",
        "--idempotency-key",
        "k-6",
    ];
    let first = s.json(&op, &args);
    let replay = s.json(&op, &args);
    assert_eq!(first, replay);
    let mut other = args;
    other[9] = "6000";
    let r = s.run(&op, &other);
    assert!(r.stderr.starts_with("error: idempotency_key_reused: "), "{}", r.stderr);
    assert_eq!(s.json(&aud, &["account", "get", "100"])["debits_posted"], "1255");

    // Revoking a key locks it out.
    let id = s.json(ADMIN, &["keys", "create", "--role", "auditor", "--name", "temp"]);
    let temp = id["secret"].as_str().unwrap().to_string();
    s.ok(&temp, &["ledger", "list"]);
    let revoked = s.ok(ADMIN, &["keys", "revoke", &id["id"].as_u64().unwrap().to_string()]).stdout;
    assert!(revoked.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["active", "no"]), "{revoked}");
    let r = s.run(&temp, &["ledger", "list"]);
    assert!(r.stderr.starts_with("error: unauthorized: "), "{}", r.stderr);

    // No server: a clear transport error after the retries, non-zero exit.
    let url = format!("http://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let r = run_in(&url, ADMIN, &["ledger", "list", "--retries", "2"], None);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.starts_with("error: GET ") && r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert!(start.elapsed() >= Duration::from_millis(500), "two retries with backoff");
    let r = run_in("ftp://x", ADMIN, &["ledger", "list"], None);
    assert!(r.stderr.contains("--url must start with http:// or https://"), "{}", r.stderr);
}

/// Writes `rows` transfers among `accounts` (ids from `first_id`); returns
/// the expected (debits, credits) per account.
fn write_csv(path: &Path, first_id: u64, rows: u64, accounts: &[u32]) -> HashMap<u32, (u128, u128)> {
    let mut csv = String::from("id,debit_account_id,credit_account_id,amount,ledger,code,user_data_32\n");
    let mut expect: HashMap<u32, (u128, u128)> = accounts.iter().map(|a| (*a, (0, 0))).collect();
    for i in 0..rows {
        let n = accounts.len() as u64;
        let dr = accounts[(i % n) as usize];
        let cr = accounts[((i + 1 + i / n) % n) as usize];
        let cr = if cr == dr { accounts[((i + 1) % n) as usize] } else { cr };
        let amount = u128::from(1 + (i * 7919) % 1000);
        csv.push_str(&format!("{},{dr},{cr},{amount},1,1,{}\n", first_id + i, i % 100));
        expect.get_mut(&dr).unwrap().0 += amount;
        expect.get_mut(&cr).unwrap().1 += amount;
    }
    std::fs::write(path, csv).unwrap();
    expect
}

fn check_balances(s: &Server, key: &str, expect: &HashMap<u32, (u128, u128)>) {
    for (id, want) in expect {
        assert_eq!(balance(s, key, *id), *want, "balances of account {id}");
    }
}

fn progress_of(csv: &Path) -> Value {
    let p = PathBuf::from(format!("{}.bursar-progress", csv.display()));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn import_twice_creates_nothing_twice() {
    let s = Server::start();
    let accounts = [1, 2, 3, 4, 5];
    let op = setup(&s, &accounts);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("transfers.csv");
    let expect = write_csv(&csv, 1_000, 2_500, &accounts);
    let file = csv.to_str().unwrap();

    let first = s.ok(&op, &["import", file]);
    assert_eq!(summary_count(&first.stdout, "created"), 2_500, "{}", first.stdout);
    assert_eq!(summary_count(&first.stdout, "already existing"), 0);
    assert_eq!(summary_count(&first.stdout, "failed"), 0);
    assert_eq!(summary_count(&first.stdout, "batches sent"), 3);
    assert_eq!(progress_of(&csv)["batches_done"], 3);
    check_balances(&s, &op, &expect);
    let t = s.json(&op, &["transfer", "get", "3499"]);
    assert_eq!(t["user_data_32"], 99);

    // Again: the progress file says every batch is done.
    let second = s.ok(&op, &["import", file]);
    assert_eq!(summary_count(&second.stdout, "created"), 0, "{}", second.stdout);
    assert_eq!(summary_count(&second.stdout, "already existing"), 2_500);
    assert_eq!(summary_count(&second.stdout, "batches skipped"), 3);
    assert!(second.stdout.contains("already done"), "{}", second.stdout);
    check_balances(&s, &op, &expect);

    // Without the progress file: the same Idempotency-Keys replay.
    std::fs::remove_file(format!("{file}.bursar-progress")).unwrap();
    let third = s.ok(&op, &["import", file, "--quiet"]);
    assert_eq!(summary_count(&third.stdout, "created"), 0, "{}", third.stdout);
    assert_eq!(summary_count(&third.stdout, "already existing"), 2_500);
    assert!(third.stdout.contains("(3 replayed"), "{}", third.stdout);
    check_balances(&s, &op, &expect);

    // Another batch size (other keys, so the server executes again): every
    // transfer id exists, which counts as done, not as a failure.
    let fourth = s.ok(&op, &["import", file, "--restart", "--batch", "700", "--json"]);
    let sum: Value = serde_json::from_str(&fourth.stdout).unwrap();
    assert_eq!((sum["created"].as_u64(), sum["already_existing"].as_u64()), (Some(0), Some(2_500)), "{sum}");
    assert_eq!(
        (sum["failed"].as_u64(), sum["batches_sent"].as_u64(), sum["batches_replayed"].as_u64()),
        (Some(0), Some(4), Some(0))
    );
    check_balances(&s, &op, &expect);

    // Linked chains (never split across batches); sent again with other
    // batches, a chain whose transfers exist fails on `exists` and reports
    // `linked_event_failed` for the rest: still already done, not failed.
    let chains = dir.path().join("chains.csv");
    let mut text = String::from("id,debit_account_id,credit_account_id,amount,ledger,code,flags\n");
    let mut expect = expect.clone();
    for i in 0..31u32 {
        let linked = if i % 3 != 2 && i != 30 { "linked" } else { "" };
        text.push_str(&format!("{},1,2,{},1,1,{linked}\n", 50_000 + i, i + 1));
        expect.get_mut(&1).unwrap().0 += u128::from(i + 1);
        expect.get_mut(&2).unwrap().1 += u128::from(i + 1);
    }
    std::fs::write(&chains, text).unwrap();
    let chains = chains.to_str().unwrap();
    let r = s.ok(&op, &["import", chains, "--batch", "4"]);
    assert_eq!(summary_count(&r.stdout, "created"), 31, "{}", r.stdout);
    assert_eq!(summary_count(&r.stdout, "batches sent"), 10, "chains of 3 in batches of 4: {}", r.stdout);
    let r = s.ok(&op, &["import", chains, "--batch", "5", "--restart"]);
    assert_eq!(
        (summary_count(&r.stdout, "created"), summary_count(&r.stdout, "already existing")),
        (0, 31),
        "{}",
        r.stdout
    );
    assert_eq!(summary_count(&r.stdout, "failed"), 0);
    check_balances(&s, &op, &expect);
}

#[test]
fn import_resumes_after_a_kill_and_reports_failed_rows() {
    let s = Server::start();
    let accounts = [1, 2, 3, 4];
    let op = setup(&s, &accounts);
    let dir = tempfile::tempdir().unwrap();

    // Killed midway, then run again: every row applied exactly once.
    let csv = dir.path().join("big.csv");
    let expect = write_csv(&csv, 1, 20_000, &accounts);
    let file = csv.to_str().unwrap();
    let progress = PathBuf::from(format!("{file}.bursar-progress"));
    let mut child = Command::new(BIN)
        .args(["import", file, "--batch", "50"])
        .env("BURSAR_URL", &s.url)
        .env("BURSAR_KEY", &op)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !progress.exists() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let done = progress_of(&csv)["batches_done"].as_u64().unwrap();
    eprintln!("import killed ({status}) after {done} of 400 batches");
    let resumed = s.ok(&op, &["import", file]); // the progress file's batch size (50) is taken
    let created = summary_count(&resumed.stdout, "created");
    let already = summary_count(&resumed.stdout, "already existing");
    assert_eq!(created + already, 20_000, "{}", resumed.stdout);
    assert_eq!(summary_count(&resumed.stdout, "batches skipped"), done);
    assert_eq!(summary_count(&resumed.stdout, "failed"), 0);
    if status.success() {
        assert_eq!(created, 0);
    } else {
        assert!(resumed.stderr.contains("resuming"), "{}", resumed.stderr);
    }
    check_balances(&s, &op, &expect);

    // A file whose row 1,200 names an account that does not exist: that row
    // fails (with its line), the rest are imported once, and re-runs (even
    // with --restart) apply nothing more and keep reporting it.
    let csv = dir.path().join("partial.csv");
    let mut expect2 = write_csv(&csv, 100_000, 1_500, &accounts);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let bad: Vec<String> = lines[1_200].split(',').map(str::to_string).collect();
    let (dr, amount): (u32, u128) = (bad[1].parse().unwrap(), bad[3].parse().unwrap());
    let cr: u32 = bad[2].parse().unwrap();
    expect2.get_mut(&dr).unwrap().0 -= amount;
    expect2.get_mut(&cr).unwrap().1 -= amount;
    lines[1_200] = format!("{},999,{},{},1,1,0", bad[0], bad[2], bad[3]);
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let total = |e: &HashMap<u32, (u128, u128)>, base: &HashMap<u32, (u128, u128)>| -> HashMap<u32, (u128, u128)> {
        e.iter().map(|(k, v)| (*k, (v.0 + base[k].0, v.1 + base[k].1))).collect()
    };
    let expect_all = total(&expect2, &expect);
    let file = csv.to_str().unwrap();
    for args in [vec!["import", file], vec!["import", file], vec!["import", file, "--restart"]] {
        let r = s.run(&op, &args);
        assert_eq!(r.code, Some(1), "a failed row fails the import: {}", r.stdout);
        assert_eq!(summary_count(&r.stdout, "failed"), 1, "{}", r.stdout);
        assert!(r.stdout.contains("debit_account_not_found") || r.stdout.contains("id_already_failed"), "{}", r.stdout);
        assert!(r.stdout.contains("line 1201  id 101199"), "the failed row's line and id: {}", r.stdout);
        assert!(r.stderr.contains("1 of 1500 rows failed"), "{}", r.stderr);
        assert_eq!(summary_count(&r.stdout, "created") + summary_count(&r.stdout, "already existing"), 1_499);
        check_balances(&s, &op, &expect_all);
    }
    let r = s.run(&op, &["transfer", "get", "101199"]);
    assert!(r.stderr.starts_with("error: not_found"), "{}", r.stderr);
}

#[test]
fn malformed_csv_names_the_line_and_imports_nothing() {
    let s = Server::start();
    let op = setup(&s, &[1, 2]);
    let dir = tempfile::tempdir().unwrap();
    let header = "id,debit_account_id,credit_account_id,amount,ledger,code,flags\n";
    let cases: [(&str, String, &[&str]); 7] = [
        (
            "bad-amount",
            format!("{header}1,1,2,100,1,1,\n2,1,2,100,1,1,\n3,1,2,12.50,1,1,\n"),
            &["line 4, column amount", "\"12.50\""],
        ),
        (
            "missing-column",
            "id,debit_account_id,credit_account_id,ledger,code\n1,1,2,1,1\n".into(),
            &["line 1", "lacks the required column amount"],
        ),
        ("short-row", format!("{header}1,1,2,100,1,1,\n2,1,2\n"), &["line 3", "expected 7 fields"]),
        (
            "bad-flag",
            format!("{header}1,1,2,100,1,1,pending|bogus\n"),
            &["line 2, column flags", "unknown flag \"bogus\""],
        ),
        ("bad-id", format!("{header}x1,1,2,100,1,1,\n"), &["line 2, column id"]),
        (
            "open-chain",
            format!("{header}1,1,2,100,1,1,\n2,1,2,100,1,1,linked\n"),
            &["line 3, column flags", "never closed"],
        ),
        ("empty", String::new(), &["the file is empty"]),
    ];
    for (name, content, wants) in cases {
        let path = dir.path().join(format!("{name}.csv"));
        std::fs::write(&path, content).unwrap();
        let r = s.run(&op, &["import", path.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "{name}: {}", r.stdout);
        assert!(r.stderr.starts_with("error: "), "{name}: {}", r.stderr);
        for w in wants {
            assert!(r.stderr.contains(w), "{name}: {w:?} in {}", r.stderr);
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(!dir.path().join(format!("{name}.csv.bursar-progress")).exists(), "{name}: nothing was sent");
    }
    // Nothing was imported by any of them.
    assert_eq!(balance(&s, &op, 1), (0, 0));
    let r = s.run(&op, &["import", dir.path().join("nope.csv").to_str().unwrap()]);
    assert!(r.stderr.starts_with("error: cannot open"), "{}", r.stderr);
}

#[test]
fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            panic!("openssl must be installed to make a test certificate (scripts/test.sh installs it): {other:?}")
        }
    }
    let s = Server::start_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()], "https");
    let r = s.run(ADMIN, &["ledger", "list", "--retries", "0"]);
    assert_eq!(r.code, Some(1), "an unknown issuer is refused: {}", r.stdout);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    s.ok(
        ADMIN,
        &["ledger", "create", "--id", "7", "--asset", "JPY", "--scale", "0", "--ca-cert", cert.to_str().unwrap()],
    );
    let list = s.json(ADMIN, &["ledger", "list", "--ca-cert", cert.to_str().unwrap()]);
    assert_eq!(list["data"][0]["asset"], "JPY");
}

/// Every file and folder `bursar start` creates for a new data directory is
/// private to the owner (0600 / 0700), the personal-data key file beside it
/// too; missing parent folders are created (private as well).
#[test]
fn bursar_start_creates_private_files_and_folders() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("missing/parent/data");
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(&data)
        .args(["--addr", &format!("127.0.0.1:{}", free_port()), "--http", &http])
        .env("BURSAR_ADMIN_KEY", ADMIN)
        .env("BURSAR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the bursar binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&http).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A write, so the log holds an entry and the durable marker is written.
    run_in(
        &format!("http://{http}"),
        ADMIN,
        &["ledger", "create", "--id", "9", "--asset", "USD", "--scale", "2"],
        None,
    );
    let _ = child.kill();
    let _ = child.wait();
    let mut pending = vec![data.clone()];
    let (mut files, mut dirs) = (0, 0);
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            dirs += 1;
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
            files += 1;
        }
    }
    assert!(dirs >= 3 && files >= 3, "the data directory holds a log and snapshots ({dirs} folders, {files} files)");
    let keys = dir.path().join("missing/parent/data.pii-keys");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600, "{}", keys.display());
}
