//! The connectors' trust boundary over real HTTP: credentials the simulator
//! server checks (bearer token, HMAC signatures), HTTPS with a private CA and
//! mutual TLS, and answers that must fit the request asked
//! (docs/connectors.md, docs/security/edge-tls.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bursar_workflow::connectors::{
    ConnectorAuth, ConnectorError, Connectors, FxRates, HttpConnectorsConfig, HttpEndpoint, HttpFxRates, PayoutRequest,
    PayoutStatus, SimClock, SimControls, SimServerOptions, Simulators, SimulatorsConfig, serve_simulators_with,
};

const TOKEN: &str = "connector-token-0123456789";
const HMAC_KEY: [u8; 32] = [42; 32];

fn sims() -> Simulators {
    Simulators::with_controls(SimulatorsConfig::default(), SimControls::new(SimClock::manual(1 << 60)), None)
}

/// Serves `sims` with `options` on an ephemeral port; returns the port.
async fn serve(sims: Simulators, options: SimServerOptions) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_simulators_with(sims, listener, options));
    port
}

fn endpoint(base: String, auth: ConnectorAuth) -> HttpEndpoint {
    HttpConnectorsConfig { base_url: base, auth, ..Default::default() }.endpoint().unwrap()
}

fn token(t: &str) -> ConnectorAuth {
    ConnectorAuth::default().with_token(t).unwrap()
}

fn payout() -> PayoutRequest {
    PayoutRequest {
        order_id: 9,
        asset: "EUR".into(),
        amount: 500,
        recipient_name: "R".into(),
        bank_account: "DE1".into(),
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_before_any_effect() {
    let (sims, auth) = (sims(), token(TOKEN).with_hmac_key(&HMAC_KEY).unwrap());
    let options = SimServerOptions { auth: auth.clone(), ..Default::default() };
    let refused = options.refused.clone();
    let base = format!("http://127.0.0.1:{}", serve(sims.clone(), options).await);

    let wrong_key = token(TOKEN).with_hmac_key(&[1; 32]).unwrap();
    for (who, credentials, why) in [
        ("none", ConnectorAuth::default(), "missing bearer token"),
        ("wrong token", token("another-token-0123456789").with_hmac_key(&HMAC_KEY).unwrap(), "wrong bearer token"),
        ("token only", token(TOKEN), "missing Bursar-Timestamp"),
        ("wrong key", wrong_key, "does not match"),
    ] {
        let rail = Connectors::http(endpoint(base.clone(), credentials)).payout;
        let err = rail.send("p1", &payout()).await.expect_err(who);
        assert!(matches!(&err, ConnectorError::Unauthorized(m) if m.contains(why)), "{who}: {err:?}");
        assert!(err.is_retryable(), "a credential problem defers the order, it does not fail it");
    }
    assert_eq!(refused.load(Ordering::Relaxed), 4);
    assert!(sims.calls().is_empty(), "no simulator saw a refused request");

    // The token and a valid signature: served, once.
    let rail = Connectors::http(endpoint(base.clone(), auth.clone())).payout;
    let sent = rail.send("p1", &payout()).await.unwrap();
    assert!(matches!(sent, PayoutStatus::Confirmed { .. }), "{sent:?}");
    assert_eq!(rail.status("p1").await.unwrap(), sent, "a signed GET verifies too");
    assert_eq!(sims.calls().len(), 2);

    // Signatures alone (no token) are a complete scheme as well.
    let hmac_only = ConnectorAuth::default().with_hmac_key(&HMAC_KEY).unwrap();
    let base = format!(
        "http://127.0.0.1:{}",
        serve(sims.clone(), SimServerOptions { auth: hmac_only.clone(), ..Default::default() }).await
    );
    let fx = HttpFxRates::new(endpoint(base, hmac_only));
    assert_eq!(fx.quote("q1", "USD", "EUR", 100).await.unwrap().rate_ppb, 920_000_000);
}

/// A CA, and a certificate it issued for `name` (server or client).
struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca: PathBuf,
    issued: std::cell::Cell<u32>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "bank test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.pem", &cert.pem());
        Pki { dir, issuer: rcgen::Issuer::new(params, key), ca, issued: Default::default() }
    }

    /// PEM files of a certificate for `name` and its key.
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.into()]).unwrap().signed_by(&key, &self.issuer).unwrap();
        let id = self.issued.replace(self.issued.get() + 1);
        (
            write(self.dir.path(), &format!("{name}-{id}-cert.pem"), &cert.pem()),
            write(self.dir.path(), &format!("{name}-{id}-key.pem"), &key.serialize_pem()),
        )
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn server_tls(pki: &Pki, client_ca: Option<&Path>) -> Arc<bursar_tls::rustls::ServerConfig> {
    let (cert, key) = pki.issue("localhost");
    let identity = bursar_tls::Identity::load(&cert, &key, "server").unwrap();
    let client_roots =
        client_ca.map(|ca| bursar_tls::roots(false, &bursar_tls::read_certs(ca, "ca").unwrap()).unwrap());
    Arc::new(bursar_tls::server_config(identity, client_roots).unwrap())
}

