//! `bursar bench --http`: the same workload through the HTTP/JSON API, every
//! request with its own Idempotency-Key, from concurrent keep-alive clients.

use super::LoadArgs;
use super::load::{LoadParams, report_progress};
use super::workload::{BENCH_LEDGER, Generator, Tally};
use anyhow::{Context, bail};
use bursar_core::records::BATCH_EVENTS_MAX;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Http = Client<HttpConnector, Full<Bytes>>;

/// One API endpoint and key.
#[derive(Clone)]
struct Api {
    client: Http,
    base: String,
    key: String,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        idempotency: Option<&str>,
        body: String,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json");
        if let Some(k) = idempotency {
            req = req.header("idempotency-key", k);
        }
        let response = self.client.request(req.body(Full::new(Bytes::from(body)))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: String,
        ok: &[StatusCode],
    ) -> anyhow::Result<serde_json::Value> {
        let (status, bytes) = self.send(method, path, key, body).await?;
        if !ok.contains(&status) {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let p = args.params();
    let temp;
    let (base, admin, node) = match &args.addr {
        Some(addr) => {
            let key = args.key.clone().context("--http with --addr needs --key (or BURSAR_KEY): an admin key")?;
            (format!("http://{addr}"), key, None)
        }
        None => {
            temp = tempfile::Builder::new().prefix("bursar-bench-").tempdir()?;
            let admin = bursar_server::keys::generate_token();
            let mut config = bursar_server::NodeConfig::new(temp.path().to_path_buf(), "127.0.0.1:0".parse()?);
            config.admin_key = Some(admin.clone());
            config.snapshot_every_bytes = args.snapshot_every_mib << 20;
            let node = bursar_server::Node::start(config).context("starting an embedded server")?;
            let http = bursar_http::start(&node.handle(), "127.0.0.1:0".parse()?, Default::default(), None)
                .map_err(|e| anyhow::anyhow!(e))?;
            eprintln!("bench: embedded server, HTTP API on {} (data dir {})", http.local_addr(), temp.path().display());
            (format!("http://{}", http.local_addr()), admin, Some(node))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(drive(base, admin, &p));
    let rss_mb = super::peak_rss_mb();
    drop(runtime);
    if let Some(node) = node {
        node.shutdown();
    }
    let (seconds, latency, tally) = result?;
    let n = tally.applied + tally.rejected;
    println!(
        "bench: transfers={} seconds={:.2} tps={} batch_p50_ms={:.2} batch_p99_ms={:.2} batch_max_ms={:.2} rss_mb={}",
        n,
        seconds,
        (n as f64 / seconds) as u64,
        latency.value_at_quantile(0.50) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
        rss_mb
    );
    if tally.rejected > 0 {
        bail!("{} transfers were rejected (first: {:?})", tally.rejected, tally.first_rejection);
    }
    Ok(())
}

async fn drive(base: String, admin: String, p: &LoadParams) -> anyhow::Result<(f64, Histogram<u64>, Tally)> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(p.clients * 2).build(connector);
    let admin_api = Api { client: client.clone(), base: base.clone(), key: admin };
    let operator = setup(&admin_api, p).await?;
    let api = Api { client, base, key: operator };
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (acked, done) = (acked.clone(), done.clone());
        std::thread::spawn(move || report_progress(&acked, &done))
    };
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..p.clients as u64)
        .map(|c| tokio::spawn(client_task(api.clone(), p.clone(), c, next.clone(), acked.clone())))
        .collect();
    let mut tally = Tally::new(p.accounts);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let mut failure = None;
    for t in tasks {
        match t.await? {
            Ok((t, l)) => {
                tally.merge(&t);
                latency.add(&l).expect("same bounds");
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let _ = reporter.join();
    if let Some(e) = failure {
        return Err(e);
    }
    check(&api, p, &tally).await?;
    Ok((seconds, latency, tally))
}

/// The bench ledger, an operator key and the accounts.
async fn setup(admin: &Api, p: &LoadParams) -> anyhow::Result<String> {
    let run = p.ids.run;
    let ledger = format!(r#"{{"id":{BENCH_LEDGER},"asset":"BENCH","scale":2}}"#);
    let ok = [StatusCode::OK, StatusCode::CREATED];
    admin.expect(Method::POST, "/v1/ledgers", Some(&format!("bench-{run}-ledger")), ledger, &ok).await?;
    let key = admin
        .expect(
            Method::POST,
            "/v1/keys",
            Some(&format!("bench-{run}-key")),
            r#"{"role":"operator","name":"bench"}"#.into(),
            &ok,
        )
        .await?;
    let secret = key["secret"].as_str().context("the key response has no secret")?.to_string();
    let operator = Api { key: secret.clone(), ..admin.clone() };
    let mut start = 0;
    while start < p.accounts {
        let n = (p.accounts - start).min(BATCH_EVENTS_MAX as u64);
        let mut body = String::from(r#"{"accounts":["#);
        for i in start..start + n {
            if i > start {
                body.push(',');
            }
            let _ = write!(body, r#"{{"id":"{}","ledger":{BENCH_LEDGER},"code":1}}"#, p.ids.account(i));
        }
        body.push_str("]}");
        let r = operator
            .expect(
                Method::POST,
                "/v1/accounts/batch",
                Some(&format!("bench-{run}-accounts-{start}")),
                body,
                &[StatusCode::OK],
            )
            .await?;
        if r["accepted"].as_u64() != Some(n) {
            bail!("creating accounts failed: {r}");
        }
        start += n;
    }
    Ok(secret)
}

type TaskResult = anyhow::Result<(Tally, Histogram<u64>)>;

async fn client_task(api: Api, p: LoadParams, client: u64, next: Arc<AtomicU64>, acked: Arc<AtomicU64>) -> TaskResult {
    let mut generator = Generator::new(p.distribution, p.accounts, p.seed.wrapping_mul(31).wrapping_add(client));
    let mut tally = Tally::new(p.accounts);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let mut batch = Vec::with_capacity(p.batch);
    let mut body = String::new();
    loop {
        let first = next.fetch_add(p.batch as u64, Ordering::Relaxed);
        if first >= p.transfers {
            return Ok((tally, latency));
        }
        let count = (p.transfers - first).min(p.batch as u64) as usize;
        generator.fill(&p.ids, first, count, &mut batch);
        body.clear();
        let single = p.batch == 1;
        if single {
            transfer_json(&mut body, &batch[0]);
        } else {
            body.push_str(r#"{"transfers":["#);
            for (i, t) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                transfer_json(&mut body, t);
            }
            body.push_str("]}");
        }
        let key = format!("bench-{}-{first}", p.ids.run);
        let path = if single { "/v1/transfers" } else { "/v1/transfers/batch" };
        let sent = Instant::now();
        let (status, bytes) = send_with_retry(&api, path, &key, &body).await?;
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        let results = if single {
            if status != StatusCode::CREATED {
                bail!("transfer {}: {status}: {}", batch[0].id, String::from_utf8_lossy(&bytes));
            }
            Vec::new()
        } else {
            if status != StatusCode::OK {
                bail!("batch at {first}: {status}: {}", String::from_utf8_lossy(&bytes));
            }
            batch_failures(&bytes)?
        };
        tally.record(&p.ids, &batch, &results);
        acked.fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Retries overload answers (503, 409 in flight) with the same key: the
/// request is idempotent, so a retry never applies it twice.
async fn send_with_retry(api: &Api, path: &str, key: &str, body: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..20 {
        let r = api.send(Method::POST, path, Some(key), body.to_string()).await;
        match r {
            Ok((s, _)) if s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::CONFLICT => {}
            Ok(ok) => return Ok(ok),
            Err(e) if delay > Duration::from_secs(1) => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    bail!("{path}: still overloaded after 20 retries")
}

fn transfer_json(out: &mut String, t: &bursar_core::Transfer) {
    let _ = write!(
        out,
        r#"{{"id":"{}","debit_account_id":"{}","credit_account_id":"{}","amount":"{}","ledger":{},"code":{}}}"#,
        t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code
    );
}

/// The failed events of a batch response, as the tally wants them.
fn batch_failures(bytes: &[u8]) -> anyhow::Result<Vec<bursar_core::EventResult>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("a batch response is JSON")?;
    let results = v["results"].as_array().context("a batch response has results")?;
    Ok(results
        .iter()
        .map(|r| bursar_core::EventResult {
            index: r["index"].as_u64().unwrap_or(0) as u32,
            code: bursar_core::CreateTransferResult::ALL
                .iter()
                .find(|c| Some(c.name()) == r["code"].as_str())
                .map_or(u32::MAX, |c| c.code()),
        })
        .collect())
}

/// Reads every account back over HTTP and compares with the tally.
async fn check(api: &Api, p: &LoadParams, tally: &Tally) -> anyhow::Result<()> {
    let mut accounts = Vec::with_capacity(p.accounts as usize);
    for i in 0..p.accounts {
        let id = p.ids.account(i);
        let v = api.expect(Method::GET, &format!("/v1/accounts/{id}"), None, String::new(), &[StatusCode::OK]).await?;
        let field = |f: &str| v[f].as_str().and_then(|s| s.parse::<u128>().ok()).unwrap_or(u128::MAX);
        accounts.push(bursar_core::Account {
            id,
            debits_posted: field("debits_posted"),
            credits_posted: field("credits_posted"),
            debits_pending: field("debits_pending"),
            credits_pending: field("credits_pending"),
            ..Default::default()
        });
    }
    tally.check(&p.ids, &accounts).map_err(|e| anyhow::anyhow!("balance check failed: {e}"))
}
