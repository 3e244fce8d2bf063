//! Connector simulators and their HTTP clients and server: idempotency (same
//! key, same result, one side effect), fault injection, outage switch,
//! screening rules, payout settlement, auto-paid funds, the call log, and
//! error mapping over HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bursar_workflow::connectors::{
    AssetLimits, CallRecord, ConnectorAuth, ConnectorError, Connectors, FundsNotification, FundsRequest,
    FundsSimulator, FxRates, FxSimulator, HttpEndpoint, HttpFxRates, HttpSimControl, IncomingFunds, PayoutRail,
    PayoutRequest, PayoutSettings, PayoutSimulator, PayoutStatus, RATE_SCALE_PPB, Screening, ScreeningRequest,
    ScreeningRules, ScreeningSimulator, ScreeningVerdict, SimClock, SimConfig, SimControls, Simulators,
    SimulatorsConfig, default_fx_rates, http_client, serve_simulators,
};
use tokio::sync::mpsc;

/// 2024-02-01T00:00:00Z: the start of a day and of a month.
const START_NANOS: u64 = 1_706_745_600 * 1_000_000_000;
const DAY: Duration = Duration::from_secs(86_400);

fn manual_controls() -> SimControls {
    SimControls::new(SimClock::manual(START_NANOS))
}

fn effects(calls: &[CallRecord], connector: &str, operation: &str) -> usize {
    calls.iter().filter(|c| c.connector == connector && c.operation == operation && c.effect).count()
}

fn payout_request(order_id: u128) -> PayoutRequest {
    PayoutRequest {
        order_id,
        asset: "EUR".into(),
        amount: 10_000,
        recipient_name: "Ada Lovelace".into(),
        bank_account: "GB29 NWBK 6016 1331 9268 19".into(),
    }
}

fn screening_request(customer_id: u128, amount: u128) -> ScreeningRequest {
    ScreeningRequest {
        order_id: 1,
        customer_id,
        asset: "USD".into(),
        amount,
        sender_name: "Grace Hopper".into(),
        sender_country: "US".into(),
        recipient_name: "Alan Turing".into(),
    }
}

fn funds_request(order_id: u128) -> FundsRequest {
    FundsRequest { order_id, customer_id: 7, asset: "USD".into(), amount: 25_000 }
}

fn failing(failure_rate: f64, timeout_rate: f64) -> SimConfig {
    SimConfig { failure_rate, timeout_rate, ..SimConfig::default() }
}

#[tokio::test]
async fn payout_same_key_pays_once() {
    let controls = manual_controls();
    let rail = PayoutSimulator::new(controls.clone(), SimConfig::default(), PayoutSettings::default());
    let request = payout_request(1);
    let first = rail.send("order-1/payout", &request).await.unwrap();
    assert!(matches!(&first, PayoutStatus::Confirmed { reference } if !reference.is_empty()), "{first:?}");
    for _ in 0..4 {
        assert_eq!(rail.send("order-1/payout", &request).await.unwrap(), first);
    }
    assert_eq!(rail.status("order-1/payout").await.unwrap(), first);
    assert_eq!(effects(&controls.calls(), "payout", "send"), 1);
    assert_eq!(controls.calls().len(), 6);

    let second = rail.send("order-2/payout", &payout_request(2)).await.unwrap();
    assert_ne!(second, first, "a new key is a new payout with its own reference");
    assert_eq!(effects(&controls.calls(), "payout", "send"), 2);
}

#[tokio::test]
async fn reusing_a_key_for_another_request_is_rejected() {
    let controls = manual_controls();
    let rail = PayoutSimulator::new(controls.clone(), SimConfig::default(), PayoutSettings::default());
    rail.send("k", &payout_request(1)).await.unwrap();
    let err = rail.send("k", &payout_request(2)).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Rejected(m) if m.contains("idempotency key reused")), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(effects(&controls.calls(), "payout", "send"), 1);
}

