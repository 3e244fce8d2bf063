//! Orders driven end to end by the executor against the simulators, on a
//! real node with a real log: completion, connector faults and outages,
//! deadlines across a restart, and the ledger's invariants at the end.

use bursar_core::Operation;
use bursar_core::orders::settings::OrdersConfig;
use bursar_core::orders::{Order, OrderState};
use bursar_crypto::pii::{OrderPii, PiiKeyring};
use bursar_runtime::resilience::{BreakerConfig, RetryPolicy};
use bursar_server::{Node, NodeConfig};
use bursar_workflow::connectors::{ScreeningRules, SimConfig, SimulatorsConfig};
use bursar_workflow::engine_link::EngineLink;
use bursar_workflow::executor::ExecutorSettings;
use bursar_workflow::new_order::{NewOrder, create_event};
use bursar_workflow::runtime::{ConnectorSource, WorkflowSettings, Workflows};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pii() -> OrderPii {
    OrderPii {
        sender_name: "Ada Lovelace".into(),
        sender_country: "GB".into(),
        recipient_name: "Charles Babbage".into(),
        recipient_bank_account: "DE89370400440532013000".into(),
    }
}

struct Running {
    node: Node,
    workflows: Workflows,
    link: EngineLink,
}

fn start(dir: &Path, settings: &WorkflowSettings) -> Running {
    let config = NodeConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    let node = Node::start(config).expect("the node starts");
    let workflows = bursar_workflow::runtime::start(&node.handle(), settings.clone()).expect("workflows start");
    let link = EngineLink::new(&node.handle().engine_handle());
    Running { node, workflows, link }
}

fn settings(sims: SimulatorsConfig, orders: OrdersConfig) -> WorkflowSettings {
    let mut s = WorkflowSettings::new(orders, Arc::new(PiiKeyring::generate().unwrap()));
    s.connectors = ConnectorSource::Simulated(Box::new(sims));
    s.retry = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        attempt_timeout: Duration::from_millis(200),
    };
    s.breaker = BreakerConfig { failure_threshold: 20, open_for: Duration::from_millis(500), half_open_probes: 1 };
    s.executor = ExecutorSettings {
        defer_base: Duration::from_millis(20),
        defer_max: Duration::from_millis(500),
        payout_poll: Duration::from_millis(50),
        ..Default::default()
    };
    s
}

fn auto_pay() -> SimulatorsConfig {
    SimulatorsConfig { funds_auto_pay_after: Some(Duration::ZERO), ..Default::default() }
}

fn create(r: &Running, s: &WorkflowSettings, ids: std::ops::Range<u128>, amount: u128) {
    let events: Vec<_> = ids
        .map(|id| {
            let p = pii();
            let new = NewOrder {
                id,
                customer_id: 1 + id % 7,
                source_asset: "USD",
                source_amount: amount,
                target_asset: "EUR",
                payout_at: 0,
                pii: &p,
            };
            create_event(&s.orders, &new, &s.keyring).unwrap()
        })
        .collect();
    let response = r
        .node
        .handle()
        .runtime
        .block_on(r.link.request(Operation::CreateOrders, bytemuck::cast_slice(&events).to_vec()))
        .unwrap();
    assert_eq!(response.count, 0, "every order is created");
}

fn orders(r: &Running) -> BTreeMap<u128, Order> {
    let all = r.node.handle().runtime.block_on(r.link.changes(0, bursar_core::limits::ORDER_PAGE_MAX)).unwrap();
    all.into_iter().map(|o| (o.id, o)).collect()
}

/// Waits until every order is in a terminal state; panics with the stuck ones.
fn wait_terminal(r: &Running, count: usize, within: Duration) -> BTreeMap<u128, Order> {
    let deadline = Instant::now() + within;
    loop {
        let all = orders(r);
        if all.len() == count && all.values().all(|o| o.state().is_terminal()) {
            return all;
        }
        if Instant::now() > deadline {
            let stuck: Vec<_> =
                all.values().filter(|o| !o.state().is_terminal()).map(|o| (o.id, o.state().name())).take(10).collect();
            panic!("orders not finished after {within:?}: {stuck:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_and_verify(r: Running, dir: &Path) {
    r.node.shutdown();
    let report = bursar_server::verify::verify(dir).expect("the log verifies with every invariant");
    assert!(report.summary().contains("ok") || !report.summary().is_empty());
}

#[test]
fn orders_complete_and_each_payout_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(auto_pay(), OrdersConfig::default());
    let r = start(dir.path(), &s);
    create(&r, &s, 1..501, 10_000);
    let done = wait_terminal(&r, 500, Duration::from_secs(60));
    assert!(done.values().all(|o| o.state() == OrderState::Completed));
    let rate = bursar_workflow::connectors::default_fx_rates()[&("USD".to_string(), "EUR".to_string())];
    let target = bursar_core::orders::money::convert(10_000 - 50, rate).unwrap();
    assert!(done.values().all(|o| o.fee_amount == 50 && o.target_amount == target), "0.5% fee, then the quoted rate");
    let calls = r.workflows.simulators.as_ref().unwrap().calls();
    let payouts: Vec<_> = calls.iter().filter(|c| c.connector == "payout" && c.effect).collect();
    assert_eq!(payouts.len(), 500, "one payout per order");
    let keys: std::collections::BTreeSet<_> = payouts.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), 500);
    assert!(keys.iter().all(|k| k.starts_with("order-") && k.ends_with("-payout")));
    stop_and_verify(r, dir.path());
}