#[tokio::test]
async fn https_with_a_private_ca_and_mutual_tls() {
    let pki = Pki::new();
    let tls = SimServerOptions { tls: Some(server_tls(&pki, None)), ..Default::default() };
    let base = format!("https://localhost:{}", serve(sims(), tls).await);

    let trusted = HttpConnectorsConfig { base_url: base.clone(), ca_file: Some(pki.ca.clone()), ..Default::default() };
    let fx = HttpFxRates::new(trusted.endpoint().unwrap());
    assert!(fx.quote("q1", "USD", "EUR", 100).await.is_ok());

    // Public roots only: the private CA is unknown, and the error says so.
    let fx = HttpFxRates::new(HttpConnectorsConfig::new(&base).endpoint().unwrap());
    let err = fx.quote("q1", "USD", "EUR", 100).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Unavailable(m) if m.contains("UnknownIssuer")), "{err:?}");

    // A server that demands a client certificate from the same CA.
    let mtls = SimServerOptions { tls: Some(server_tls(&pki, Some(&pki.ca))), ..Default::default() };
    let base = format!("https://localhost:{}", serve(sims(), mtls).await);
    let without = HttpConnectorsConfig { base_url: base.clone(), ca_file: Some(pki.ca.clone()), ..Default::default() };
    let err = HttpFxRates::new(without.endpoint().unwrap()).quote("q1", "USD", "EUR", 1).await.unwrap_err();
    assert!(matches!(&err, ConnectorError::Unavailable(_)), "{err:?}");
    let with = HttpConnectorsConfig { client_identity: Some(pki.issue("bursar-node")), ..without };
    assert!(HttpFxRates::new(with.endpoint().unwrap()).quote("q1", "USD", "EUR", 1).await.is_ok());

    // Bad TLS files stop the start with the option's name.
    let missing =
        HttpConnectorsConfig { base_url: base, ca_file: Some("/nonexistent.pem".into()), ..Default::default() };
    assert!(missing.endpoint().unwrap_err().to_string().contains("--connectors-ca-file"));
}

/// A connector that answers every `POST /payouts/send` with `body`.
async fn fake_rail(body: String) -> HttpEndpoint {
    let router = axum::Router::new().route(
        "/payouts/send",
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    HttpEndpoint::plain(&format!("http://{addr}")).unwrap()
}

#[tokio::test]
async fn answers_that_do_not_fit_the_request_are_malformed() {
    let answer = |key: &str, order: &str, amount: &str| {
        serde_json::json!({"idempotency_key": key, "order_id": order, "asset": "EUR", "amount": amount,
                           "status": "confirmed", "reference": "PO-1"})
        .to_string()
    };
    let rail = Connectors::http(fake_rail(answer("p1", "9", "500")).await).payout;
    assert!(rail.send("p1", &payout()).await.is_ok(), "the fitting answer is accepted");
    for (what, body) in [
        ("another key", answer("p2", "9", "500")),
        ("another order", answer("p1", "10", "500")),
        ("another amount", answer("p1", "9", "5000")),
        ("no echo at all", r#"{"status":"confirmed","reference":"PO-1"}"#.to_string()),
        ("not JSON", "<html>confirmed</html>".to_string()),
        ("oversized", format!("{{\"pad\":\"{}\"}}", "x".repeat(bursar_workflow::connectors::RESPONSE_BYTES_MAX))),
    ] {
        let rail = Connectors::http(fake_rail(body).await).payout;
        let err = rail.send("p1", &payout()).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Malformed(_)), "{what}: {err:?}");
        assert!(err.is_retryable(), "{what}: retried or deferred, never applied");
    }
}