#[tokio::test]
async fn payout_validation_and_unknown_status() {
    let rail = PayoutSimulator::new(manual_controls(), SimConfig::default(), PayoutSettings::default());
    let zero = PayoutRequest { amount: 0, ..payout_request(1) };
    assert!(matches!(rail.send("zero", &zero).await, Err(ConnectorError::Rejected(_))));
    assert_eq!(rail.status("never-sent").await, Err(ConnectorError::Rejected("unknown payout".into())));
    assert_eq!(
        rail.send("", &payout_request(1)).await,
        Err(ConnectorError::Rejected("missing idempotency key".into()))
    );
}

#[tokio::test]
async fn payout_confirms_after_delay() {
    let controls = manual_controls();
    let settings = PayoutSettings { confirm_after: Duration::from_secs(60), payout_failure_rate: 0.0 };
    let rail = PayoutSimulator::new(controls.clone(), SimConfig::default(), settings);
    let sent = rail.send("k", &payout_request(1)).await.unwrap();
    let PayoutStatus::Pending { reference } = sent else { panic!("expected pending, got {sent:?}") };
    controls.clock().advance(Duration::from_secs(59));
    assert_eq!(rail.status("k").await.unwrap(), PayoutStatus::Pending { reference: reference.clone() });
    controls.clock().advance(Duration::from_secs(1));
    assert_eq!(rail.status("k").await.unwrap(), PayoutStatus::Confirmed { reference: reference.clone() });
    assert_eq!(rail.send("k", &payout_request(1)).await.unwrap(), PayoutStatus::Confirmed { reference });
    assert_eq!(effects(&controls.calls(), "payout", "send"), 1);
}

#[tokio::test]
async fn payout_business_failure_is_decided_once() {
    let controls = manual_controls();
    let settings = PayoutSettings { confirm_after: Duration::from_secs(5), payout_failure_rate: 1.0 };
    let rail = PayoutSimulator::new(controls.clone(), SimConfig::default(), settings);
    assert!(matches!(rail.send("k", &payout_request(1)).await.unwrap(), PayoutStatus::Pending { .. }));
    controls.clock().advance(Duration::from_secs(5));
    let failed = rail.status("k").await.unwrap();
    assert!(matches!(&failed, PayoutStatus::Failed { reason } if !reason.is_empty()), "{failed:?}");
    assert_eq!(rail.send("k", &payout_request(1)).await.unwrap(), failed);
    assert_eq!(effects(&controls.calls(), "payout", "send"), 1);
}

#[tokio::test]
async fn fx_same_key_same_quote() {
    let controls = manual_controls();
    let fx = FxSimulator::new(controls.clone(), SimConfig::default(), default_fx_rates(), Duration::from_secs(30));
    let quote = fx.quote("order-1/fx", "USD", "EUR", 10_000).await.unwrap();
    assert_eq!(quote.rate_ppb, 920_000_000);
    assert_eq!(quote.expires_at_unix_nanos, START_NANOS + 30_000_000_000);
    assert_ne!(quote.quote_id, 0);
    controls.clock().advance(Duration::from_secs(10));
    assert_eq!(fx.quote("order-1/fx", "USD", "EUR", 10_000).await.unwrap(), quote);
    let other = fx.quote("order-2/fx", "USD", "EUR", 10_000).await.unwrap();
    assert_ne!(other.quote_id, quote.quote_id);
    assert_eq!(other.expires_at_unix_nanos, START_NANOS + 40_000_000_000);
    assert_eq!(effects(&controls.calls(), "fx", "quote"), 2);
}

#[tokio::test]
async fn fx_rates_table() {
    let fx = FxSimulator::new(manual_controls(), SimConfig::default(), default_fx_rates(), Duration::from_secs(30));
    let err = fx.quote("a", "USD", "XAU", 100).await.unwrap_err();
    assert_eq!(err, ConnectorError::Rejected("no rate for USD/XAU".into()));
    assert_eq!(fx.quote("b", "GBP", "GBP", 100).await.unwrap().rate_ppb, RATE_SCALE_PPB);
    assert!(matches!(fx.quote("c", "USD", "EUR", 0).await, Err(ConnectorError::Rejected(_))));
    let assets = ["USD", "EUR", "GBP", "JPY"];
    for (i, source) in assets.iter().enumerate() {
        for target in assets.iter().filter(|t| *t != source) {
            let key = format!("{source}-{target}-{i}");
            let rate = fx.quote(&key, source, target, 1).await.unwrap().rate_ppb;
            assert!(rate > 0, "{source}/{target}");
        }
    }
}