#[test]
fn connector_faults_and_an_outage_delay_orders_but_all_finish() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = SimConfig { failure_rate: 0.3, timeout_rate: 0.05, ..Default::default() };
    let sims = SimulatorsConfig {
        screening: flaky.clone(),
        fx: flaky.clone(),
        payout: flaky.clone(),
        funds: flaky,
        ..auto_pay()
    };
    let s = settings(sims, OrdersConfig::default());
    let r = start(dir.path(), &s);
    let sims = r.workflows.simulators.clone().unwrap();
    sims.set_down(true);
    create(&r, &s, 1..201, 10_000);
    // Long enough for every breaker to open and orders to be deferred.
    std::thread::sleep(Duration::from_secs(2));
    let waiting = orders(&r);
    assert!(waiting.values().all(|o| o.state() == OrderState::Created), "nothing moves during the outage");
    assert!(waiting.values().any(|o| o.attempts > 0), "orders were deferred durably");
    sims.set_down(false);
    let done = wait_terminal(&r, 200, Duration::from_secs(120));
    assert!(done.values().all(|o| o.state() == OrderState::Completed));
    let effects = sims.calls().iter().filter(|c| c.connector == "payout" && c.effect).count();
    assert_eq!(effects, 200, "retries never pay twice");
    stop_and_verify(r, dir.path());
}

#[test]
fn deadlines_fire_once_across_a_restart_and_release_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rules = ScreeningRules { high_risk_countries: vec!["GB".into()], ..Default::default() };
    let config = OrdersConfig { funds_timeout_seconds: 2, review_timeout_seconds: 2, ..OrdersConfig::default() };
    // Order 1 is never paid (funds deadline); order 2 is paid by hand and
    // goes to review (high-risk country), where its review deadline passes.
    let sims = SimulatorsConfig { screening_rules: rules, ..Default::default() };
    let s = settings(sims, config);
    let r = start(dir.path(), &s);
    create(&r, &s, 1..3, 10_000);
    let funds = bursar_core::orders::OrderCommand {
        amount: 10_000,
        ..bursar_core::orders::OrderCommand::new(
            2,
            bursar_core::orders::CommandKind::FundsReceived,
            bursar_core::orders::Actor::Bank,
        )
    };
    let rt = r.node.handle().runtime.clone();
    let codes = rt.block_on(r.link.order_commands(&[funds])).unwrap();
    assert_eq!(codes, vec![0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while orders(&r)[&2].state() != OrderState::OnHold {
        assert!(Instant::now() < deadline, "order 2 reaches review");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Restart before the deadlines pass: timers are state, not memory.
    r.node.shutdown();
    let r = start(dir.path(), &s);
    let done = wait_terminal(&r, 2, Duration::from_secs(20));
    assert_eq!(done[&1].state(), OrderState::Expired);
    assert_eq!(done[&2].state(), OrderState::Expired);
    std::thread::sleep(Duration::from_millis(500));
    let rt = r.node.handle().runtime.clone();
    for id in [1u128, 2] {
        let response = rt.block_on(r.link.request(Operation::GetOrderEvents, id.to_le_bytes().to_vec())).unwrap();
        let events = bursar_core::orders::TimelineEvent::decode_list(&response.body).unwrap();
        let expiries = events.iter().filter(|e| e.kind == bursar_core::orders::book::EVENT_EXPIRE).count();
        assert_eq!(expiries, 1, "order {id}'s deadline fired once");
    }
    stop_and_verify(r, dir.path());
}

/// Connectors over HTTP that refuse the node's credentials: the order waits
/// in its state (no connector effect, no transition); with the right token
/// after a restart it moves on (docs/connectors.md).
#[test]
fn orders_wait_while_the_connectors_refuse_the_credentials() {
    use bursar_workflow::connectors::{
        ConnectorAuth, HttpConnectorsConfig, SimServerOptions, Simulators, serve_simulators_with,
    };
    let dir = tempfile::tempdir().unwrap();
    let sims = Simulators::with_controls(SimulatorsConfig::default(), Default::default(), None);
    let token = ConnectorAuth::default().with_token("the-right-connector-token").unwrap();
    let options = SimServerOptions { auth: token.clone(), ..Default::default() };
    let refused = options.refused.clone();
    // The connector service outlives the node's restart.
    let service = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = service.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    service.spawn(serve_simulators_with(sims.clone(), listener, options));

    let mut s = settings(SimulatorsConfig::default(), OrdersConfig::default());
    s.retry.attempt_timeout = Duration::from_secs(5);
    let with = |auth: ConnectorAuth| {
        let mut s = s.clone();
        s.connectors =
            ConnectorSource::Http(HttpConnectorsConfig { base_url: base_url.clone(), auth, ..Default::default() });
        s
    };
    let wrong = with(ConnectorAuth::default().with_token("a-wrong-connector-token").unwrap());
    let r = start(dir.path(), &wrong);
    create(&r, &wrong, 1..2, 10_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the executor never called the connector");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(orders(&r)[&1].state(), OrderState::Created, "a refused call changes nothing");
    assert!(sims.calls().is_empty(), "no connector effect");
    r.node.shutdown();

    let right = with(token);
    let r = start(dir.path(), &right);
    let deadline = Instant::now() + Duration::from_secs(60);
    while orders(&r)[&1].state() == OrderState::Created {
        assert!(Instant::now() < deadline, "the order never moved with the right token");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(orders(&r)[&1].state(), OrderState::AwaitingFunds);
    assert_eq!(sims.calls().iter().filter(|c| c.connector == "funds" && c.effect).count(), 1);
    stop_and_verify(r, dir.path());
}
