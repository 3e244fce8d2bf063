//! `bursar bench failover`: how long side effects stop when the lease
//! holder dies. 3 `nats-server`s and 3 replicas (HTTP, orders calling the
//! connector simulators served from this process, and the NATS relay into
//! the same NATS cluster); a steady trickle of orders (each funded at once)
//! and transfers goes through a replica that does not hold the lease. Each
//! run kills the holder with SIGKILL at a seeded moment and measures the
//! seconds from the kill until
//! - `lease_s`: another replica holds the lease (it prints so when it
//!   starts the side effects; its log is polled every few ms),
//! - `orders_resume_s`: the simulators receive a connector call again (the
//!   time the simulator recorded it),
//! - `relay_resume_s`: the relay's stream grows again.
//!
//! The first moments after the kill are not counted for the last two: a
//! call or a publish the dead holder had in flight may still land then.
//! Nobody else can hold the lease that early (the key outlives the holder's
//! last renewal, which started at most 2 s before the kill, by 3 s), so
//! whatever comes later is the new holder's. The killed replica is started
//! again before the next run. At the end every order must complete with one
//! payout each, and the relay's stream must hold every event once, in order.

use anyhow::{Context, anyhow, bail};
use bursar_chaos::procs::{ADMIN_KEY, Procs, ReplicaSetup, SIZE};
use bursar_outbound::nats::read_stream;
use bursar_workflow::connectors::{SimConfig, SimControls, Simulators, SimulatorsConfig, serve_simulators};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a replica prints when it starts the side effects, and when it stops them.
const HOLDS: &str = "bursar: this replica holds the lease; starting orders, webhooks and relays";
const LOST: &str = "bursar: lease lost or node stopping";
/// The relay's stream (the default of `--relay-nats-stream`).
const STREAM: &str = "BURSAR_EVENTS";
/// After the kill, calls and publishes this soon may be the dead holder's.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(500);
/// The ledger of the transfer trickle and its two accounts.
const LEDGER: u32 = 7;
const ACCOUNTS: [u128; 2] = [70_001, 70_002];
/// How often the measuring loop looks.
const POLL: Duration = Duration::from_millis(5);