#[tokio::test]
async fn failure_rate_one_fails_without_effect() {
    let controls = manual_controls();
    let rail = PayoutSimulator::new(controls.clone(), failing(1.0, 0.0), PayoutSettings::default());
    for _ in 0..3 {
        let err = rail.send("k", &payout_request(1)).await.unwrap_err();
        assert_eq!(err, ConnectorError::Unavailable("simulated failure".into()));
        assert!(err.is_retryable());
    }
    let calls = controls.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.outcome == "unavailable" && !c.effect), "{calls:?}");

    // A rail sharing nothing but the config shape: with failures off the
    // same kind of call performs the effect on the first attempt.
    let healthy = PayoutSimulator::new(controls.clone(), SimConfig::default(), PayoutSettings::default());
    healthy.send("k", &payout_request(1)).await.unwrap();
    assert_eq!(effects(&controls.calls(), "payout", "send"), 1);
}

#[tokio::test]
async fn failures_then_retry_performs_the_effect_once() {
    // Seeded: half the calls fail; retrying one key until it succeeds must
    // pay exactly once, and every later retry must not pay again.
    let controls = manual_controls();
    let config = SimConfig { failure_rate: 0.5, seed: Some(7), ..SimConfig::default() };
    let rail = PayoutSimulator::new(controls.clone(), config, PayoutSettings::default());
    let mut successes = 0;
    for _ in 0..40 {
        if rail.send("k", &payout_request(1)).await.is_ok() {
            successes += 1;
        }
    }
    let calls = controls.calls();
    assert!(successes > 0 && successes < 40, "{successes}");
    assert!(calls.iter().any(|c| c.outcome == "unavailable"));
    assert_eq!(effects(&calls, "payout", "send"), 1);
}

#[tokio::test]
async fn seeded_faults_are_reproducible() {
    async fn outcomes(seed: u64) -> Vec<String> {
        let controls = manual_controls();
        let fx = FxSimulator::new(
            controls.clone(),
            SimConfig { failure_rate: 0.5, seed: Some(seed), ..SimConfig::default() },
            default_fx_rates(),
            Duration::from_secs(30),
        );
        for i in 0..30 {
            let _ = fx.quote(&format!("k{i}"), "USD", "EUR", 1).await;
        }
        controls.calls().into_iter().map(|c| c.outcome).collect()
    }
    assert_eq!(outcomes(1).await, outcomes(1).await);
}

#[tokio::test]
async fn timeout_rate_one_hangs_without_effect() {
    let controls = manual_controls();
    let funds = FundsSimulator::new(controls.clone(), failing(0.0, 1.0));
    let request = funds_request(1);
    let call = funds.expect("k", &request);
    assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err(), "must hang");
    let calls = controls.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].outcome.as_str(), calls[0].effect), ("timeout", false));
}

