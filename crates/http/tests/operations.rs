//! Operational endpoints: health, readiness, the request id header, and
//! Prometheus metrics that reflect real traffic.

mod common;

use common::{ADMIN_KEY, Req, TestNode};
use reqwest::Method;

#[test]
fn health_readiness_and_request_ids() {
    let node = TestNode::start();
    let c = &node.client;
    let r = c.send(Req::new(Method::GET, "/healthz"));
    r.expect(200, None);
    assert_eq!(r.json()["status"], "ok");
    c.send(Req::new(Method::GET, "/readyz")).expect(200, None);
    let r = c.send(Req::new(Method::GET, "/healthz").header("x-request-id", b"trace-42"));
    assert_eq!(r.header("x-request-id"), Some("trace-42"), "a valid client id is echoed");
    let r = c.send(Req::new(Method::GET, "/healthz").header("x-request-id", b"bad id with spaces"));
    let id = r.header("x-request-id").unwrap();
    assert!(!id.is_empty() && !id.contains(' '), "an invalid id is replaced: {id}");
}

#[test]
fn metrics_count_requests_idempotency_and_the_engine() {
    let node = TestNode::start();
    let c = &node.client;
    c.create_ledger(1);
    let (_, op) = c.create_key("operator", &[]);
    c.create_account(&op, 1, 1, &[]);
    c.create_account(&op, 2, 1, &[]);
    let body = serde_json::json!({"id": "7", "debit_account_id": "1", "credit_account_id": "2", "amount": "5", "ledger": 1, "code": 1});
    c.post(&op, "m-1", "/v1/transfers", &body).expect(201, None);
    c.post(&op, "m-1", "/v1/transfers", &body).expect(201, None);
    c.get(ADMIN_KEY, "/v1/accounts/1").expect(200, None);
    let r = c.send(Req::new(Method::GET, "/metrics"));
    r.expect(200, None);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = &r.body;
    for needle in [
        r#"bursar_http_requests_total{route="/v1/transfers",method="POST",status="201"}"#,
        r#"bursar_http_requests_total{route="/v1/accounts/{id}",method="GET",status="200"}"#,
        "bursar_http_request_duration_seconds_bucket",
        r#"bursar_idempotency_total{outcome="replayed"}"#,
        r#"bursar_idempotency_total{outcome="executed"}"#,
        "bursar_log_fsync_seconds_bucket",
        "bursar_log_append_seconds_bucket",
        "bursar_engine_entry_requests_size_bucket",
        "bursar_engine_queue_depth",
        r#"bursar_state_memory_bytes{structure="transfers"}"#,
        r#"bursar_state_memory_bytes{structure="transfer_index"}"#,
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    let replayed: f64 = text
        .lines()
        .find(|l| l.starts_with(r#"bursar_idempotency_total{outcome="replayed"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(replayed >= 1.0, "the replay was counted");
}

/// The router serves every route of the table, with its method: none falls
/// through to "no such route" or "method not allowed".
#[test]
fn every_route_of_the_table_is_served() {
    use bursar_http::paths;
    let node = TestNode::start();
    for route in paths::ALL {
        let method = match route.method {
            paths::Method::Get => Method::GET,
            paths::Method::Post => Method::POST,
            paths::Method::Delete => Method::DELETE,
        };
        let r = node.client.send(Req::new(method, route.path.replace("{id}", "1")));
        assert_ne!(r.status, 405, "{}: {}", route.name, r.body);
        if r.status == 404 {
            assert_ne!(r.json()["detail"], "no such route", "{}", route.name);
        }
    }
}