#[derive(clap::Args)]
pub struct FailoverArgs {
    /// Kills of the lease holder, each measured (the killed replica is
    /// started again before the next).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    /// Seeds the wait before each kill (its phase against the lease's
    /// 1 s renewals) and the order amounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Orders created (and funded) per second.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    orders_per_s: u64,
    /// Transfers per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    transfers_per_s: u64,
    /// Payouts settle this many ms after they are sent; the holder polls
    /// them meanwhile, so there are always connector calls to make.
    #[arg(long, default_value_t = 2000)]
    payout_confirm_ms: u64,
    /// Simulated latency of every connector call, in ms.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    sim_latency_ms: u64,
    /// The goal: orders and relays resume within this many seconds.
    #[arg(long, default_value_t = 5.0)]
    target_seconds: f64,
    /// Give up on a run (or the final checks) after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
    /// Working dir for the NATS stores and the replicas (default: temporary).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One run's figures.
struct Run {
    killed: usize,
    successor: usize,
    lease_s: f64,
    orders_s: f64,
    relay_s: f64,
}

pub fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("bursar-bench-failover-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // The connector simulators, in this process: their call log is the
    // executor's pulse.
    let sim = SimConfig { latency: Duration::from_millis(args.sim_latency_ms), ..Default::default() };
    let mut config = SimulatorsConfig {
        screening: sim.clone(),
        fx: sim.clone(),
        payout: sim.clone(),
        funds: sim,
        ..Default::default()
    };
    config.payout_settings.confirm_after = Duration::from_millis(args.payout_confirm_ms);
    let sims = Simulators::with_controls(config, SimControls::default(), None);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let sim_url = format!("http://{}", listener.local_addr()?);
    runtime.spawn(serve_simulators(sims.clone(), listener));

    eprintln!("bench: starting 3 nats-servers and 3 replicas (orders, relay) in {}", dir.display());
    let pii = pii_keys()?;
    let mut procs = Procs::start_with(&dir, |urls| ReplicaSetup {
        args: ["--connectors-url", &sim_url, "--relay-nats", urls].map(String::from).to_vec(),
        env: vec![("BURSAR_PII_KEYS".into(), pii)],
        http: true,
    })
    .map_err(|e| anyhow!(e))?;
    let nats_urls = procs.nats_urls().to_string();
    let https: Vec<String> = procs.replicas.iter().map(|r| r.http.clone().expect("HTTP is on")).collect();
    let logs: Vec<PathBuf> = procs.replicas.iter().map(|r| r.log.clone()).collect();
    let timeout = Duration::from_secs(args.timeout_seconds);
    let mut holder = wait_for("a replica holds the lease", timeout, || single_holder(&logs))?;

    // The trickle, through a replica the next kill spares.
    let entry = Arc::new(AtomicUsize::new((holder + 1) % SIZE));
    let api = Api::new(&https, entry.clone());
    let operator = api.setup()?;
    let trickle = Trickle::start(api.clone(), operator.clone(), &args);

    let js = runtime.block_on(async {
        let nats = bursar_nats::NatsEndpoint::new(nats_urls.clone(), bursar_nats::NatsSecurity::default());
        let client = nats.connect(timeout, |options| options).await.map_err(|e| anyhow!(e))?;
        anyhow::Ok(async_nats::jetstream::new(client))
    })?;
    let stream_last = |runtime: &tokio::runtime::Runtime| -> Option<u64> {
        runtime.block_on(async {
            // Getting the stream reads its info (one request).
            Some(js.get_stream(STREAM).await.ok()?.cached_info().state.last_sequence)
        })
    };

    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        if trickle.thread.is_finished() {
            trickle.stop()?;
            bail!("the trickle of orders and transfers stopped");
        }
        // Steady: the holder calls connectors and the relay publishes.
        let (calls0, seq0) = (sims.calls().len(), stream_last(&runtime).unwrap_or(0));
        wait_for("the holder calling connectors and relaying", timeout, || {
            (sims.calls().len() > calls0 && stream_last(&runtime).unwrap_or(0) > seq0).then_some(())
        })?;
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..3000)));
        holder = wait_for("a replica holds the lease", timeout, || single_holder(&logs))?;
        entry.store((holder + 1) % SIZE, Ordering::Relaxed);
        let acquisitions: Vec<usize> = logs.iter().map(|l| read(l).matches(HOLDS).count()).collect();

        let kill_unix = unix_nanos();
        let killed = Instant::now();
        procs.kill(holder);
        procs.note(holder, &format!("bench: killed (run {run})"));
        let (mut lease, mut orders, mut relay) = (None, None, None);
        let (mut calls_base, mut seq_base) = (sims.calls().len(), stream_last(&runtime).unwrap_or(0));
        while lease.is_none() || orders.is_none() || relay.is_none() {
            if killed.elapsed() > timeout {
                bail!(
                    "run {run}: after killing {} the lease was taken in {lease:?}, orders resumed in {orders:?}, the relay in {relay:?} (s); the replicas' logs are in {}",
                    procs.replicas[holder].name,
                    dir.display()
                );
            }
            std::thread::sleep(POLL);
            let at = killed.elapsed();
            if lease.is_none() {
                let taken = (0..SIZE).find(|&i| i != holder && read(&logs[i]).matches(HOLDS).count() > acquisitions[i]);
                lease = taken.map(|i| (i, at.as_secs_f64()));
            }
            let calls = sims.calls();
            let last = stream_last(&runtime).unwrap_or(seq_base);
            if at < IN_FLIGHT_GRACE {
                (calls_base, seq_base) = (calls.len(), last);
                continue;
            }
            if orders.is_none()
                && let Some(call) = calls.get(calls_base)
            {
                orders = Some(call.at_unix_nanos.saturating_sub(kill_unix) as f64 / 1e9);
            }
            if relay.is_none() && last > seq_base {
                relay = Some(at.as_secs_f64());
            }
        }
        let (successor, lease_s) = lease.expect("measured");
        let r = Run {
            killed: holder,
            successor,
            lease_s,
            orders_s: orders.expect("measured"),
            relay_s: relay.expect("measured"),
        };
        println!(
            "bench: failover lease_s={:.2} orders_resume_s={:.2} relay_resume_s={:.2} run={run} killed={} new_holder={} orders_created={} transfers={}",
            r.lease_s,
            r.orders_s,
            r.relay_s,
            procs.replicas[r.killed].name,
            procs.replicas[r.successor].name,
            trickle.orders.load(Ordering::Relaxed),
            trickle.transfers.load(Ordering::Relaxed),
        );
        runs.push(r);
        procs.note(holder, "bench: starting again");
        procs.spawn(holder).map_err(|e| anyhow!(e))?;
        procs.wait_ready(holder).map_err(|e| anyhow!(e))?;
    }

    // Every order completes with one payout; the stream holds every event once.
    let created = trickle.stop()?;
    wait_for("every order completed", timeout, || api.all_completed(created).ok().filter(|done| *done))?;
    let mut payouts: HashMap<String, usize> = HashMap::new();
    for c in sims.calls().iter().filter(|c| c.connector == "payout" && c.effect) {
        *payouts.entry(c.key.clone()).or_default() += 1;
    }
    if payouts.len() as u64 != created || payouts.values().any(|n| *n != 1) {
        bail!("{} orders, {} payout keys paid, some more than once: {payouts:?}", created, payouts.len());
    }
    let head = api.event_head()?;
    wait_for("the relay caught up", timeout, || (stream_last(&runtime)? >= head).then_some(()))?;
    let stored = runtime.block_on(read_stream(&procs.nats_url(0), STREAM, timeout)).map_err(|e| anyhow!(e))?;
    if (stored.len() as u64) < head {
        bail!("the stream holds {} messages, the replicas {head} events", stored.len());
    }
    for (i, m) in stored.iter().enumerate() {
        if m.bursar_seq != Some(i as u64 + 1) {
            bail!("stream message {} holds event {:?}, not {}", m.stream_seq, m.bursar_seq, i + 1);
        }
    }
    let max = |f: fn(&Run) -> f64| runs.iter().map(f).fold(0.0, f64::max);
    let (orders_max, relay_max) = (max(|r| r.orders_s), max(|r| r.relay_s));
    let met = orders_max <= args.target_seconds && relay_max <= args.target_seconds;
    println!(
        "bench: failover runs={} lease_s_max={:.2} orders_resume_s_max={:.2} relay_resume_s_max={:.2} target_s={} met={} orders={created} payouts_once=ok relay_events={} relay_gaps=0 relay_duplicates=0",
        runs.len(),
        max(|r| r.lease_s),
        orders_max,
        relay_max,
        args.target_seconds,
        if met { "yes" } else { "no" },
        stored.len(),
    );
    drop(procs);
    Ok(())
}