#[tokio::test]
async fn latency_is_applied() {
    let config = SimConfig { latency: Duration::from_millis(60), ..SimConfig::default() };
    let screening = ScreeningSimulator::new(manual_controls(), config, ScreeningRules::default());
    let started = Instant::now();
    screening.screen("k", &screening_request(1, 100)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn outage_switch() {
    let controls = manual_controls();
    let sims = Simulators::with_controls(SimulatorsConfig::default(), controls.clone(), None);
    let down = Err(ConnectorError::Unavailable("simulated outage".into()));
    sims.set_down(true);
    assert_eq!(sims.screening.screen("s", &screening_request(1, 100)).await.map(|_| ()), down);
    assert_eq!(sims.fx.quote("f", "USD", "EUR", 1).await.map(|_| ()), down);
    assert_eq!(sims.payout.send("p", &payout_request(1)).await.map(|_| ()), down);
    assert_eq!(sims.payout.status("p").await.map(|_| ()), down);
    assert_eq!(sims.funds.expect("e", &funds_request(1)).await.map(|_| ()), down);
    assert!(sims.calls().iter().all(|c| c.outcome == "unavailable" && !c.effect));

    sims.set_down(false);
    assert!(sims.payout.send("p", &payout_request(1)).await.is_ok());

    controls.set_connector_down("payout", true).unwrap();
    assert_eq!(sims.payout.send("p2", &payout_request(2)).await.map(|_| ()), down);
    assert!(sims.fx.quote("f", "USD", "EUR", 1).await.is_ok(), "other connectors stay up");
    controls.set_connector_down("payout", false).unwrap();
    assert!(sims.payout.send("p2", &payout_request(2)).await.is_ok());
    assert!(controls.set_connector_down("bank", true).is_err());
    assert_eq!(effects(&sims.calls(), "payout", "send"), 2);
}

fn rules() -> ScreeningRules {
    let usd =
        AssetLimits { review_threshold: Some(1_000_000), daily_limit: Some(500_000), monthly_limit: Some(800_000) };
    ScreeningRules {
        sanctioned_names: vec!["Ivan  Sanctionov".into()],
        high_risk_countries: vec!["KP".into()],
        limits: BTreeMap::from([("USD".to_string(), usd)]),
    }
}

fn reject(reason: &str) -> ScreeningVerdict {
    ScreeningVerdict::Reject { reason: reason.into() }
}

fn review(reason: &str) -> ScreeningVerdict {
    ScreeningVerdict::Review { reason: reason.into() }
}

#[tokio::test]
async fn screening_sanctions_match_ignores_case_and_whitespace() {
    let screening = ScreeningSimulator::new(manual_controls(), SimConfig::default(), rules());
    let sender = ScreeningRequest { sender_name: "  IVAN sanctionov ".into(), ..screening_request(1, 100) };
    assert_eq!(screening.screen("a", &sender).await.unwrap(), reject("sanctions_match"));
    let recipient = ScreeningRequest { recipient_name: "ivan\t\nSANCTIONOV".into(), ..screening_request(1, 100) };
    assert_eq!(screening.screen("b", &recipient).await.unwrap(), reject("sanctions_match"));
    let near_miss = ScreeningRequest { recipient_name: "Ivan Sanctionova".into(), ..screening_request(1, 100) };
    assert_eq!(screening.screen("c", &near_miss).await.unwrap(), ScreeningVerdict::Pass);
}

#[tokio::test]
async fn screening_review_rules() {
    let mut rules = rules();
    rules.limits.get_mut("USD").unwrap().daily_limit = None;
    rules.limits.get_mut("USD").unwrap().monthly_limit = None;
    let screening = ScreeningSimulator::new(manual_controls(), SimConfig::default(), rules);
    assert_eq!(screening.screen("a", &screening_request(1, 999_999)).await.unwrap(), ScreeningVerdict::Pass);
    assert_eq!(screening.screen("b", &screening_request(1, 1_000_000)).await.unwrap(), review("amount_review"));
    let risky = ScreeningRequest { sender_country: "KP".into(), ..screening_request(1, 100) };
    assert_eq!(screening.screen("c", &risky).await.unwrap(), review("high_risk_country"));
    let other_asset = ScreeningRequest { asset: "EUR".into(), ..screening_request(1, 5_000_000) };
    assert_eq!(screening.screen("d", &other_asset).await.unwrap(), ScreeningVerdict::Pass, "EUR has no rules");
}

#[tokio::test]
async fn screening_daily_limit_counts_each_key_once() {
    let controls = manual_controls();
    let screening = ScreeningSimulator::new(controls.clone(), SimConfig::default(), rules());
    for _ in 0..5 {
        assert_eq!(screening.screen("o1", &screening_request(1, 300_000)).await.unwrap(), ScreeningVerdict::Pass);
    }
    assert_eq!(screening.screen("o2", &screening_request(1, 200_000)).await.unwrap(), ScreeningVerdict::Pass);
    assert_eq!(screening.screen("o3", &screening_request(1, 1)).await.unwrap(), reject("daily_limit_exceeded"));
    assert_eq!(screening.screen("o3", &screening_request(1, 1)).await.unwrap(), reject("daily_limit_exceeded"));
    assert_eq!(
        screening.screen("o4", &screening_request(2, 500_000)).await.unwrap(),
        ScreeningVerdict::Pass,
        "per customer"
    );
    assert_eq!(effects(&controls.calls(), "screening", "screen"), 4);

    // Next day: the daily total resets, the monthly one (500,000 of 800,000) does not.
    controls.clock().advance(DAY);
    assert_eq!(screening.screen("o5", &screening_request(1, 300_000)).await.unwrap(), ScreeningVerdict::Pass);
    assert_eq!(screening.screen("o6", &screening_request(1, 1)).await.unwrap(), reject("monthly_limit_exceeded"));

    // 2024-03-01: a new month.
    controls.clock().advance(DAY * 28);
    assert_eq!(screening.screen("o7", &screening_request(1, 500_000)).await.unwrap(), ScreeningVerdict::Pass);
}

#[tokio::test]
async fn funds_auto_pay_notifies_once_per_key() {
    let (tx, mut rx) = mpsc::channel::<FundsNotification>(16);
    let funds =
        FundsSimulator::new(manual_controls(), SimConfig::default()).with_auto_pay(Duration::from_millis(20), tx);
    let first = funds.expect("order-1/funds", &funds_request(1)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(funds.expect("order-1/funds", &funds_request(1)).await.unwrap(), first);
    }
    let second = funds.expect("order-2/funds", &funds_request(2)).await.unwrap();
    assert_ne!(first, second);

    let mut received = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        received.push(n);
    }
    received.sort_by_key(|n| n.order_id);
    assert_eq!(
        received,
        vec![
            FundsNotification { order_id: 1, amount: 25_000, reference: first.reference },
            FundsNotification { order_id: 2, amount: 25_000, reference: second.reference },
        ]
    );
}

#[tokio::test]
async fn simulators_auto_pay_via_config() {
    let (tx, mut rx) = mpsc::channel(4);
    let config = SimulatorsConfig { funds_auto_pay_after: Some(Duration::ZERO), ..SimulatorsConfig::default() };
    let sims = Simulators::new(config, Some(tx));
    sims.funds.expect("k", &funds_request(9)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!((n.order_id, n.amount), (9, 25_000));
}

#[tokio::test]
async fn call_log_file_has_one_line_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.jsonl");
    let controls = manual_controls().with_call_log_file(&path).unwrap();
    let sims = Simulators::with_controls(SimulatorsConfig::default(), controls, None);
    sims.screening.screen("s", &screening_request(1, 100)).await.unwrap();
    sims.fx.quote("f", "USD", "JPY", 100).await.unwrap();
    sims.fx.quote("f", "USD", "JPY", 100).await.unwrap();
    sims.payout.send("p", &payout_request(1)).await.unwrap();
    sims.payout.status("p").await.unwrap();
    sims.funds.expect("e", &funds_request(1)).await.unwrap();
    sims.set_down(true);
    let _ = sims.payout.send("p", &payout_request(1)).await;

    let text = std::fs::read_to_string(&path).unwrap();
    let from_file: Vec<CallRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(from_file, sims.calls());
    let summary: Vec<(&str, &str, &str, bool)> =
        from_file.iter().map(|c| (&*c.connector, &*c.operation, &*c.outcome, c.effect)).collect();
    assert_eq!(
        summary,
        vec![
            ("screening", "screen", "ok", true),
            ("fx", "quote", "ok", true),
            ("fx", "quote", "ok", false),
            ("payout", "send", "ok", true),
            ("payout", "status", "ok", false),
            ("funds", "expect", "ok", true),
            ("payout", "send", "unavailable", false),
        ]
    );
    assert!(from_file.iter().all(|c| c.at_unix_nanos == START_NANOS));
}

#[tokio::test]
async fn in_memory_call_log_is_bounded() {
    let controls = manual_controls().with_call_log_capacity(3);
    let fx = FxSimulator::new(controls.clone(), SimConfig::default(), default_fx_rates(), Duration::from_secs(1));
    for i in 0..5 {
        fx.quote(&format!("k{i}"), "USD", "EUR", 1).await.unwrap();
    }
    let keys: Vec<String> = controls.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["k2", "k3", "k4"]);
}

