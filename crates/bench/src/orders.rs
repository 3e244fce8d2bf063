//! `bursar bench orders`: payment orders driven from creation to completed
//! by the executor against the built-in simulators, on an embedded node,
//! with the ledger and order invariants verified offline at the end.

use anyhow::{Context, bail};
use bursar_core::Operation;
use bursar_core::orders::OrderState;
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::records::BATCH_EVENTS_MAX;
use bursar_crypto::pii::{OrderPii, PiiKeyring};
use bursar_server::{Node, NodeConfig};
use bursar_workflow::connectors::{SimConfig, SimulatorsConfig};
use bursar_workflow::engine_link::EngineLink;
use bursar_workflow::new_order::{NewOrder, create_event};
use bursar_workflow::runtime::{ConnectorSource, WorkflowSettings};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct OrdersArgs {
    /// Orders to drive to completion.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    orders: u64,
    /// Simulated latency of every connector call, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
    /// Orders per create request.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=BATCH_EVENTS_MAX as u64))]
    batch: u64,
    /// Give up if not all orders complete within this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

pub fn run(args: OrdersArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("bursar-bench-orders-").tempdir()?;
    let node = Node::start(NodeConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?))
        .context("starting an embedded server")?;
    let settings = settings(&args)?;
    let workflows = bursar_workflow::runtime::start(&node.handle(), settings.clone())
        .map_err(|e| anyhow::anyhow!("starting the workflows: {e}"))?;
    let link = EngineLink::new(&node.handle().engine_handle());
    let rt = node.handle().runtime.clone();
    eprintln!(
        "bench: {} orders, connector latency {} ms, data dir {}",
        args.orders,
        args.latency_ms,
        dir.path().display()
    );
    let started = Instant::now();
    let watcher =
        rt.spawn(watch_completions(link.clone(), args.orders as usize, Duration::from_secs(args.timeout_seconds)));
    let created = rt.block_on(create_all(&link, &settings, &args))?;
    let completed = rt.block_on(watcher)?.map_err(|e| anyhow::anyhow!(e))?;
    let seconds = completed.values().max().map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    let mut latency = Histogram::<u64>::new(3)?;
    for (id, done) in &completed {
        latency.record(done.duration_since(created[id]).as_micros() as u64)?;
    }
    let rss_mb = super::peak_rss_mb();
    let payouts = workflows
        .simulators
        .as_ref()
        .map_or(0, |s| s.calls().iter().filter(|c| c.connector == "payout" && c.effect).count());
    node.shutdown();
    let report = bursar_server::verify::verify(dir.path()).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
    eprintln!("bench: {}", report.summary());
    if payouts != args.orders as usize {
        bail!("{payouts} payouts for {} orders", args.orders);
    }
    println!(
        "bench: orders={} latency_ms={} seconds={:.2} orders_per_s={} p50_ms={:.1} p99_ms={:.1} rss_mb={} verified=ok",
        args.orders,
        args.latency_ms,
        seconds,
        (args.orders as f64 / seconds) as u64,
        latency.value_at_quantile(0.50) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        rss_mb
    );
    Ok(())
}

fn settings(args: &OrdersArgs) -> anyhow::Result<WorkflowSettings> {
    let latency = Duration::from_millis(args.latency_ms);
    let sim = SimConfig { latency, ..Default::default() };
    let sims = SimulatorsConfig {
        screening: sim.clone(),
        fx: sim.clone(),
        payout: sim.clone(),
        funds: sim,
        funds_auto_pay_after: Some(latency),
        ..Default::default()
    };
    let keyring = Arc::new(PiiKeyring::generate().map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut settings = WorkflowSettings::new(OrdersConfig::default(), keyring);
    settings.connectors = ConnectorSource::Simulated(Box::new(sims));
    settings.executor.max_in_flight = 250_000;
    Ok(settings)
}

/// Creates every order in batches; returns when each was acknowledged.
async fn create_all(
    link: &EngineLink,
    s: &WorkflowSettings,
    args: &OrdersArgs,
) -> anyhow::Result<HashMap<u128, Instant>> {
    let pii = OrderPii {
        sender_name: "Bench Sender".into(),
        sender_country: "US".into(),
        recipient_name: "Bench Recipient".into(),
        recipient_bank_account: "DE89370400440532013000".into(),
    };
    let mut created = HashMap::with_capacity(args.orders as usize);
    let ids: Vec<u128> = (1..=u128::from(args.orders)).collect();
    for chunk in ids.chunks(args.batch as usize) {
        let events = chunk
            .iter()
            .map(|&id| {
                let o = NewOrder {
                    id,
                    customer_id: 1 + id % 1000,
                    source_asset: "USD",
                    source_amount: 10_000 + id % 100,
                    target_asset: "EUR",
                    payout_at: 0,
                    pii: &pii,
                };
                create_event(&s.orders, &o, &s.keyring).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let at = Instant::now();
        let response = link
            .request(Operation::CreateOrders, bytemuck::cast_slice(&events).to_vec())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if response.count != 0 {
            bail!("{} orders of a batch were refused", response.count);
        }
        created.extend(chunk.iter().map(|&id| (id, at)));
    }
    Ok(created)
}

/// Follows the change feed until `count` orders are completed; when each was seen so.
async fn watch_completions(
    link: EngineLink,
    count: usize,
    timeout: Duration,
) -> Result<HashMap<u128, Instant>, String> {
    let deadline = Instant::now() + timeout;
    let mut done = HashMap::with_capacity(count);
    let mut cursor = 0;
    while done.len() < count {
        // Summaries: the watcher needs only ids and states.
        let page = link.feed(cursor, BATCH_EVENTS_MAX as u32, 0).await?;
        let now = Instant::now();
        for o in &page {
            cursor = o.change.change_seq;
            match o.state {
                OrderState::Completed => {
                    done.entry(o.change.id).or_insert(now);
                }
                s if s.is_terminal() => return Err(format!("order {} ended {}", o.change.id, s.name())),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {count} orders completed in {timeout:?}", done.len()));
        }
        if page.len() < BATCH_EVENTS_MAX {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(done)
}