/// The one replica whose log says it holds the lease now, if exactly one does.
fn single_holder(logs: &[PathBuf]) -> Option<usize> {
    let holders: Vec<usize> = (0..logs.len()).filter(|&i| holds_lease(&read(&logs[i]))).collect();
    (holders.len() == 1).then(|| holders[0])
}

/// Whether the process writing this log holds the lease: since the last
/// marker (the bench notes each kill and restart), it printed more
/// acquisitions than losses.
fn holds_lease(log: &str) -> bool {
    let current = log.rfind("=== chaos: ").map_or(log, |at| &log[at..]);
    current.matches(HOLDS).count() > current.matches(LOST).count()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh personal-data key for every replica (`BURSAR_PII_KEYS`).
fn pii_keys() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow!("the system's random source failed: {e}"))?;
    Ok(format!("1:{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The HTTP API of whichever replica `entry` names.
#[derive(Clone)]
struct Api {
    agent: ureq::Agent,
    bases: Vec<String>,
    entry: Arc<AtomicUsize>,
}

impl Api {
    fn new(https: &[String], entry: Arc<AtomicUsize>) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Api { agent, bases: https.iter().map(|h| format!("http://{h}")).collect(), entry }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.bases[self.entry.load(Ordering::Relaxed)])
    }

    /// POSTs until answered with something other than "try again" (no
    /// connection, 5xx, the same key in flight); the same key each time.
    fn post(&self, key: &str, idem: &str, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let sent = self
                .agent
                .post(self.url(path))
                .header("authorization", format!("Bearer {key}"))
                .header("idempotency-key", idem)
                .header("content-type", "application/json")
                .send(body.to_string());
            if let Ok(mut r) = sent {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                let retry = status >= 500 || (status == 409 && text.contains("idempotency_request_in_flight"));
                if !retry {
                    return Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
                }
            }
            if Instant::now() > deadline {
                bail!("POST {path} got no answer in 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut r = self.agent.get(self.url(path)).header("authorization", format!("Bearer {ADMIN_KEY}")).call()?;
        if r.status() != 200 {
            bail!("GET {path}: {}", r.status());
        }
        Ok(serde_json::from_str(&r.body_mut().read_to_string()?)?)
    }

    /// An operator key, the trickle's ledger and its two accounts.
    fn setup(&self) -> anyhow::Result<String> {
        let (status, key) = self.post(
            ADMIN_KEY,
            "bench-operator-key",
            "/v1/keys",
            &json!({"role": "operator", "ledgers": [], "name": "bench"}),
        )?;
        let operator = key["secret"].as_str().filter(|_| status == 201).context("creating an operator key")?;
        let ledger = json!({"id": LEDGER, "asset": "USD", "scale": 2});
        let (status, body) = self.post(ADMIN_KEY, "bench-ledger", "/v1/ledgers", &ledger)?;
        if status != 201 {
            bail!("creating ledger {LEDGER}: {status} {body}");
        }
        for id in ACCOUNTS {
            let account = json!({"id": id.to_string(), "ledger": LEDGER, "code": 1, "flags": []});
            let (status, body) = self.post(operator, &format!("bench-account-{id}"), "/v1/accounts", &account)?;
            if status != 201 {
                bail!("creating account {id}: {status} {body}");
            }
        }
        Ok(operator.to_string())
    }

    /// Whether orders 1..=count all completed (one that ended otherwise is an error).
    fn all_completed(&self, count: u64) -> anyhow::Result<bool> {
        let mut done = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/orders?limit=1000&cursor={c}"),
                None => "/v1/orders?limit=1000".to_string(),
            };
            let page = self.get(&path)?;
            for o in page["data"].as_array().context("a page of orders")? {
                match o["state"].as_str() {
                    Some("completed") => done += 1,
                    Some("cancelled" | "rejected" | "refunded" | "expired" | "failed") => {
                        bail!("order {} ended {}", o["id"], o["state"])
                    }
                    _ => {}
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(done == count),
            }
        }
    }

    /// The sequence of the newest event.
    fn event_head(&self) -> anyhow::Result<u64> {
        let (mut after, mut head) = ("0".to_string(), 0);
        loop {
            let page = self.get(&format!("/v1/events?after={after}&limit=1000"))?;
            let events = page["data"].as_array().context("a page of events")?;
            let Some(last) = events.last() else { return Ok(head) };
            head = last["seq"].as_u64().context("an event's seq")?;
            after = page["next_after"].as_str().context("next_after")?.to_string();
        }
    }
}

/// Orders and transfers at a steady rate, on a thread of their own.
struct Trickle {
    stop: Arc<AtomicBool>,
    orders: Arc<AtomicU64>,
    transfers: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Trickle {
    fn start(api: Api, operator: String, args: &FailoverArgs) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let (orders, transfers) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (order_every, transfer_every) = (
            Duration::from_secs_f64(1.0 / args.orders_per_s as f64),
            Duration::from_secs_f64(1.0 / args.transfers_per_s as f64),
        );
        let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x7121_c41e);
        let (s, o, t) = (Arc::clone(&stop), Arc::clone(&orders), Arc::clone(&transfers));
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) {
                let (o_next, t_next) =
                    (order_every * o.load(Ordering::Relaxed) as u32, transfer_every * t.load(Ordering::Relaxed) as u32);
                let next = o_next.min(t_next);
                if let Some(wait) = next.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                if o_next <= t_next {
                    let id = o.load(Ordering::Relaxed) + 1;
                    let amount: u64 = rng.random_range(1_000..500_000);
                    create_and_fund(&api, &operator, id, amount)?;
                    o.store(id, Ordering::Relaxed);
                } else {
                    let id = t.load(Ordering::Relaxed) + 1;
                    let body = json!({
                        "id": id.to_string(),
                        "debit_account_id": ACCOUNTS[(id % 2) as usize].to_string(),
                        "credit_account_id": ACCOUNTS[(1 - id % 2) as usize].to_string(),
                        "amount": "1",
                        "ledger": LEDGER,
                        "code": 1,
                    });
                    let (status, body) =
                        api.post(&operator, &format!("bench-transfer-{id}"), "/v1/transfers", &body)?;
                    if status != 201 && status != 200 {
                        bail!("transfer {id}: {status} {body}");
                    }
                    t.store(id, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Trickle { stop, orders, transfers, thread }
    }

    /// Stops the trickle; returns how many orders it created.
    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the trickle thread panicked"))??;
        Ok(self.orders.load(Ordering::Relaxed))
    }
}

fn create_and_fund(api: &Api, operator: &str, id: u64, amount: u64) -> anyhow::Result<()> {
    let order = json!({
        "id": id.to_string(),
        "customer_id": (1 + id % 20).to_string(),
        "source_asset": "USD",
        "source_amount": amount.to_string(),
        "target_asset": "EUR",
        "sender": {"name": "Bench Sender", "country": "GB"},
        "recipient": {"name": "Bench Recipient", "bank_account": "NL91ABNA0417164300"},
    });
    let (status, body) = api.post(operator, &format!("bench-order-{id}"), "/v1/orders", &order)?;
    if status != 201 && status != 200 {
        bail!("order {id}: {status} {body}");
    }
    let funds = json!({"amount": amount.to_string(), "reference": format!("IN-{id}")});
    let (status, body) = api.post(operator, &format!("bench-funds-{id}"), &format!("/v1/orders/{id}/funds"), &funds)?;
    let moved_on = status == 409
        && body["code"].as_str().is_some_and(|c| {
            c.starts_with("order_is_")
                && !matches!(c, "order_is_created" | "order_is_awaiting_funds" | "order_is_cancelled")
        });
    if status != 200 && !moved_on {
        bail!("funds of order {id}: {status} {body}");
    }
    Ok(())
}