/// A connector client trusting the public roots only.
fn plain_client() -> reqwest::Client {
    http_client(bursar_tls::client_config(bursar_tls::roots(true, &[]).unwrap(), None).unwrap()).unwrap()
}

fn endpoint(base: &str) -> HttpEndpoint {
    HttpEndpoint::plain(base).unwrap()
}

/// Serves `sims` on an ephemeral port; returns the base URL.
async fn spawn_server(sims: Simulators) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_simulators(sims, listener));
    format!("http://{addr}/")
}

#[tokio::test]
async fn http_round_trip_all_connectors() {
    let sims = Simulators::with_controls(SimulatorsConfig::default(), manual_controls(), None);
    let base = spawn_server(sims.clone()).await;
    let http = Connectors::http(endpoint(&base));

    let verdict = http.screening.screen("s1", &screening_request(1, 100)).await.unwrap();
    assert_eq!(verdict, ScreeningVerdict::Pass);
    let big = screening_request(1, 2_000_000);
    assert_eq!(http.screening.screen("s2", &big).await.unwrap(), review("amount_review"));

    let quote = http.fx.quote("f1", "EUR", "JPY", 1_000_000).await.unwrap();
    assert_eq!(http.fx.quote("f1", "EUR", "JPY", 1_000_000).await.unwrap(), quote, "same key, same quote");
    assert_eq!(quote.rate_ppb, 1_630_434_783);
    let unknown = http.fx.quote("f2", "EUR", "XAU", 1).await.unwrap_err();
    assert_eq!(unknown, ConnectorError::Rejected("no rate for EUR/XAU".into()));

    let sent = http.payout.send("p1", &payout_request(1)).await.unwrap();
    assert!(matches!(sent, PayoutStatus::Confirmed { .. }), "{sent:?}");
    assert_eq!(http.payout.send("p1", &payout_request(1)).await.unwrap(), sent);
    assert_eq!(http.payout.status("p1").await.unwrap(), sent);
    assert_eq!(http.payout.status("nope").await, Err(ConnectorError::Rejected("unknown payout".into())));

    let instructions = http.funds.expect("e1", &funds_request(1)).await.unwrap();
    assert_eq!(http.funds.expect("e1", &funds_request(1)).await.unwrap(), instructions);

    let calls = sims.calls();
    assert_eq!(effects(&calls, "payout", "send"), 1);
    assert_eq!(effects(&calls, "fx", "quote"), 1);
    assert_eq!(effects(&calls, "funds", "expect"), 1);
    assert_eq!(calls.iter().find(|c| c.key == "p1").map(|c| c.operation.as_str()), Some("send"));
}

#[tokio::test]
async fn http_controls_and_outage_mapping() {
    let sims = Simulators::with_controls(SimulatorsConfig::default(), manual_controls(), None);
    let base = spawn_server(sims.clone()).await;
    let http = Connectors::http(endpoint(&base));
    let control = HttpSimControl::new(endpoint(&base));
    let down = Err(ConnectorError::Unavailable("simulated outage".into()));

    control.set_down(true).await.unwrap();
    assert_eq!(http.screening.screen("s", &screening_request(1, 1)).await.map(|_| ()), down);
    assert_eq!(http.fx.quote("f", "USD", "EUR", 1).await.map(|_| ()), down);
    assert_eq!(http.payout.send("p", &payout_request(1)).await.map(|_| ()), down);
    assert_eq!(http.payout.status("p").await.map(|_| ()), down);
    assert_eq!(http.funds.expect("e", &funds_request(1)).await.map(|_| ()), down);
    control.set_down(false).await.unwrap();
    assert!(http.payout.send("p", &payout_request(1)).await.is_ok());

    control.set_connector_down("fx", true).await.unwrap();
    assert_eq!(http.fx.quote("f", "USD", "EUR", 1).await.map(|_| ()), down);
    assert!(http.funds.expect("e", &funds_request(1)).await.is_ok());
    let bad = control.set_connector_down("bank", true).await.unwrap_err();
    assert!(matches!(&bad, ConnectorError::Rejected(m) if m.contains("unknown connector")), "{bad:?}");

    let remote = control.calls().await.unwrap();
    assert_eq!(remote, sims.calls());
    assert_eq!(remote.len(), 8);
    assert_eq!(remote.iter().filter(|c| c.outcome == "unavailable").count(), 6);
}

#[tokio::test]
async fn http_transport_errors() {
    // Nothing listens: connection refused is Unavailable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let fx = HttpFxRates::new(endpoint(&format!("http://{addr}")));
    let err = fx.quote("k", "USD", "EUR", 1).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unavailable(_)), "{err:?}");

    // A simulated hang is a client Timeout.
    let config = SimulatorsConfig { fx: failing(0.0, 1.0), ..SimulatorsConfig::default() };
    let base = spawn_server(Simulators::with_controls(config, manual_controls(), None)).await;
    let tls = bursar_tls::client_config(bursar_tls::roots(true, &[]).unwrap(), None).unwrap();
    let quick = reqwest::Client::builder().tls_backend_preconfigured(tls).timeout(Duration::from_millis(200)).build();
    let fx = HttpFxRates::new(HttpEndpoint::new(&base, quick.unwrap(), ConnectorAuth::default()).unwrap());
    assert_eq!(fx.quote("k", "USD", "EUR", 1).await, Err(ConnectorError::Timeout));
}

#[tokio::test]
async fn http_undecodable_response_is_malformed() {
    let router = axum::Router::new().route("/fx/quote", axum::routing::post(|| async { "this is not json" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let fx = HttpFxRates::new(endpoint(&format!("http://{addr}")));
    let err = fx.quote("k", "USD", "EUR", 1).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Malformed(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn http_server_rejects_bad_requests() {
    let base = spawn_server(Simulators::with_controls(SimulatorsConfig::default(), manual_controls(), None)).await;
    let client = plain_client();
    let body = serde_json::json!({"source_asset": "USD", "target_asset": "EUR", "source_amount": "1"});
    let missing_key = client.post(format!("{base}fx/quote")).json(&body).send().await.unwrap();
    assert_eq!(missing_key.status(), 400);
    let text = missing_key.text().await.unwrap();
    assert!(text.contains("Idempotency-Key"), "{text}");

    let numeric_amount = serde_json::json!({"source_asset": "USD", "target_asset": "EUR", "source_amount": 1});
    let response = client
        .post(format!("{base}fx/quote"))
        .header("Idempotency-Key", "k")
        .json(&numeric_amount)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "amounts must be decimal strings");

    let ok = client.post(format!("{base}fx/quote")).header("Idempotency-Key", "k").json(&body).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let json: serde_json::Value = ok.json().await.unwrap();
    assert!(json["quote_id"].is_string() && json["rate_ppb"] == "920000000", "{json}");
    assert_eq!((&json["idempotency_key"], &json["source_amount"]), (&serde_json::json!("k"), &serde_json::json!("1")));
}

#[tokio::test]
async fn connectors_are_object_safe_and_shareable() {
    let sims = Simulators::default();
    let connectors: Connectors = sims.connectors();
    let screening: Arc<dyn Screening> = connectors.screening.clone();
    let handle = tokio::spawn(async move { screening.screen("k", &screening_request(1, 1)).await });
    assert_eq!(handle.await.unwrap().unwrap(), ScreeningVerdict::Pass);
    let _: &dyn FxRates = &*connectors.fx;
    let _: &dyn PayoutRail = &*connectors.payout;
    let _: &dyn IncomingFunds = &*connectors.funds;
}
